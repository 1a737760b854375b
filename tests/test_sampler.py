"""The sampler against a plain reference loop, and the trajectory record."""

from __future__ import annotations

import pytest
import torch

from dllmrl.config import SamplerConfig
from dllmrl.errors import ConfigError
from dllmrl.sampling.keepers import FixedSteps, TopEntropySteps, last_non_eos_step, top_k_entropy_steps
from dllmrl.sampling.sampler import sample, transfer_schedule


@torch.no_grad()
def reference_generate(model, prompt: list[int], gen_len: int, steps: int, block_len: int) -> list[int]:
    """LLaDA's generate at temperature 0, one sequence, written as plainly as possible."""
    x = list(prompt) + [model.mask_id] * gen_len
    P = len(prompt)
    spb = steps // (gen_len // block_len)
    for b in range(gen_len // block_len):
        lo, hi = P + b * block_len, P + (b + 1) * block_len
        n = sum(1 for i in range(lo, hi) if x[i] == model.mask_id)
        counts = [n // spb + (1 if s < n % spb else 0) for s in range(spb)]
        for s in range(spb):
            logits = model.logits(torch.tensor([x]))[0].double()
            logits[:, model.mask_id] = float("-inf")
            probs = torch.softmax(logits, -1)
            cands = []
            for i in range(lo, hi):
                if x[i] == model.mask_id:
                    tok = int(torch.argmax(logits[i]))
                    cands.append((float(probs[i, tok]), i, tok))
            cands.sort(key=lambda c: -c[0])
            for _p, i, tok in cands[: counts[s]]:
                x[i] = tok
    return x[P:]


def _prompts(tiny, texts):
    return tiny.encode([tiny.render_prompt(t) for t in texts])


@pytest.mark.parametrize(
    "gen_len,steps,block_len",
    [
        (16, 16, 16),  # one block, one token per step
        (16, 5, 16),  # one block, uneven counts (4,3,3,3,3)
        (24, 6, 8),  # three blocks, two steps each
        (32, 8, 8),  # four blocks, steps smaller than gen_len
    ],
)
def test_matches_reference_loop_at_temperature_zero(tiny, gen_len, steps, block_len):
    ids, attn = _prompts(tiny, ["abc"])
    traj = sample(tiny, ids, attn, SamplerConfig(gen_len=gen_len, steps=steps, block_len=block_len))
    want = reference_generate(tiny, ids[0].tolist(), gen_len, steps, block_len)
    assert traj.completion_ids[0].tolist() == want
    assert traj.nfe == steps


def test_transfer_schedule_is_llada_rule():
    # 10 masked over 4 steps: 10 // 4 = 2, remainder 2 -> first two steps get one more
    assert transfer_schedule(torch.tensor([10, 3]), 4).tolist() == [[3, 3, 2, 2], [1, 1, 1, 0]]


def test_every_position_revealed_once_with_schedule_counts(tiny):
    ids, attn = _prompts(tiny, ["x", "hello"])
    cfg = SamplerConfig(gen_len=16, steps=6, block_len=8, temperature=0.7)
    traj = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(0))
    gen_steps = traj.unmask_step[:, traj.prompt_len:]
    assert (gen_steps >= 0).all() and (traj.completion_ids != tiny.mask_id).all()
    # block 0 uses steps 0..2 for 8 tokens -> 3,3,2; block 1 steps 3..5
    assert traj.step_count.tolist() == [[3, 3, 2, 3, 3, 2]] * 2
    # block order: every position of block 1 is revealed after every position of block 0
    assert gen_steps[:, :8].max() < gen_steps[:, 8:].min()
    assert (traj.unmask_step[:, : traj.prompt_len] == -1).all()


def test_same_seed_same_trajectory_different_seed_differs(tiny):
    ids, attn = _prompts(tiny, ["seeded", "two"])
    cfg = SamplerConfig(gen_len=16, steps=8, block_len=16, temperature=1.0)
    a = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(1))
    b = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(1))
    c = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.unmask_step, b.unmask_step)
    assert torch.equal(a.step_entropy, b.step_entropy)
    assert not torch.equal(a.tokens, c.tokens)


def test_random_remasking_is_seeded(tiny):
    ids, attn = _prompts(tiny, ["r"])
    cfg = SamplerConfig(gen_len=16, steps=8, block_len=16, remasking="random")
    a = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(3))
    b = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(a.unmask_step, b.unmask_step)


def test_prompt_alone_equals_prompt_in_left_padded_batch(tiny):
    cfg = SamplerConfig(gen_len=16, steps=8, block_len=8)
    ids, attn = _prompts(tiny, ["hi"])
    alone = sample(tiny, ids, attn, cfg).completion_ids[0]
    ids2, attn2 = _prompts(tiny, ["a much longer prompt than the first", "hi"])
    assert attn2[1].sum() < attn2.shape[1]  # "hi" really is padded
    batched = sample(tiny, ids2, attn2, cfg).completion_ids[1]
    assert alone.tolist() == batched.tolist()


def test_state_before_reproduces_the_states_the_sampler_saw(tiny):
    ids, attn = _prompts(tiny, ["state", "b"])
    seen = []
    cfg = SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=0.5)
    traj = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(0),
                  on_step=lambda ev: seen.append(ev.tokens.clone()))
    x = torch.cat([ids, torch.full((2, 16), tiny.mask_id)], 1)
    for t in range(cfg.steps):
        assert torch.equal(traj.state_before(t, tiny.mask_id), x)
        x = seen[t]
    assert torch.equal(traj.state_before(cfg.steps, tiny.mask_id), traj.tokens)
    per_row = traj.state_before(torch.tensor([2, 5]), tiny.mask_id)
    assert torch.equal(per_row[0], traj.state_before(2, tiny.mask_id)[0])
    assert torch.equal(per_row[1], traj.state_before(5, tiny.mask_id)[1])


def test_greedy_completion_is_argmax_from_state(tiny):
    ids, attn = _prompts(tiny, ["greedy"])
    cfg = SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=1.0)
    traj = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(0), greedy_at=[0, 3, 7])
    for t in (0, 3, 7):
        state = traj.state_before(t, tiny.mask_id)
        logits = tiny.logits(state)
        logits[..., tiny.mask_id] = float("-inf")
        gen = state[:, traj.prompt_len:]
        want = torch.where(gen == tiny.mask_id, logits[:, traj.prompt_len:].argmax(-1), gen)
        got = traj.greedy_for(torch.tensor([[t]]))[:, 0]
        assert torch.equal(got, want)
    with pytest.raises(KeyError):
        traj.greedy_for(torch.tensor([[1]]))


@pytest.mark.parametrize("eos_limit", [False, True])
def test_running_top_k_keeper_equals_top_k_over_finished_trajectory(tiny, eos_limit):
    # An EOS-heavy model would exercise the limit more; force it by treating a common char as EOS.
    ids, attn = _prompts(tiny, ["one", "two", "three"])
    cfg = SamplerConfig(gen_len=32, steps=16, block_len=8, temperature=1.5)
    tiny_eos = tiny.eos_ids
    try:
        common = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(5)).completion_ids
        tiny.eos_ids = tuple(torch.mode(common.flatten()).values.view(1).tolist())
        traj = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(5),
                      greedy_at=TopEntropySteps(4, eos_limit=eos_limit))
    finally:
        tiny.eos_ids = tiny_eos
    last = last_non_eos_step(traj.step_non_eos) if eos_limit else None
    want = top_k_entropy_steps(traj.step_entropy, 4, last)
    assert torch.equal(traj.greedy_steps, want)
    # and each kept completion is the one FixedSteps would keep at the same steps
    fixed = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(5), greedy_at=FixedSteps(want.clamp(min=0)))
    valid = want >= 0
    assert torch.equal(traj.greedy_for(want)[valid], fixed.greedy_for(want.clamp(min=0))[valid])


def test_top_k_entropy_steps_by_hand():
    ent = torch.tensor([[0.5, 2.0, 1.0], [3.0, float("-inf"), 3.0]])
    # row 0: 2.0 (step 1) then 1.0 (step 2); row 1: tie 3.0 -> earlier step first; -inf never chosen
    assert top_k_entropy_steps(ent, 2).tolist() == [[1, 2], [0, 2]]
    assert top_k_entropy_steps(ent, 3).tolist() == [[1, 2, 0], [0, 2, -1]]
    # EOS limit: row 0 may only use steps <= 0, row 1 steps <= 2
    assert top_k_entropy_steps(ent, 2, torch.tensor([0, 2])).tolist() == [[0, -1], [0, 2]]


def test_trajectory_memory_is_independent_of_vocabulary(tiny):
    ids, attn = _prompts(tiny, ["m"])
    traj = sample(tiny, ids, attn, SamplerConfig(gen_len=16, steps=8, block_len=8), greedy_at=[1])
    for name, v in traj.__dict__.items():
        if isinstance(v, torch.Tensor):
            assert tiny.vocab_size not in v.shape, name


def test_threshold_above_one_is_the_fixed_schedule_and_never_more_forwards(tiny):
    ids, attn = _prompts(tiny, ["thr", "x"])
    fixed = SamplerConfig(gen_len=32, steps=16, block_len=8)
    a = sample(tiny, ids, attn, fixed)
    b = sample(tiny, ids, attn, SamplerConfig(gen_len=32, steps=16, block_len=8, decode="threshold", threshold=1.01))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.unmask_step, b.unmask_step)
    c = sample(tiny, ids, attn, SamplerConfig(gen_len=32, steps=16, block_len=8, decode="threshold", threshold=0.0))
    # threshold 0 reveals a whole block per forward: 4 blocks -> 4 forwards
    assert c.nfe == 4 and (c.completion_ids != tiny.mask_id).all()
    for tau in (0.02, 0.05, 0.5):
        d = sample(tiny, ids, attn, SamplerConfig(gen_len=32, steps=16, block_len=8, decode="threshold", threshold=tau))
        assert d.nfe <= fixed.steps and (d.completion_ids != tiny.mask_id).all()


def test_cfg_changes_logits_and_keeps_schedule(tiny):
    ids, attn = _prompts(tiny, ["cfg"])
    a = sample(tiny, ids, attn, SamplerConfig(gen_len=16, steps=8, block_len=16))
    b = sample(tiny, ids, attn, SamplerConfig(gen_len=16, steps=8, block_len=16, cfg_scale=2.0))
    assert not torch.equal(a.step_logp, b.step_logp)
    assert (b.completion_ids != tiny.mask_id).all() and b.nfe == 8


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        (dict(gen_len=30, block_len=32), "--gen-len 30 is not divisible by --block-len 32"),
        (dict(gen_len=64, block_len=32, steps=5), "--steps 5 is not divisible"),
        (dict(remasking="lowest"), "--remasking"),
        (dict(temperature=-1.0), "--temperature"),
    ],
)
def test_bad_sampler_config_names_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        SamplerConfig(**kwargs)


@pytest.mark.parametrize("eos_limit", [False, True])
def test_keeper_with_ties_and_skipped_steps_keeps_the_top_k_and_their_completions(eos_limit):
    # Scores on a coarse grid (many ties), some steps revealing nothing (-inf), many steps where no row
    # enters (update gets no completion and may skip its work): the kept steps must still be exactly the
    # top K, and each kept completion the one given at its own step (filled with the step number).
    g = torch.Generator().manual_seed(3)
    B, T, G, k = 5, 40, 6, 3
    ent = torch.randint(0, 4, (B, T), generator=g).float()
    ent[torch.rand((B, T), generator=g) < 0.2] = float("-inf")
    non_eos = torch.rand((B, T), generator=g) < 0.6
    # high-entropy EOS-only steps, then the last non-EOS step with the lowest score (it enters nothing,
    # yet must move those pending steps into the kept set), then EOS only
    ent[:, 25:30], non_eos[:, 25:30] = 5.0, False
    ent[:, 30], non_eos[:, 30], non_eos[:, 31:] = -1.0, True, False
    keeper = TopEntropySteps(k, eos_limit=eos_limit)
    keeper.start(B, G, torch.device("cpu"))
    skipped = 0
    for t in range(T):
        need = keeper.wants(t, ent[:, t], non_eos[:, t])
        greedy = None
        if bool(need.any()):
            greedy = torch.where(need.view(B, 1), torch.full((B, G), t), torch.full((B, G), -7))
        skipped += greedy is None
        keeper.update(t, ent[:, t], non_eos[:, t], greedy)
    steps, tokens = keeper.result()
    last = last_non_eos_step(non_eos) if eos_limit else None
    assert skipped > 0
    assert torch.equal(steps, top_k_entropy_steps(ent, k, last))
    kept = steps >= 0
    assert torch.equal(tokens[kept], steps[kept].view(-1, 1).expand(-1, G))
