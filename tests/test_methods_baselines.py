"""The baselines' maths (wd1, SPG, d2-StepMerge) and the entropy-mass selector against hand-worked numbers
on 2 x 3 tensors; the config plumbing of their options. Training runs: tests/test_trainer_baselines.py."""

from __future__ import annotations

import math

import pytest
import torch

from dllmrl.errors import ConfigError
from dllmrl.methods.d2 import d2_group_loss, group_bounds, group_input, step_groups
from dllmrl.methods.entropy_mass import EntropyMassSelector, entropy_mass_steps
from dllmrl.methods.spg import block_masks, elbo, eubo, noisy_inputs, sandwich_logp, spg_loss
from dllmrl.methods.wd1 import group_softmax, sequence_logp, wd1_loss, wd1_weights
from dllmrl.registry import METHODS, STEP_SELECTORS
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.training.train_config import TrainConfig, resolve_method

E = math.e
INF = float("inf")
MASK = 99


def traj_of(tokens, unmask_step, prompt_len, attention_mask=None) -> Trajectory:
    """A trajectory carrying only tokens, unmask steps and the attention mask (what the baselines read)."""
    tokens, unmask_step = torch.tensor(tokens), torch.tensor(unmask_step)
    B = tokens.shape[0]
    attn = torch.ones_like(tokens) if attention_mask is None else torch.tensor(attention_mask)
    T = int(unmask_step.max()) + 1
    return Trajectory(tokens=tokens, attention_mask=attn, prompt_len=prompt_len, unmask_step=unmask_step,
                      step_entropy=torch.zeros(B, T), step_logp=torch.zeros(B, T),
                      step_count=torch.ones(B, T, dtype=torch.long), step_non_eos=torch.ones(B, T, dtype=torch.bool),
                      greedy_steps=torch.full((B, 1), -1), greedy_tokens=torch.zeros((B, 1, 1), dtype=torch.long))


# ---------------------------------------------------------------------------------------------- wd1
# Two groups of three: rewards (1, 0, 0) -> A = (2/3, -1/3, -1/3); rewards all 0.5 -> A = 0.
ADV = torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_wd1_weights_are_group_softmaxes_of_plus_and_minus_psi_a():
    w_pos, w_neg = wd1_weights(ADV, GROUPS, psi=1.0)
    # exp(2/3), exp(-1/3), exp(-1/3) scaled by e^(1/3): (e, 1, 1) / (e + 2); the negative side (1, e, e) / (1 + 2e)
    assert torch.allclose(w_pos, torch.tensor([E / (E + 2), 1 / (E + 2), 1 / (E + 2), 1 / 3, 1 / 3, 1 / 3]))
    assert torch.allclose(w_neg, torch.tensor([1 / (1 + 2 * E), E / (1 + 2 * E), E / (1 + 2 * E), 1 / 3, 1 / 3, 1 / 3]))
    # ψ = 3 with A = (2/3, -1/3, -1/3): exp(2), exp(-1), exp(-1) -> (e^3, 1, 1) / (e^3 + 2)
    w3, _ = wd1_weights(ADV, GROUPS, psi=3.0)
    assert w3[0].item() == pytest.approx(E ** 3 / (E ** 3 + 2), rel=1e-6)
    # a huge score does not overflow: the group max is subtracted first
    assert torch.allclose(group_softmax(torch.tensor([1000.0, 0.0]), torch.tensor([5, 5])), torch.tensor([1.0, 0.0]))


def test_wd1_loss_at_known_values_and_an_equal_reward_group_gives_no_gradient():
    tok = torch.tensor([[-1.0, -0.5, -9.0], [-2.0, -1.0, -9.0]])  # (2, 3) per-token log p
    mask = torch.tensor([[True, True, False], [True, True, False]])  # the third token lies past the EOS
    assert torch.allclose(sequence_logp(tok, mask), torch.tensor([-1.5, -3.0]))
    l = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0], requires_grad=True)
    w_pos, w_neg = wd1_weights(ADV, GROUPS, psi=1.0)
    loss, metrics = wd1_loss(l, w_pos, w_neg, GROUPS)
    # group 0: Σ (w⁻ − w⁺) l = (1/(1+2e) − e/(e+2))(−1) + (e/(1+2e) − 1/(e+2))(−2 − 3); group 1: 0;
    # the loss is the mean over the two groups
    g0 = -(1 / (1 + 2 * E) - E / (E + 2)) - 5 * (E / (1 + 2 * E) - 1 / (E + 2))
    assert loss.item() == pytest.approx(g0 / 2, rel=1e-6)
    assert loss.item() == pytest.approx(-0.31557, abs=1e-4)
    loss.backward()
    assert torch.all(l.grad[3:] == 0)  # rewards all equal: w⁺ = w⁻ = 1/3, no push either way
    assert l.grad[0] < 0 and l.grad[1] > 0  # raise the best sample's likelihood, lower the others'
    assert metrics["weight_max"].item() == pytest.approx(E / (E + 2), rel=1e-6)


# ---------------------------------------------------------------------------------------------- SPG
# Row 0: completion of 3 tokens; row 1: EOS at position 1, so position 2 is not scored.
LOGP = torch.tensor([[[-1.0, -2.0, -3.0], [-0.5, -1.0, -1.5]],
                     [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]])  # (B=2, K=2, G=3)
MASKED = torch.tensor([[[True, True, False], [False, True, True]],
                       [[True, False, True], [True, True, True]]])
COMP = torch.tensor([[True, True, True], [True, True, False]])


def test_spg_elbo_is_the_mean_log_p_over_masked_completion_tokens_averaged_over_masks():
    # row 0: mask 0 (−1 − 2)/2 = −1.5, mask 1 (−1 − 1.5)/2 = −1.25 -> −1.375; row 1: −1 and −1 -> −1
    assert torch.allclose(elbo(LOGP, MASKED, COMP), torch.tensor([-1.375, -1.0]))


def test_spg_eubo_at_known_values():
    # β = 1. Row 0: t = (2/3, 2/3); u = 0.75 (e^-1, e^-2 + e^-1, e^-1.5); EUBO = mean log u.
    # Row 1: t = (1/2, 1); u = (0.5 (2 e^-1 + e^-1), 0.5 e^-1, 0) -> mean over the two positive u.
    row0 = (math.log(0.75 * E ** -1) + math.log(0.75 * (E ** -2 + E ** -1)) + math.log(0.75 * E ** -1.5)) / 3
    row1 = (math.log(1.5 * E ** -1) + math.log(0.5 * E ** -1)) / 2
    assert torch.allclose(eubo(LOGP, MASKED, COMP, 1.0), torch.tensor([row0, row1]), atol=1e-6)
    # β = 2: p^2 inside, 1/β outside. Row 1: u = (0.5 (2 e^-2 + e^-2), 0.5 e^-2)
    # -> (log 1.5e^-2 + log 0.5e^-2) / 2 / 2
    b2 = (math.log(1.5 * E ** -2) + math.log(0.5 * E ** -2)) / 4
    assert eubo(LOGP, MASKED, COMP, 2.0)[1].item() == pytest.approx(b2, rel=1e-6)


def test_spg_sandwich_and_loss_and_an_equal_reward_group():
    lower, upper = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-0.5, -1.0, -1.5])
    adv = torch.tensor([0.5, -0.5, 0.0])
    # A > 0: the ELBO; A <= 0: ω EUBO + (1 − ω) ELBO (ω = 0.5 -> −1.5, −2.25); ω = 1 is the pure EUBO
    assert torch.allclose(sandwich_logp(lower, upper, adv, 0.5), torch.tensor([-1.0, -1.5, -2.25]))
    assert torch.allclose(sandwich_logp(lower, upper, adv, 1.0), torch.tensor([-1.0, -1.0, -1.5]))
    logp = torch.tensor([-1.0, -1.5, -2.25], requires_grad=True)
    loss, _ = spg_loss(logp, adv, torch.tensor([3, 2, 1]))
    # Σ |o| (−A logp) / Σ |o| = (3 (−0.5)(−1) + 2 (0.5)(−1.5) + 1 · 0) / 6 = (1.5 − 1.5) / 6 = 0
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    loss.backward()
    # d/dlogp = −|o| A / Σ|o|: (−0.25, +1/6, 0): raise the good sample's bound, lower the bad one's
    assert torch.allclose(logp.grad, torch.tensor([-0.25, 1 / 6, 0.0]))
    # a group whose rewards are all equal: A = 0 everywhere, loss and gradient 0
    flat = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    loss0, _ = spg_loss(flat, torch.zeros(3), torch.tensor([3, 3, 3]))
    loss0.backward()
    assert loss0.item() == 0 and torch.all(flat.grad == 0)


def test_spg_block_masks_follow_the_block_rule():
    g = torch.Generator().manual_seed(0)
    comp_len = torch.tensor([8, 3, 5])  # gen_len 8 in blocks of 4: two, one and two completion blocks
    for _ in range(20):
        masks, clean = block_masks(comp_len, 8, 4, 2, g)  # (3, 2, 8)
        for b in range(3):
            n_comp = (int(comp_len[b]) - 1) // 4 + 1
            blocks = []
            for k in range(2):
                m = masks[b, k].view(2, 4)  # (block, position in block)
                j = int(clean[b, k].view(2, 4).all(1).logical_not().nonzero()[0])  # first block not clean
                blocks.append(j)
                assert j < n_comp and not masks[b, k].view(2, 4)[:j].any()  # earlier blocks stay clean
                assert clean[b, k].view(2, 4)[:j].all() and not clean[b, k].view(2, 4)[j:].any()
                assert m[j + 1:].all()  # later blocks fully masked
                n = min(4, int(comp_len[b]) - 4 * j)  # completion positions in block j
                assert 1 <= int(m[j, :n].sum()) <= n and m[j, n:].all()  # past the EOS: masked
            if n_comp == 2:
                assert sorted(blocks) == [0, 1]  # two masks, two blocks: a permutation, not two draws
    # the draw depends only on the generator
    a = block_masks(comp_len, 8, 4, 2, torch.Generator().manual_seed(3))
    b = block_masks(comp_len, 8, 4, 2, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_spg_noisy_inputs_mask_prompt_and_clean_blocks_with_p():
    # prompt of 3 (the first of row 1 is padding), completion of 4 with an EOS (id 2) at position 2 of row 1
    traj = traj_of([[5, 6, 7, 10, 11, 12, 13], [0, 6, 7, 10, 11, 2, 13]], [[-1, -1, -1, 0, 1, 2, 3]] * 2, 3,
                   attention_mask=[[1] * 7, [0, 1, 1, 1, 1, 1, 1]])
    comp = torch.tensor([[True, True, True, True], [True, True, True, False]])
    masks = torch.tensor([[[False, False, True, True]], [[False, True, False, True]]])  # (B, K=1, G)
    clean = torch.tensor([[[True, True, False, False]], [[True, False, False, False]]])
    x0 = noisy_inputs(traj, masks, clean, comp, 0.0, MASK)
    assert x0[:, 0].tolist() == [[5, 6, 7, 10, 11, MASK, MASK], [0, 6, 7, 10, MASK, 2, MASK]]
    x1 = noisy_inputs(traj, masks, clean, comp, 0.999999, MASK, torch.Generator().manual_seed(0))
    # p ≈ 1: every real prompt token and clean-block token is masked; padding and the block's clean part stay
    assert x1[:, 0].tolist() == [[MASK] * 7, [0, MASK, MASK, MASK, MASK, 2, MASK]]


# ---------------------------------------------------------------------------------------------- d2-StepMerge
def test_d2_group_bounds_and_groups():
    assert group_bounds(8, 3).tolist() == [0, 2, 5, 8]  # floor(n T / N)
    assert group_bounds(128, 8).tolist() == list(range(0, 129, 16))
    assert group_bounds(4, 4).tolist() == [0, 1, 2, 3, 4]
    unmask = torch.tensor([[-1, 0, 5], [-1, 2, 7]])
    assert step_groups(unmask, group_bounds(8, 3)).tolist() == [[-1, 0, 2], [-1, 1, 2]]


def test_d2_group_input_is_the_state_before_the_group_with_the_prompt_drop():
    traj = traj_of([[5, 6, 10, 11, 12], [5, 6, 10, 11, 12]], [[-1, -1, 0, 3, 1], [-1, -1, 2, 0, 3]], 2)
    drop = torch.tensor([[True, False, True, True, False], [False, False, False, False, False]])
    # state before step 2: tokens revealed at steps 0 and 1 kept; drop masks prompt token 0 of row 0 only
    assert group_input(traj, 2, drop, MASK).tolist() == [[MASK, 6, 10, MASK, 12], [5, 6, MASK, 11, MASK]]


def test_d2_group_loss_at_known_values():
    ratio = torch.tensor([[1.0, 2.0, 0.4], [1.0, 2.0, 0.4]])
    old = torch.zeros(2, 3)
    new = ratio.log().requires_grad_()
    adv = torch.tensor([1.0, -1.0])
    in_group = torch.tensor([[True, True, False], [True, False, True]])
    comp = torch.tensor([[True, True, True], [True, True, False]])
    loss, m = d2_group_loss(new, old, adv, in_group, comp, 2, 0.5, 0.5)
    # A = 1: −min(ρ, clip(ρ, 0.5, 1.5)) = (−1, −1.5, −0.4); A = −1: max(ρ, clip) = (1, 2, 0.5)
    # scored: (0,0), (0,1), (1,0) -> −1 − 1.5 + 1 = −1.5; × N = 2 / Σ|o| = 5 -> −0.6
    assert loss.item() == pytest.approx(-0.6, rel=1e-6)
    assert m["clip_ratio"].item() == pytest.approx(1 / 3)  # (0, 1): ρ = 2 > 1.5 with A > 0
    loss.backward()
    assert new.grad[0, 1] == 0 and new.grad[0, 2] == 0 and new.grad[1, 1] == 0  # clipped / outside the group
    # with a KL term: β Σ kl over the scored tokens, same scale
    kl = torch.full((2, 3), 0.1)
    with_kl, _ = d2_group_loss(ratio.log(), old, adv, in_group, comp, 2, 0.5, 0.5, beta=0.5, kl=kl)
    assert with_kl.item() == pytest.approx(-0.6 + 0.5 * 0.1 * 3 * 2 / 5, rel=1e-6)
    # a group whose rewards are all equal: A = 0, no loss
    zero, _ = d2_group_loss(ratio.log(), old, torch.zeros(2), in_group, comp, 2, 0.5, 0.5)
    assert zero.item() == 0


# ---------------------------------------------------------------------------------------------- entropy mass
ENT = torch.tensor([[3.0, 2.0, 1.0], [1.0, -INF, 4.0]])  # row 1: step 1 revealed nothing


def test_entropy_mass_keeps_the_fewest_top_steps_reaching_the_fraction():
    # row 0: total 6; row 1: total 5 over its two revealing steps
    assert entropy_mass_steps(ENT, 0.5, 3).tolist() == [[0, -1, -1], [2, -1, -1]]  # 3 >= 3; 4 >= 2.5
    assert entropy_mass_steps(ENT, 0.7, 3).tolist() == [[0, 1, -1], [2, -1, -1]]  # 3 < 4.2 <= 5; 4 >= 3.5
    assert entropy_mass_steps(ENT, 0.9, 3).tolist() == [[0, 1, 2], [2, 0, -1]]  # 5 < 5.4; 4 < 4.5
    assert entropy_mass_steps(ENT, 1.0, 2).tolist() == [[0, 1], [2, 0]]  # capped at --k-steps
    assert entropy_mass_steps(ENT, 1.0, 4).tolist() == [[0, 1, 2, -1], [2, 0, -1, -1]]  # padded past T
    # all-zero entropy: one step still; the EOS limit (last step 1) drops step 2 of row 1
    assert entropy_mass_steps(torch.zeros(1, 3), 0.7, 3).tolist() == [[0, -1, -1]]
    assert entropy_mass_steps(ENT, 0.7, 3, torch.tensor([2, 1])).tolist() == [[0, 1, -1], [0, -1, -1]]


def test_entropy_mass_selector_is_registered_and_reads_its_fraction_from_the_config():
    from test_methods import fake_traj

    cfg = TrainConfig(select="entropy-mass", entropy_mass=0.7)
    plan = STEP_SELECTORS.get("entropy-mass")(cfg).plan(2, 3, 3, eos_limit=False, generator=None, device="cpu")
    traj = fake_traj([[3.0, 2.0, 1.0], [1.0, -INF, 4.0]], [[True] * 3, [True] * 3])
    assert plan.select(traj).tolist() == [[0, 1, -1], [2, -1, -1]]
    assert plan.keeper.k == 3  # keeps the top k_steps' completions: the rule keeps a prefix of them


# ---------------------------------------------------------------------------------------------- config
def test_registry_and_method_defaults():
    assert {"wd1", "spg", "d2-stepmerge"} <= set(METHODS.names())
    for name in ("wd1", "spg", "d2-stepmerge"):
        assert "arXiv" in METHODS.get(name).paper
    wd1 = resolve_method(TrainConfig(method="wd1", grad_accum=1))
    assert (wd1.beta, wd1.mu, wd1.lam) == (0.0, 12, 0.0)
    spg = resolve_method(TrainConfig(method="spg", grad_accum=1))
    assert (spg.beta, spg.mu, spg.mc_samples, spg.eubo_beta, spg.mix_weight) == (0.0, 4, 2, 1.5, 0.5)
    d2 = resolve_method(TrainConfig(method="d2-stepmerge", grad_accum=1))
    assert (d2.beta, d2.mu, d2.epsilon, d2.merge_groups) == (0.04, 12, 0.5, 8)
    assert resolve_method(TrainConfig(method="egspo")).beta == 0.04  # the default KL weight is unchanged
    assert resolve_method(TrainConfig(method="egspo", beta=0.0)).beta == 0.0


@pytest.mark.parametrize("kw, match", [
    (dict(method="wd1", beta=0.04), "--method wd1 has --beta 0.0"),
    (dict(method="spg", lam=1.0), "stepwise advantages use --method egspo-sa"),
    (dict(method="spg", epsilon=0.2), "--method spg does not use --epsilon; leave the option out"),
    (dict(entropy_mass=0.0), "--entropy-mass must be in"),
    (dict(mix_weight=1.5), "--mix-weight must be in"),
    (dict(psi=0.0), "--psi and --eubo-beta must be positive"),
    (dict(merge_groups=0), "--merge-groups must be positive"),
    (dict(method="d2-stepmerge", merge_groups=3, mu=1), "--grad-accum 2 does not divide"),
    (dict(method="wd1", select="entropy-mass"), "--method wd1 trains on no selected denoising steps"),
    (dict(method="diffu-grpo", select="random"), "--select random would be ignored"),
])
def test_bad_options_are_one_clear_line(kw, match):
    with pytest.raises(ConfigError, match=match):
        resolve_method(TrainConfig(**kw))


def test_exact_kl_gradient_is_finite_where_both_policies_exclude_a_token():
    """Regression (found through d2-stepmerge --kl exact, also hit diffu-grpo): the mask token's log-probability is
    -inf under both policies; -inf - -inf inside the masked-out branch used to turn every gradient into NaN."""
    from dllmrl.methods.losses import exact_kl

    logits = torch.tensor([[0.0, 1.0, -INF], [2.0, 0.0, -INF]], requires_grad=True)  # (2, V=3)
    logp = torch.log_softmax(logits, -1)
    ref = torch.log_softmax(torch.tensor([[1.0, 0.0, -INF], [2.0, 0.0, -INF]]), -1)
    kl = exact_kl(logp, ref)
    kl.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # row 1 equals the reference: KL 0; row 0: Σ p (log p − log ref) with p = softmax(0, 1), ref = softmax(1, 0)
    p = torch.softmax(torch.tensor([0.0, 1.0]), -1)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)
    assert kl[0].item() == pytest.approx(float((p * (p.log() - p.flip(0).log())).sum()), rel=1e-6)



# ---------------------------------------------------------------------------------------------- forwards on the tiny model
@pytest.fixture(scope="module")
def rollout(tiny):
    from dllmrl.config import SamplerConfig
    from dllmrl.sampling.sampler import sample

    ids, attn = tiny.encode(["hi", "a much longer prompt", "mid size"])  # left padding differs per row
    cfg = SamplerConfig(gen_len=8, steps=4, block_len=4, temperature=1.0)
    return sample(tiny, ids, attn, cfg, generator=torch.Generator().manual_seed(0))


def test_d2_with_one_group_per_step_scores_what_the_sampler_recorded(tiny, rollout):
    """N = T: group n is step n, so the group's tokens summed give the rollout's own step log-probability."""
    from dllmrl.methods.d2 import group_token_logp

    traj = rollout
    groups = step_groups(traj.unmask_step, group_bounds(traj.num_steps, traj.num_steps))[:, traj.prompt_len:]
    no_drop = torch.zeros_like(traj.tokens, dtype=torch.bool)
    tiny.model.eval()
    with torch.no_grad():
        for n in range(traj.num_steps):
            tok, _ = group_token_logp(tiny, traj, n, no_drop)  # (B, G)
            summed = (tok * (groups == n)).sum(1)
            assert torch.allclose(summed, traj.step_logp[:, n], atol=1e-5), n


def test_spg_forward_over_all_masks_equals_one_mask_at_a_time(tiny, rollout):
    from dllmrl.methods.spg import masked_token_logp

    traj = rollout
    comp = torch.ones_like(traj.completion_ids, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    masks, clean = block_masks(comp.long().sum(1), 8, 4, 2, g)
    inputs = noisy_inputs(traj, masks, clean, comp, 0.3, tiny.mask_id, g)  # (B, K, L)
    tiny.model.eval()
    with torch.no_grad():
        batched = masked_token_logp(tiny, traj, inputs)  # (B, K, G)
        for k in range(2):
            one = masked_token_logp(tiny, traj, inputs[:, k:k + 1])[:, 0]
            assert torch.allclose(batched[:, k], one, atol=1e-5)
    assert torch.all(batched <= 0)


# ---------------------------------------------------------------------------------------------- CLI
def test_ls_methods_names_each_method_with_its_paper():
    from typer.testing import CliRunner

    from dllmrl.cli import app

    r = CliRunner().invoke(app, ["ls", "methods"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 4}
    papers = {"egspo": "2603.12554", "egspo-sa": "2603.12554", "diffu-grpo": "2504.12216", "wd1": "2507.08838",
              "spg": "2510.09541", "d2-stepmerge": "2509.21474"}
    for name, arxiv in papers.items():
        assert f"arXiv {arxiv}" in lines[name], name


@pytest.mark.parametrize("method, k, refused", [("egspo", 5, True), ("egspo", 4, False), ("wd1", 5, False)])
def test_entropy_mass_cap_obeys_the_k_steps_check_of_step_selecting_methods(method, k, refused):
    """--k-steps caps entropy-mass's adaptive count and fixes the micro-steps, so the same K <= --steps bound holds;
    a method that selects no steps ignores --k-steps."""
    from dllmrl.training.trainer import check_k_steps
    from dllmrl.config import SamplerConfig

    cfg = TrainConfig(method=method, select="entropy-mass", entropy_mass=0.7, k_steps=k)
    scfg = SamplerConfig(gen_len=8, steps=4, block_len=4)
    if refused:
        with pytest.raises(ConfigError, match="--k-steps 5 is more than --steps 4"):
            check_k_steps(cfg, scfg)
    else:
        check_k_steps(cfg, scfg)
