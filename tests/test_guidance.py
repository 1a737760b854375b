"""Reward guidance (EntRGi and baselines): the mixing maths, and its contract with the sampler."""

from __future__ import annotations

import math

import pytest
import torch

from dllmrl.config import SamplerConfig
from dllmrl.errors import ConfigError
from dllmrl.sampling.guidance import (
    GuidanceConfig, RewardModel, check_vocabularies, guided_embeddings, guided_sample, mix_weight,
)
from dllmrl.sampling.sampler import sample


def test_entrgi_weight_is_zero_for_one_hot_and_one_for_uniform():
    one_hot = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    uniform = torch.full((1, 4), 0.25)
    assert mix_weight(one_hot, "entrgi").item() == 0.0
    assert mix_weight(uniform, "entrgi").item() == pytest.approx(1.0)
    # two equally likely tokens out of four: H = log 2, w = log 2 / log 4 = 1/2
    assert mix_weight(torch.tensor([[0.5, 0.5, 0.0, 0.0]]), "entrgi").item() == pytest.approx(0.5)
    assert mix_weight(uniform, "expectation").item() == 0.0 and mix_weight(one_hot, "aps").item() == 1.0


def test_e_hat_value_is_the_mix_and_its_gradient_is_the_soft_embeddings():
    torch.manual_seed(0)
    table = torch.randn(5, 3)  # V=5, H=3
    phi = torch.randn(1, 2, 5, requires_grad=True)  # B=1, G=2
    tokens = torch.tensor([[0, 0]])
    masked = torch.tensor([[True, True]])
    c = torch.randn(3)  # toy linear reward R(e) = sum_l e_l . c
    g = torch.Generator().manual_seed(1)
    e_hat = guided_embeddings(phi, tokens, masked, table, "entrgi", g)
    # forward value = (1 - w) soft + w hard, with the same Gumbel draw
    q = torch.softmax(phi.detach(), -1)
    soft = q @ table
    u = torch.rand(q.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sampled = (torch.log(q.double()) - torch.log(-torch.log(u))).argmax(-1)
    w = mix_weight(q, "entrgi").unsqueeze(-1)
    assert torch.allclose(e_hat, (1 - w) * soft + w * table[sampled], atol=1e-6)
    # gradient = gradient of the soft embedding alone
    (grad_hat,) = torch.autograd.grad((e_hat @ c).sum(), phi)
    phi2 = phi.detach().clone().requires_grad_(True)
    (grad_soft,) = torch.autograd.grad(((torch.softmax(phi2, -1) @ table) @ c).sum(), phi2)
    assert torch.allclose(grad_hat, grad_soft, atol=1e-6)


def test_committed_positions_feed_their_real_embedding():
    table = torch.randn(5, 3)
    phi = torch.randn(1, 2, 5)
    e = guided_embeddings(phi, torch.tensor([[4, 2]]), torch.tensor([[False, True]]), table, "aps", None)
    assert torch.equal(e[0, 0], table[4])


@pytest.fixture(scope="module")
def reward(tiny_model_dir):
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    conf = ModernBertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, num_labels=1, layer_types=["full_attention"],
                            pad_token_id=tok.pad_token_id, max_position_embeddings=256)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return RewardModel(ModernBertForSequenceClassification(conf), tok)


@pytest.mark.parametrize("method", ["expectation", "aps", "entrgi"])
def test_zero_step_size_reproduces_unguided_sampling(tiny, reward, method):
    ids, attn = tiny.encode([tiny.render_prompt(t) for t in ("a", "longer prompt")])
    scfg = SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=0.8)
    plain = sample(tiny, ids, attn, scfg, generator=torch.Generator().manual_seed(0))
    gcfg = GuidanceConfig(guidance=method, reward_model="x", guidance_steps=2, guidance_lr=0.0)
    guided = guided_sample(tiny, ids, attn, scfg, gcfg, reward, generator=torch.Generator().manual_seed(0),
                           guidance_generator=torch.Generator().manual_seed(9))
    assert torch.equal(plain.tokens, guided.tokens)
    assert reward.calls > 0


class CountReward(torch.nn.Module):
    """Toy reward model: one-hot embeddings, reward = how many positions hold token ``target``."""

    def __init__(self, vocab: int, target: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, vocab)
        self.emb.weight.data = torch.eye(vocab)
        self.target = target

    def get_input_embeddings(self):
        return self.emb

    def forward(self, inputs_embeds, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=(inputs_embeds[..., self.target] * attention_mask).sum(1, keepdim=True))


@pytest.mark.parametrize("method", ["expectation", "aps", "entrgi"])
def test_guidance_moves_tokens_toward_the_reward(tiny, method):
    target = tiny.tokenizer.convert_tokens_to_ids("Q")
    rm = RewardModel(CountReward(tiny.vocab_size, target))
    ids, attn = tiny.encode([tiny.render_prompt("g")])
    scfg = SamplerConfig(gen_len=16, steps=8, block_len=16)
    plain = sample(tiny, ids, attn, scfg)
    gcfg = GuidanceConfig(guidance=method, reward_model="x", guidance_steps=2, guidance_lr=200.0)
    guided = guided_sample(tiny, ids, attn, scfg, gcfg, rm, guidance_generator=torch.Generator().manual_seed(0))
    r_plain = rm.score_ids(plain.tokens, plain.attention_mask).item()
    r_guided = rm.score_ids(guided.tokens, guided.attention_mask).item()
    assert r_guided > r_plain


def test_best_of_n_makes_exactly_n_reward_calls_per_prompt(tiny, reward):
    ids, attn = tiny.encode([tiny.render_prompt(t) for t in ("p", "q")])
    scfg = SamplerConfig(gen_len=8, steps=4, block_len=8, temperature=1.0)
    reward.calls = 0
    gcfg = GuidanceConfig(guidance="best-of-n", reward_model="x", best_of_n=5)
    traj = guided_sample(tiny, ids, attn, scfg, gcfg, reward, generator=torch.Generator().manual_seed(0))
    assert reward.calls == 5 * 2
    # the kept completion is the best-scoring one
    assert traj.tokens.shape == (2, ids.shape[1] + 8)
    # default budget: the reward calls a guided run makes (steps x guidance steps)
    assert GuidanceConfig(guidance="best-of-n", reward_model="x", guidance_steps=2).candidates(scfg) == 8


def test_vocabulary_mismatch_is_a_clear_error(tiny):
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    conf = ModernBertConfig(vocab_size=tiny.vocab_size + 7, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, num_labels=1, layer_types=["full_attention"], pad_token_id=0)
    with pytest.raises(ConfigError, match="share the diffusion model's vocabulary"):
        check_vocabularies(tiny, RewardModel(ModernBertForSequenceClassification(conf)))


def test_guidance_config_errors():
    with pytest.raises(ConfigError, match="--reward-model"):
        GuidanceConfig(guidance="entrgi")
    with pytest.raises(ConfigError, match="--guidance must be one of"):
        GuidanceConfig(guidance="magic", reward_model="x")
    assert math.isclose(GuidanceConfig().guidance_lr, 1.0)


def _save_reward_model(path, vocab_size, tokenizer=None):
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    conf = ModernBertConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, num_labels=1, layer_types=["full_attention"], pad_token_id=0,
                            max_position_embeddings=256)
    ModernBertForSequenceClassification(conf).save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return str(path)


def test_sample_cli_with_guidance_and_a_mismatched_reward_model(tiny, tiny_model_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from dllmrl.cli import app

    good = _save_reward_model(tmp_path / "rm", tiny.vocab_size, tiny.tokenizer)
    base = ["sample", "x", "--model", tiny_model_dir, "--gen-len", "8", "--steps", "4", "--block-len", "8"]
    r = CliRunner().invoke(app, base + ["--guidance", "entrgi", "--reward-model", good, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["config"]["guidance"] == "entrgi"
    bad = _save_reward_model(tmp_path / "rm-bad", tiny.vocab_size + 3)
    r = CliRunner().invoke(app, base + ["--guidance", "aps", "--reward-model", bad])
    assert r.exit_code == 1 and "share the diffusion model's vocabulary" in r.output


def test_eval_with_guidance_records_reward_calls_and_keeps_runs_apart(tiny, tiny_model_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from dllmrl.cli import app

    rm = _save_reward_model(tmp_path / "rm", tiny.vocab_size, tiny.tokenizer)
    out = tmp_path / "ev"
    base = ["eval", "sudoku", "--model", tiny_model_dir, "--prompt-style", "compact", "--limit", "4",
            "--gen-len", "16", "--steps", "4", "--block-len", "16", "--batch-size", "4", "--out", str(out)]
    r = CliRunner().invoke(app, base + ["--guidance", "entrgi", "--reward-model", rm, "--guidance-steps", "2"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(x["reward_calls"] == 4 * 2 for x in recs)  # 4 steps x 2 guidance steps
    assert recs[0]["settings"]["guidance"] == "entrgi"
    assert recs[0]["settings"]["seed"] == 0  # entrgi draws hard tokens even at temperature 0: the seed matters
    # another seed is another run, not a resume of this one
    r = CliRunner().invoke(app, base + ["--guidance", "entrgi", "--reward-model", rm, "--guidance-steps", "2",
                                        "--seed", "1"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 8 and all(x["settings"]["seed"] == 1 for x in recs[4:])
    # best-of-n at the same budget: 8 candidates per prompt, new records (different settings)
    r = CliRunner().invoke(app, base + ["--guidance", "best-of-n", "--reward-model", rm, "--guidance-steps", "2",
                                        "--temperature", "1.0"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 12 and all(x["reward_calls"] == 8 for x in recs[8:])
