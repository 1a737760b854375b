"""Method maths against hand-worked numbers on tiny tensors, and the batched log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from dllmrl.config import SamplerConfig
from dllmrl.methods.advantages import advantages, group_mean, lambda_at
from dllmrl.methods.logp import (
    completion_token_logp, draw_prompt_drops, masked_prompt_state, microstep_logp, microstep_logp_per_sample,
    step_exact_kl,
)
from dllmrl.methods.losses import LossConfig, clipped_surrogate, exact_kl, k3_kl, policy_loss, token_policy_loss
from dllmrl.methods.selection import (
    EntropySelector, RandomSelector, UniformSelector, entropy_steps, random_steps, uniform_steps,
)
from dllmrl.methods.tokens import completion_mask
from dllmrl.registry import METHODS, STEP_SELECTORS
from dllmrl.sampling.sampler import sample
from dllmrl.sampling.trajectory import Trajectory

INF = float("inf")


def fake_traj(step_entropy, step_non_eos) -> Trajectory:
    """A trajectory with only the per-step records the selectors read (2 rows x 3 steps)."""
    ent = torch.tensor(step_entropy)
    B, T = ent.shape
    z = torch.zeros((B, 1), dtype=torch.long)
    return Trajectory(tokens=z, attention_mask=z + 1, prompt_len=0, unmask_step=z, step_entropy=ent,
                      step_logp=torch.zeros(B, T), step_count=torch.ones(B, T, dtype=torch.long),
                      step_non_eos=torch.tensor(step_non_eos), greedy_steps=torch.full((B, 1), -1),
                      greedy_tokens=torch.zeros((B, 1, 1), dtype=torch.long))


# ---------------------------------------------------------------------------------------------- advantages
def test_egspo_advantage_lambda_zero_is_reward_minus_group_mean():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    groups = torch.tensor([0, 0, 1, 1])
    a = advantages(r, None, groups, 0.0, k=3)
    # group 0: mean 0.5 -> +0.5 / -0.5; group 1: all equal -> 0; the same for every k
    assert torch.allclose(a, torch.tensor([[0.5] * 3, [-0.5] * 3, [0.0] * 3, [0.0] * 3]))
    # greedy rewards are ignored at lambda = 0
    assert torch.allclose(advantages(r, torch.rand(4, 3), groups, 0.0), a)


def test_egspo_sa_advantage_lambda_one_normalised_and_not():
    r = torch.tensor([1.0, 0.0])
    greedy = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, float("nan")]])  # NaN: no step in that slot (r̂ := r)
    groups = torch.tensor([7, 7])
    # normalised: R0 = (1 + (1 - r̂))/2 = [0.5, 1, 0.75]; R1 = (0 + (0 - r̂))/2 = [0, -0.5, 0]
    # per-k group means [0.25, 0.25, 0.375]
    a = advantages(r, greedy, groups, 1.0, normalise=True)
    assert torch.allclose(a, torch.tensor([[0.25, 0.75, 0.375], [-0.25, -0.75, -0.375]]))
    # not normalised: R0 = [1, 2, 1.5]; R1 = [0, -1, 0]; means [0.5, 0.5, 0.75]
    b = advantages(r, greedy, groups, 1.0, normalise=False)
    assert torch.allclose(b, torch.tensor([[0.5, 1.5, 0.75], [-0.5, -1.5, -0.75]]))


def test_equal_rewards_give_zero_unless_greedy_rewards_differ():
    r = torch.tensor([1.0, 1.0])
    groups = torch.tensor([0, 0])
    assert torch.equal(advantages(r, torch.ones(2, 3), groups, 1.0), torch.zeros(2, 3))
    assert torch.equal(advantages(r, None, groups, 0.0, k=3), torch.zeros(2, 3))
    # the same final reward, but row 0's first step gained over a wrong greedy guess: R0 = [1, .5, .5], R1 = .5
    a = advantages(r, torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]), groups, 1.0)
    assert torch.allclose(a, torch.tensor([[0.25, 0.0, 0.0], [-0.25, 0.0, 0.0]]))


def test_group_mean_and_lambda_halving():
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    assert torch.equal(group_mean(x, torch.tensor([0, 0])), torch.tensor([[2.0, 3.0, 4.0]] * 2))
    assert torch.equal(group_mean(x, torch.tensor([0, 1])), x)
    assert [lambda_at(s, 1.0, 500) for s in (0, 499, 500, 999, 1000, 1500)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    assert lambda_at(10_000, 0.5, 0) == 0.5  # constant


# ---------------------------------------------------------------------------------------------- losses
def test_clipped_surrogate_at_both_edges_with_gradients():
    logp_new = torch.log(torch.tensor([[0.5, 1.0, 2.0], [0.5, 1.0, 2.0]])).requires_grad_()
    adv = torch.tensor([[1.0], [-1.0]])
    loss, ratio, clipped = clipped_surrogate(logp_new, torch.zeros(2, 3), adv, 0.2, 0.5)
    # A > 0: -min(rho, clip(rho, .8, 1.5)) = -[0.5, 1, 1.5]; A < 0: max(rho, clip) = [0.8, 1, 2]
    assert torch.allclose(loss, torch.tensor([[-0.5, -1.0, -1.5], [0.8, 1.0, 2.0]]))
    assert torch.allclose(ratio, torch.tensor([[0.5, 1.0, 2.0]] * 2))
    assert clipped.tolist() == [[False, False, True], [True, False, False]]
    loss.sum().backward()
    # d/dlogp of -rho*A is -rho*A where unclipped, 0 where the clip is active
    assert torch.allclose(logp_new.grad, torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 2.0]]))


def test_kl_forms_by_hand():
    ln2 = math.log(2)
    k3 = k3_kl(torch.tensor([[0.0, 0.0, ln2], [ln2, 0.0, 0.0]]), torch.tensor([[ln2, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    # d = ref - logp: ln2 -> 2 - ln2 - 1; 0 -> 0; -ln2 -> 1/2 + ln2 - 1
    assert torch.allclose(k3, torch.tensor([[1 - ln2, 0.0, ln2 - 0.5], [ln2 - 0.5, 0.0, 0.0]]))
    p = torch.log(torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]))  # log 0 = -inf, as for the mask token
    q = torch.log(torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]]))
    assert torch.allclose(exact_kl(p, q), torch.tensor([ln2, 0.0]))  # 2 * 0.5 * ln(0.5 / 0.25); equal -> 0


def test_policy_loss_masks_scales_and_adds_kl():
    logp_new = torch.log(torch.tensor([0.5, 1.0, 2.0]))
    cfg = LossConfig(epsilon=0.2, epsilon_high=0.5, beta=0.5, aggregation="sum", tokens_per_step=2.0)
    valid = torch.tensor([True, True, False])
    loss, m = policy_loss(logp_new, torch.zeros(3), torch.ones(3), cfg, valid=valid)
    assert math.isclose(float(loss), (-0.5 - 1.0) / 2 / 2)  # mean over the 2 valid rows, / tokens per step
    assert float(m["clip_ratio"]) == 0.0  # the clipped row is the invalid one
    loss_kl, m = policy_loss(logp_new, torch.zeros(3), torch.ones(3), cfg, valid=valid, kl=torch.tensor([0.2, 0.4, 9.0]))
    assert math.isclose(float(loss_kl), (-0.5 + 0.1 - 1.0 + 0.2) / 2 / 2, rel_tol=1e-6)
    assert math.isclose(float(m["kl"]), 0.3 / 2, rel_tol=1e-6)
    mean_cfg = LossConfig(epsilon=0.2, epsilon_high=0.5, beta=0.0, aggregation="mean", tokens_per_step=2.0)
    loss_mean, _ = policy_loss(logp_new, torch.zeros(3), torch.ones(3), mean_cfg)  # no division with 'mean'
    assert math.isclose(float(loss_mean), (-0.5 - 1.0 - 1.5) / 3, rel_tol=1e-6)


def test_token_policy_loss_by_hand():
    logp_new = torch.log(torch.tensor([[0.5, 1.0, 2.0], [0.5, 1.0, 2.0]]))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss, m = token_policy_loss(logp_new, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask,
                                LossConfig(epsilon=0.2, epsilon_high=0.5, beta=0.0))
    assert math.isclose(float(loss), (-0.5 - 1.0 + 0.8 + 1.0 + 2.0) / 5, rel_tol=1e-6)
    assert math.isclose(float(m["clip_ratio"]), 1 / 5, rel_tol=1e-6)  # only (1, 0) counts: (0, 2) is masked


def test_completion_mask_keeps_the_first_eos():
    ids = torch.tensor([[5, 9, 7], [5, 6, 7]])
    assert completion_mask(ids, (9,)).tolist() == [[True, True, False], [True, True, True]]


# ---------------------------------------------------------------------------------------------- selection
def test_top_k_entropy_selection_and_eos_limit():
    t = fake_traj([[0.5, 2.0, 1.0], [-INF, 0.3, 0.3]], [[True, False, False], [False, True, False]])
    assert entropy_steps(t, 2).tolist() == [[1, 2], [1, 2]]  # ties go to the earlier step; -inf never chosen
    assert entropy_steps(t, 3).tolist() == [[1, 2, 0], [1, 2, -1]]
    # EOS limit: row 0's last non-EOS step is 0, row 1's is 1
    assert entropy_steps(t, 2, eos_limit=True).tolist() == [[0, -1], [1, -1]]


def test_random_and_uniform_selection_by_hand():
    t = fake_traj([[0.5, 2.0, 1.0], [-INF, 0.3, 0.3]], [[True, False, False], [False, True, False]])
    keys = torch.tensor([[0.1, 0.9, 0.5], [0.9, 0.2, 0.8]])
    assert random_steps(t, 2, keys).tolist() == [[1, 2], [2, 1]]  # row 1, step 0 revealed nothing
    assert random_steps(t, 2, keys, eos_limit=True).tolist() == [[0, -1], [1, -1]]
    assert uniform_steps(t, 2).tolist() == [[0, 2], [-1, 2]]
    assert uniform_steps(t, 2, eos_limit=True).tolist() == [[0, -1], [-1, 1]]  # a repeat becomes -1


@pytest.mark.parametrize("name", ["entropy", "random", "uniform"])
@pytest.mark.parametrize("eos_limit", [False, True])
def test_selector_plans_keep_the_greedy_completions_they_select(tiny, name, eos_limit):
    """Whatever a selector picks, the sampler kept its one-shot completion, and it is the argmax from that state."""
    ids, attn = tiny.encode(["hello", "a longer prompt"])
    cfg = SamplerConfig(gen_len=8, steps=8, block_len=4, temperature=1.0)
    gen = torch.Generator().manual_seed(3)
    plan = STEP_SELECTORS.get(name)().plan(2, cfg.steps, 3, eos_limit=eos_limit, generator=gen, device=ids.device)
    traj = sample(tiny, ids, attn, cfg, generator=gen, greedy_at=plan.keeper)
    steps = plan.select(traj)
    assert steps.shape == (2, 3) and bool((steps >= 0).any())
    kept = traj.greedy_for(steps)  # raises if one was not kept
    for b, k in (steps >= 0).nonzero().tolist():
        state = traj.state_before(steps[b:b + 1, k].expand(2), tiny.mask_id)[b:b + 1]
        with torch.no_grad():
            logits = tiny.logits(state, traj.attention_mask[b:b + 1])
        logits[..., tiny.mask_id] = -INF
        gen_part = state[0, traj.prompt_len:]
        want = torch.where(gen_part == tiny.mask_id, logits[0, traj.prompt_len:].argmax(-1), gen_part)
        assert torch.equal(kept[b, k], want)
    assert isinstance(STEP_SELECTORS.get(name)(), (EntropySelector, RandomSelector, UniformSelector))


def test_methods_registered_lazily():
    assert {"egspo", "egspo-sa", "diffu-grpo"} <= set(METHODS.names())
    assert METHODS.get("egspo-sa").stepwise and not METHODS.get("egspo").stepwise


# ---------------------------------------------------------------------------------------------- log-probabilities
@pytest.fixture(scope="module")
def rollout(tiny):
    ids, attn = tiny.encode(["hi", "a much longer prompt", "mid size", "x"])  # left padding differs per row
    cfg = SamplerConfig(gen_len=8, steps=4, block_len=8, temperature=1.0)
    traj = sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(0))
    return traj, torch.tensor([0, 3, 1, 2])


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_batched_logp_equals_per_sample_and_the_rollout_record(tiny, rollout, aggregation):
    traj, steps = rollout
    tiny.model.eval()
    with torch.no_grad():
        batched = microstep_logp(tiny, traj, steps, aggregation=aggregation)
        single = microstep_logp_per_sample(tiny, traj, steps, aggregation=aggregation)
    assert torch.allclose(batched.logp, single.logp, atol=1e-5)
    assert torch.equal(batched.count, traj.step_count.gather(1, steps.view(-1, 1)).squeeze(1).float())
    recorded = (traj.step_logp if aggregation == "sum" else traj.step_logp_mean).gather(1, steps.view(-1, 1)).squeeze(1)
    assert torch.allclose(batched.logp, recorded, atol=1e-5)  # the state rebuilt from unmask_step is the sampler's


def test_logp_gradients_flow_and_empty_slots_give_zero(tiny, rollout):
    traj, steps = rollout
    out = microstep_logp(tiny, traj, torch.tensor([0, -1, 1, 2]), full=True)
    assert float(out.logp[1].detach()) == 0.0 and float(out.count[1]) == 0.0
    out.logp.sum().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in tiny.model.parameters())
    tiny.model.zero_grad(set_to_none=True)
    with torch.no_grad():
        same = microstep_logp(tiny, traj, steps, full=True)
    assert torch.allclose(step_exact_kl(same, same, 4), torch.zeros(4), atol=1e-6)  # KL to itself


def test_diffu_grpo_inputs(tiny, rollout):
    traj, _ = rollout
    drops = draw_prompt_drops(traj, 3, 0.5, torch.Generator().manual_seed(1))
    assert drops.shape == (3, *traj.tokens.shape)
    assert not bool((drops & ~traj.attention_mask.bool().unsqueeze(0)).any())  # padding never "dropped"
    assert not bool(drops[:, :, traj.prompt_len:].any())
    x = masked_prompt_state(traj, drops[0], tiny.mask_id)
    assert bool((x[:, traj.prompt_len:] == tiny.mask_id).all())
    assert torch.equal(x[:, :traj.prompt_len] == tiny.mask_id, drops[0][:, :traj.prompt_len])
    with torch.no_grad():
        tok, full = completion_token_logp(tiny, traj, drops[0], full=True)
    assert tok.shape == traj.completion_ids.shape and bool((tok <= 0).all())
    assert torch.allclose(full.gather(-1, traj.completion_ids.unsqueeze(-1)).squeeze(-1), tok, atol=1e-5)


@pytest.mark.parametrize("fixture", ["llada-tiny", "dream-tiny"])
def test_step_logp_matches_the_rollout_on_llada_and_dream(fixture):
    """Dream predicts position i+1 at i (shifted logits): the rebuilt states must still score like the sampler."""
    from pathlib import Path

    from dllmrl.config import ModelConfig
    from dllmrl.models import load_model

    m = load_model(ModelConfig(model=str(Path(__file__).parent / "fixtures" / fixture), device="cpu", dtype="float32"))
    ids, attn = m.encode([m.render_prompt("abc", chat=False), m.render_prompt("a longer one", chat=False)])
    traj = sample(m, ids, attn, SamplerConfig(gen_len=8, steps=4, block_len=8, temperature=1.0),
                  generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([1, 3])
    with torch.no_grad():
        got = microstep_logp(m, traj, steps).logp
        single = microstep_logp_per_sample(m, traj, steps).logp
    assert torch.allclose(got, traj.step_logp.gather(1, steps.view(-1, 1)).squeeze(1), atol=1e-4)
    assert torch.allclose(got, single, atol=1e-4)
