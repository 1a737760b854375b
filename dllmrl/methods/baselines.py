"""The baselines of the EGSPO comparison (wd1, SPG, d2-StepMerge) as methods of the trainer.

Adapters only: the maths lives in ``wd1.py``, ``spg.py`` and ``d2.py``; this module maps a rollout
onto it through the method contract of ``dllmrl.methods`` (an objective built from the resolved
TrainConfig and the training SamplerConfig, with ``buffer_type``, ``plan``, ``prepare`` under
no_grad right after the rollout, and ``loss`` per micro-step). None of them selects steps or keeps
greedy completions, so each plan is empty. Each ``prepare`` draws all the rollout's randomness
(prompt masks, SPG's block masks) from the trainer's generator into its buffer, a dataclass of
tensors and the trajectory, so a checkpoint taken between micro-steps replays exactly.

    wd1            μ micro-steps: d1 one-step log-likelihood, softmax(±ψA) weights, no ratio
    spg            μ micro-steps: K block-wise masks each, ELBO for A > 0, EUBO / mixture for A <= 0
    d2-stepmerge   N × μ micro-steps: one per group of consecutive denoising steps, clipped per token
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dllmrl.config import SamplerConfig
from dllmrl.errors import ConfigError
from dllmrl.methods import LossOutput, Method, Plan, Reference, Rollout
from dllmrl.methods.advantages import advantages
from dllmrl.methods.d2 import d2_group_loss, group_bounds, group_token_logp, step_groups
from dllmrl.methods.logp import completion_token_logp, draw_prompt_drops
from dllmrl.methods.losses import exact_kl, k3_kl, loss_config
from dllmrl.methods.spg import (
    block_masks, elbo, eubo, masked_token_logp, noisy_inputs, sandwich_logp, spg_loss,
)
from dllmrl.methods.tokens import completion_mask
from dllmrl.methods.wd1 import sequence_logp, wd1_loss, wd1_weights
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.training.train_config import TrainConfig


def _group_advantage(rollout: Rollout) -> Tensor:
    """(B,) A = r − mean_group(r), no std: all three baselines."""
    return advantages(rollout.rewards, None, rollout.group_ids, 0.0, k=1)[:, 0]


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
    """(B,) the prompt of each row (the loss averages over groups)."""
    metrics: dict[str, float] = field(default_factory=dict)


class Wd1Objective:
    buffer_type = Wd1Buffer

    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig):
        self.mu, self.p_mask_prompt, self.psi, self.cfg_scale = cfg.mu, cfg.p_mask_prompt, cfg.psi, scfg.cfg_scale

    def plan(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device) -> Plan:
        return Plan()

    def prepare(self, rollout: Rollout, policy: ModelAdapter, generator: torch.Generator | None) -> Wd1Buffer:
        traj = rollout.traj
        drops = draw_prompt_drops(traj, self.mu, self.p_mask_prompt, generator)  # (μ, B, L)
        mask = completion_mask(traj.completion_ids, rollout.eos_ids)  # (B, G)
        w_pos, w_neg = wd1_weights(_group_advantage(rollout), rollout.group_ids, self.psi)
        return Wd1Buffer(traj=traj, drops=drops, mask=mask, w_pos=w_pos, w_neg=w_neg, group_ids=rollout.group_ids,
                         metrics={"completion_tokens": float(mask.float().sum(1).mean())})

    def loss(self, buffer: Wd1Buffer, micro: int, policy: ModelAdapter, reference: Reference | None) -> LossOutput:
        buf = buffer
        tok, _ = completion_token_logp(policy, buf.traj, buf.drops[micro % buf.drops.shape[0]],
                                       cfg_scale=self.cfg_scale)
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
    metrics: dict[str, float] = field(default_factory=dict)


class SpgObjective:
    buffer_type = SpgBuffer

    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig):
        self.mu, self.p_mask_prompt, self.mc_samples = cfg.mu, cfg.p_mask_prompt, cfg.mc_samples
        self.eubo_beta, self.mix_weight = cfg.eubo_beta, cfg.mix_weight
        self.block_len, self.cfg_scale = scfg.block_len, scfg.cfg_scale  # the masks are block-wise, as sampled

    def plan(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device) -> Plan:
        return Plan()

    def prepare(self, rollout: Rollout, policy: ModelAdapter, generator: torch.Generator | None) -> SpgBuffer:
        traj = rollout.traj
        comp = completion_mask(traj.completion_ids, rollout.eos_ids)  # (B, G)
        comp_len = comp.long().sum(1)  # (B,) >= 1: position 0 always counts
        gen_len = traj.completion_ids.shape[1]
        inputs = []
        for _ in range(self.mu):  # fresh masks for each inner iteration
            masks, clean = block_masks(comp_len, gen_len, self.block_len, self.mc_samples, generator)
            inputs.append(noisy_inputs(traj, masks, clean, comp, self.p_mask_prompt, policy.mask_id, generator))
        return SpgBuffer(traj=traj, inputs=torch.stack(inputs), comp=comp, adv=_group_advantage(rollout),
                         metrics={"completion_tokens": float(comp_len.float().mean())})

    def loss(self, buffer: SpgBuffer, micro: int, policy: ModelAdapter, reference: Reference | None) -> LossOutput:
        buf = buffer
        x = buf.inputs[micro % buf.inputs.shape[0]]  # (B, K, L)
        tok = masked_token_logp(policy, buf.traj, x, cfg_scale=self.cfg_scale)  # (B, K, G)
        masked = x[:, :, buf.traj.prompt_len:] == policy.mask_id  # (B, K, G)
        lower = elbo(tok, masked, buf.comp)
        upper = eubo(tok, masked, buf.comp, self.eubo_beta)
        loss, m = spg_loss(sandwich_logp(lower, upper, buf.adv, self.mix_weight), buf.adv, buf.comp.sum(1))
        return loss, {**m, "elbo": lower.detach().mean(), "eubo": upper.detach().mean()}


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
    buffer_type = D2Buffer

    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig):
        if cfg.merge_groups > scfg.steps:
            raise ConfigError(f"--merge-groups {cfg.merge_groups} is more than --steps {scfg.steps}: every group "
                              f"needs at least one denoising step; pick at most {scfg.steps}")
        self.mu, self.p_mask_prompt, self.n_groups = cfg.mu, cfg.p_mask_prompt, cfg.merge_groups
        self.cfg_scale = scfg.cfg_scale
        self.loss_cfg = loss_config(cfg, scfg)

    def plan(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device) -> Plan:
        return Plan()

    def prepare(self, rollout: Rollout, policy: ModelAdapter, generator: torch.Generator | None) -> D2Buffer:
        traj = rollout.traj
        bounds = group_bounds(traj.num_steps, self.n_groups)
        groups = step_groups(traj.unmask_step, bounds)[:, traj.prompt_len:]  # (B, G)
        drops = draw_prompt_drops(traj, self.mu, self.p_mask_prompt, generator)  # (μ, B, L)
        comp = completion_mask(traj.completion_ids, rollout.eos_ids)
        old = None
        if self.mu > 1:
            old = torch.stack([torch.stack([
                group_token_logp(policy, traj, int(bounds[n]), d, cfg_scale=self.cfg_scale)[0]
                for n in range(self.n_groups)]) for d in drops])
        return D2Buffer(traj=traj, bounds=bounds, groups=groups, drops=drops, comp=comp,
                        adv=_group_advantage(rollout), old_logp=old,
                        metrics={"completion_tokens": float(comp.float().sum(1).mean())})

    def loss(self, buffer: D2Buffer, micro: int, policy: ModelAdapter, reference: Reference | None) -> LossOutput:
        buf, lc, n_groups = buffer, self.loss_cfg, self.n_groups
        n, i = micro % n_groups, (micro // n_groups) % buf.drops.shape[0]  # groups fastest, as d2's step counter
        start, drop = int(buf.bounds[n]), buf.drops[i]
        exact = lc.kl == "exact" and lc.beta > 0

        def logp(model: ModelAdapter) -> tuple[Tensor, Tensor | None]:
            return group_token_logp(model, buf.traj, start, drop, cfg_scale=self.cfg_scale, full=exact)

        new, new_full = logp(policy)  # (B, G)
        old = buf.old_logp[i, n] if buf.old_logp is not None else new.detach()
        kl = None
        if lc.beta > 0 and reference is not None:
            ref, ref_full = reference(logp)
            kl = exact_kl(new_full, ref_full) if exact else k3_kl(new, ref)
        return d2_group_loss(new, old, buf.adv, buf.groups == n, buf.comp, n_groups, lc.epsilon, lc.epsilon_high,
                             beta=lc.beta, kl=kl)


# ---------------------------------------------------------------------------------------------- methods
WD1 = Method(
    name="wd1",
    summary="ratio-free weighted likelihood: −Σ softmax(ψA) l + Σ softmax(−ψA) l, d1's one-step l",
    paper="wd1, arXiv 2507.08838 (github.com/xiaohangt/wd1)",
    build=Wd1Objective,
    units=lambda cfg: cfg.mu,
    defaults={"lam": 0.0, "beta": 0.0, "mu": 12},
    fixed={"lam": 0.0, "beta": 0.0, "epsilon": None, "epsilon_high": None},  # no ratio, so nothing to clip
)

SPG = Method(
    name="spg",
    summary="sandwiched policy gradient: ELBO for A > 0, ω EUBO + (1 − ω) ELBO for A <= 0, block-wise masks",
    paper="SPG, arXiv 2510.09541 (github.com/facebookresearch/SPG)",
    build=SpgObjective,
    units=lambda cfg: cfg.mu,
    defaults={"lam": 0.0, "beta": 0.0, "mu": 4},
    fixed={"lam": 0.0, "beta": 0.0, "epsilon": None, "epsilon_high": None},
)

D2_STEPMERGE = Method(
    name="d2-stepmerge",
    summary="trajectory likelihood from N groups of consecutive steps, one forward each, clipped per token",
    paper="d2, arXiv 2509.21474 (github.com/kuleshov-group/d2)",
    build=D2Objective,
    units=lambda cfg: cfg.merge_groups * cfg.mu,
    defaults={"lam": 0.0, "epsilon": 0.5, "epsilon_high": 0.5, "mu": 12},
    fixed={"lam": 0.0},
)
