"""The baselines of the EGSPO comparison (wd1, SPG, d2-StepMerge) as methods of the trainer.

Adapters only: the maths lives in ``wd1.py``, ``spg.py`` and ``d2.py``; this module maps a rollout
onto it through the trainer's current objective interface (``units``, ``plan``, ``prepare`` under
no_grad right after the rollout, ``loss`` per micro-step; see steps.py). Each ``prepare`` draws
all the rollout's randomness from the trainer's generator, so a checkpointed buffer replays exactly.

    wd1            μ micro-steps: d1 one-step log-likelihood, softmax(±ψA) weights, no ratio
    spg            μ micro-steps: K block-wise masks each, ELBO for A > 0, EUBO / mixture for A <= 0
    d2-stepmerge   N × μ micro-steps: one per group of consecutive denoising steps, clipped per token
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from dllmrl.errors import ConfigError
from dllmrl.methods import Method
from dllmrl.methods.advantages import advantages
from dllmrl.methods.d2 import d2_group_loss, group_bounds, group_token_logp, step_groups
from dllmrl.methods.logp import completion_token_logp, draw_prompt_drops
from dllmrl.methods.losses import LossConfig, exact_kl, k3_kl
from dllmrl.methods.spg import (
    block_masks, elbo, eubo, masked_token_logp, noisy_inputs, sandwich_logp, spg_loss,
)
from dllmrl.methods.tokens import completion_mask
from dllmrl.methods.wd1 import sequence_logp, wd1_loss, wd1_weights
from dllmrl.sampling.trajectory import Trajectory


def _group_advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """(B,) A = r − mean_group(r), no std: all three baselines."""
    return advantages(rewards, None, group_ids, 0.0, k=1)[:, 0]


# ---------------------------------------------------------------------------------------------- wd1
@dataclass
class Wd1Buffer:
    traj: Trajectory
    drops: Tensor
    """(μ, B, L) bool: prompt tokens masked in each inner iteration."""
    mask: Tensor
    """(B, G) bool: completion up to and including the first EOS."""
    w_pos: Tensor
    """(B,) softmax_group(ψA)."""
    w_neg: Tensor
    """(B,) softmax_group(−ψA)."""
    group_ids: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Wd1Objective:
    def units(self, cfg: Any) -> int:
        return cfg.mu

    def plan(self, cfg: Any, batch: int, total_steps: int, generator: torch.Generator | None, device: torch.device):
        return None

    def prepare(self, method: Method, cfg: Any, traj: Trajectory, plan: Any, rewards: Tensor, group_ids: Tensor,
                lam: float, *, score_greedy: Callable, policy: Any, eos_ids: Any, generator: torch.Generator | None,
                cfg_scale: float, block_len: int) -> Wd1Buffer:
        drops = draw_prompt_drops(traj, cfg.mu, cfg.p_mask_prompt, generator)  # (μ, B, L)
        mask = completion_mask(traj.completion_ids, eos_ids)  # (B, G)
        w_pos, w_neg = wd1_weights(_group_advantage(rewards, group_ids), group_ids, cfg.psi)
        return Wd1Buffer(traj, drops, mask, w_pos, w_neg, group_ids,
                         {"completion_tokens": float(mask.float().sum(1).mean())})

    def loss(self, buf: Wd1Buffer, u: int, *, policy: Any, reference: Callable | None, loss_cfg: LossConfig,
             cfg_scale: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        tok, _ = completion_token_logp(policy, buf.traj, buf.drops[u % buf.drops.shape[0]], cfg_scale=cfg_scale)
        return wd1_loss(sequence_logp(tok, buf.mask), buf.w_pos, buf.w_neg, buf.group_ids)


# ---------------------------------------------------------------------------------------------- SPG
@dataclass
class SpgBuffer:
    traj: Trajectory
    inputs: Tensor
    """(μ, B, K, L) the masked model inputs of each inner iteration."""
    comp: Tensor
    """(B, G) bool: completion up to and including the first EOS."""
    adv: Tensor
    """(B,) advantages."""
    eubo_beta: float
    """β of the upper bound (the trainer's loss call carries no TrainConfig, so the buffer does)."""
    mix_weight: float
    """ω of the mixture for A <= 0."""
    metrics: dict[str, float] = field(default_factory=dict)


class SpgObjective:
    def units(self, cfg: Any) -> int:
        return cfg.mu

    def plan(self, cfg: Any, batch: int, total_steps: int, generator: torch.Generator | None, device: torch.device):
        return None

    def prepare(self, method: Method, cfg: Any, traj: Trajectory, plan: Any, rewards: Tensor, group_ids: Tensor,
                lam: float, *, score_greedy: Callable, policy: Any, eos_ids: Any, generator: torch.Generator | None,
                cfg_scale: float, block_len: int) -> SpgBuffer:
        comp = completion_mask(traj.completion_ids, eos_ids)  # (B, G)
        comp_len = comp.long().sum(1)  # (B,) >= 1: position 0 always counts
        gen_len = traj.completion_ids.shape[1]
        inputs = []
        for _ in range(cfg.mu):  # fresh masks for each inner iteration
            masks, clean = block_masks(comp_len, gen_len, block_len, cfg.mc_samples, generator)
            inputs.append(noisy_inputs(traj, masks, clean, comp, cfg.p_mask_prompt, policy.mask_id, generator))
        adv = _group_advantage(rewards, group_ids)
        return SpgBuffer(traj, torch.stack(inputs), comp, adv, cfg.eubo_beta, cfg.mix_weight,
                         {"completion_tokens": float(comp_len.float().mean())})

    def loss(self, buf: SpgBuffer, u: int, *, policy: Any, reference: Callable | None, loss_cfg: LossConfig,
             cfg_scale: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        x = buf.inputs[u % buf.inputs.shape[0]]  # (B, K, L)
        tok = masked_token_logp(policy, buf.traj, x, cfg_scale=cfg_scale)  # (B, K, G)
        masked = x[:, :, buf.traj.prompt_len:] == policy.mask_id  # (B, K, G)
        lower = elbo(tok, masked, buf.comp)
        upper = eubo(tok, masked, buf.comp, buf.eubo_beta)
        loss, m = spg_loss(sandwich_logp(lower, upper, buf.adv, buf.mix_weight), buf.adv, buf.comp.sum(1))
        m.update(elbo=lower.detach().mean(), eubo=upper.detach().mean())
        return loss, m


# ---------------------------------------------------------------------------------------------- d2-StepMerge
@dataclass
class D2Buffer:
    traj: Trajectory
    bounds: Tensor
    """(N + 1,) step boundaries of the groups."""
    groups: Tensor
    """(B, G) the group that revealed each completion position."""
    drops: Tensor
    """(μ, B, L) bool: prompt tokens masked in each inner iteration."""
    comp: Tensor
    """(B, G) bool: completion up to and including the first EOS."""
    adv: Tensor
    """(B,) advantages."""
    old_logp: Tensor | None
    """(μ, N, B, G) per-token log-probabilities right after the rollout (None when μ = 1: ratio 1)."""
    metrics: dict[str, float] = field(default_factory=dict)


class D2Objective:
    def units(self, cfg: Any) -> int:
        return cfg.merge_groups * cfg.mu

    def plan(self, cfg: Any, batch: int, total_steps: int, generator: torch.Generator | None, device: torch.device):
        if cfg.merge_groups > total_steps:
            raise ConfigError(f"--merge-groups {cfg.merge_groups} is more than --steps {total_steps}: every group "
                              f"needs at least one denoising step; pick at most {total_steps}")
        return None

    def prepare(self, method: Method, cfg: Any, traj: Trajectory, plan: Any, rewards: Tensor, group_ids: Tensor,
                lam: float, *, score_greedy: Callable, policy: Any, eos_ids: Any, generator: torch.Generator | None,
                cfg_scale: float, block_len: int) -> D2Buffer:
        bounds = group_bounds(traj.num_steps, cfg.merge_groups)
        groups = step_groups(traj.unmask_step, bounds)[:, traj.prompt_len:]  # (B, G)
        drops = draw_prompt_drops(traj, cfg.mu, cfg.p_mask_prompt, generator)  # (μ, B, L)
        comp = completion_mask(traj.completion_ids, eos_ids)
        old = None
        if cfg.mu > 1:
            old = torch.stack([torch.stack([group_token_logp(policy, traj, int(bounds[n]), d, cfg_scale=cfg_scale)[0]
                                            for n in range(cfg.merge_groups)]) for d in drops])
        return D2Buffer(traj, bounds, groups, drops, comp, _group_advantage(rewards, group_ids), old,
                        {"completion_tokens": float(comp.float().sum(1).mean())})

    def loss(self, buf: D2Buffer, u: int, *, policy: Any, reference: Callable | None, loss_cfg: LossConfig,
             cfg_scale: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        n_groups = buf.bounds.shape[0] - 1
        n, i = u % n_groups, (u // n_groups) % buf.drops.shape[0]  # groups fastest, as d2's step counter
        start, drop = int(buf.bounds[n]), buf.drops[i]
        exact = loss_cfg.kl == "exact" and loss_cfg.beta > 0
        new, new_full = group_token_logp(policy, buf.traj, start, drop, cfg_scale=cfg_scale, full=exact)  # (B, G)
        old = buf.old_logp[i, n] if buf.old_logp is not None else new.detach()
        kl = None
        if loss_cfg.beta > 0 and reference is not None:
            ref, ref_full = reference(lambda m: group_token_logp(m, buf.traj, start, drop, cfg_scale=cfg_scale,
                                                                 full=exact))
            kl = exact_kl(new_full, ref_full) if exact else k3_kl(new, ref)
        return d2_group_loss(new, old, buf.adv, buf.groups == n, buf.comp, n_groups, loss_cfg.epsilon,
                             loss_cfg.epsilon_high, beta=loss_cfg.beta, kl=kl)


# ---------------------------------------------------------------------------------------------- methods
WD1 = Method(
    name="wd1",
    summary="ratio-free weighted likelihood: −Σ softmax(ψA) l + Σ softmax(−ψA) l, d1's one-step l",
    paper="wd1, arXiv 2507.08838 (github.com/xiaohangt/wd1)",
    objective=Wd1Objective(),
    defaults={"lam": 0.0, "beta": 0.0, "mu": 12},
    fixed={"lam": 0.0, "beta": 0.0, "epsilon": None, "epsilon_high": None},  # no ratio, so nothing to clip
)

SPG = Method(
    name="spg",
    summary="sandwiched policy gradient: ELBO for A > 0, ω EUBO + (1 − ω) ELBO for A <= 0, block-wise masks",
    paper="SPG, arXiv 2510.09541 (github.com/facebookresearch/SPG)",
    objective=SpgObjective(),
    defaults={"lam": 0.0, "beta": 0.0, "mu": 4},
    fixed={"lam": 0.0, "beta": 0.0, "epsilon": None, "epsilon_high": None},
)

D2_STEPMERGE = Method(
    name="d2-stepmerge",
    summary="trajectory likelihood from N groups of consecutive steps, one forward each, clipped per token",
    paper="d2, arXiv 2509.21474 (github.com/kuleshov-group/d2)",
    objective=D2Objective(),
    defaults={"lam": 0.0, "epsilon": 0.5, "epsilon_high": 0.5, "mu": 12},
    fixed={"lam": 0.0},
)
