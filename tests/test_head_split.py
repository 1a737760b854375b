"""The LM head applied only where it is used gives the same numbers as the whole-sequence forward.

Each family's forward is split into hidden states and head (models/heads.py). The sampler, the
training micro-step and SFT gather positions before the head; here each is compared with the
same computation on the model run whole (its logits standing in for hidden states), and the
sampler is checked never to ask for the (B, L, V) logits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.methods.logp import completion_token_logp, microstep_logp
from dllmrl.models import load_model
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.keepers import TopEntropySteps
from dllmrl.sampling.sampler import sample

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", params=["modernbert", "llada", "dream"])
def adapter(request, tiny_model_dir):
    src = {"modernbert": tiny_model_dir, "llada": FIXTURES / "llada-tiny", "dream": FIXTURES / "dream-tiny"}[request.param]
    return load_model(ModelConfig(model=str(src), device="cpu", dtype="float32"))


def whole(adapter: ModelAdapter) -> ModelAdapter:
    """The same model with no known split: hidden states are the full logits, the head is the identity."""
    return dataclasses.replace(adapter, family="run-whole")


class NoFullLogits(ModelAdapter):
    """Refuses the (B, L, V) path and records how many rows the head gets at a time."""

    rows_seen: list[int]

    def logits(self, input_ids, attention_mask=None):
        raise AssertionError("the (B, L, V) logits were asked for")

    def head(self, hidden):
        self.rows_seen.append(hidden.shape[0])
        return super().head(hidden)


def padded_batch(adapter: ModelAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(20, 90, (3, 7), generator=g)
    attn = torch.ones_like(ids)
    attn[0, :3] = 0
    attn[2, :1] = 0
    return ids, attn


def test_head_of_gathered_hidden_states_equals_logits_there(adapter):
    ids, attn = padded_batch(adapter)
    full = adapter.logits(ids, attn)
    h = adapter.hidden(ids, attn)
    for rows, cols in [([0], [5]), ([0, 2], [3, 6]), ([0, 1, 1, 2, 2], [4, 0, 6, 2, 3])]:  # 1, 2 and 5 rows
        r, c = torch.tensor(rows), torch.tensor(cols)
        assert torch.equal(adapter.head(h[r, c]), full[r, c])


CONFIGS = [
    SamplerConfig(gen_len=16, steps=8, block_len=8),
    SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=0.9),
    SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=0.9, cfg_scale=1.5),
    SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=0.9, remasking="random", decode="threshold", threshold=0.2),
]


@pytest.mark.parametrize("scfg", CONFIGS, ids=["t0", "t0.9", "cfg", "random-threshold"])
def test_sampler_trajectory_equals_the_whole_logits_path(adapter, scfg):
    ids, attn = padded_batch(adapter)
    runs = [sample(a, ids, attn, scfg, generator=torch.Generator().manual_seed(0), greedy_at=TopEntropySteps(3))
            for a in (adapter, whole(adapter))]
    for name in ("tokens", "unmask_step", "step_logp", "step_entropy", "step_count", "greedy_steps", "greedy_tokens"):
        assert torch.equal(getattr(runs[0], name), getattr(runs[1], name)), name


def test_sampler_never_builds_the_full_logits_and_heads_only_the_masked_block(adapter):
    ids, attn = padded_batch(adapter)
    spy = NoFullLogits(**{f.name: getattr(adapter, f.name) for f in dataclasses.fields(adapter)})
    spy.rows_seen = []
    scfg = SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=0.9)
    sample(spy, ids, attn, scfg, generator=torch.Generator().manual_seed(0))
    # no greedy kept: the head sees at most the current block of every row (3 x 8)
    assert spy.rows_seen and max(spy.rows_seen) <= 3 * 8


def test_microstep_logp_and_its_gradients_equal_the_whole_path(adapter):
    ids, attn = padded_batch(adapter)
    traj = sample(adapter, ids, attn, SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=1.0),
                  generator=torch.Generator().manual_seed(1))
    steps = torch.tensor([0, 3, -1])
    outs, grads = [], []
    for a in (adapter, whole(adapter)):
        a.model.zero_grad(set_to_none=True)
        out = microstep_logp(a, traj, steps, full=True)
        out.logp.sum().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in a.model.parameters() if p.grad is not None])
    adapter.model.zero_grad(set_to_none=True)
    assert torch.equal(outs[0].logp, outs[1].logp) and torch.equal(outs[0].logprobs, outs[1].logprobs)
    assert outs[0].count.tolist() == outs[1].count.tolist() and outs[0].count[2] == 0
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_completion_logp_equals_the_whole_path(adapter):
    ids, attn = padded_batch(adapter)
    traj = sample(adapter, ids, attn, SamplerConfig(gen_len=8, steps=4, block_len=8))
    drop = torch.zeros_like(traj.tokens, dtype=torch.bool)
    drop[:, -9] = True
    with torch.no_grad():
        a, fa = completion_token_logp(adapter, traj, drop, cfg_scale=0.5, full=True)
        b, fb = completion_token_logp(whole(adapter), traj, drop, cfg_scale=0.5, full=True)
    assert torch.equal(a, b) and torch.equal(fa, fb)


def test_sft_forward_equals_sft_loss_on_the_full_logits(adapter):
    from dllmrl.training.sft import SftBatch, draw_t, mask_completion, sft_forward, sft_loss

    ids, attn = padded_batch(adapter)
    batch = SftBatch(input_ids=ids, attention_mask=attn, prompt_len=4)
    comp = batch.completion_mask
    got = sft_forward(adapter, batch, 0.1, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = draw_t(3, 0.1, g, device=ids.device)
    noisy, masked = mask_completion(ids, comp, t, adapter.mask_id, g)
    want = sft_loss(adapter.logits(noisy, attn), ids, masked, t, comp.sum(1))
    assert int(got.masked) == int(want.masked) > 0
    assert torch.allclose(got.loss, want.loss, atol=1e-6, rtol=1e-6) and torch.equal(got.acc, want.acc)


def _tiny_transformers_adapter(family: str) -> ModelAdapter:
    from transformers import BertConfig, BertForMaskedLM, Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    if family == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32, max_position_embeddings=64))
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, max_position_embeddings=64, use_bidirectional_attention=True,
            final_logit_softcapping=5.0, layer_types=["full_attention"] * 2, sliding_window=16))
    return ModelAdapter(model=model.eval(), tokenizer=None, mask_id=3, family=family)


@pytest.mark.parametrize("family", ["bert", "gemma3_text"])
def test_transformers_families_split_into_the_same_logits(family):
    a = _tiny_transformers_adapter(family)
    ids = torch.randint(5, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[0, :3] = 0
    with torch.no_grad():
        full, h = a.logits(ids, attn), a.hidden(ids, attn)
    assert h.shape[-1] == 16  # really the hidden states, not the logits
    r, c = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([4, 8, 0, 5, 6])
    assert torch.allclose(a.head(h[r, c]), full[r, c], atol=1e-6)
