"""diffu-GRPO (d1), the baseline: one-step per-token log-probabilities with random prompt masking.

Per rollout: draw μ prompt masks (each real prompt token masked with probability p = 0.15, a
fresh mask per inner iteration); the completion is fully masked; one forward gives every
completion token's log-probability. Advantage r − group mean (no std), token-level clipped loss
over the completion up to and including its first EOS, per-token k3 KL. The "old"
log-probabilities are computed right after the rollout with the same masks (d1), when μ > 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection

import torch
from torch import Tensor

from dllmrl.config import SamplerConfig
from dllmrl.methods import LossOutput, Method, Plan, Reference, Rollout
from dllmrl.methods.advantages import advantages
from dllmrl.methods.logp import completion_token_logp, draw_prompt_drops
from dllmrl.methods.losses import exact_kl, k3_kl, loss_config, token_policy_loss
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.training.train_config import TrainConfig


def completion_mask(completion_ids: Tensor, eos_ids: Collection[int]) -> Tensor:
    """(B, G) ids -> (B, G) bool: positions up to and including the first EOS / end-of-turn token."""
    eos = torch.as_tensor(sorted(eos_ids), dtype=torch.long, device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos)
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()  # EOS tokens strictly before each position
    return before == 0


@dataclass
class TokenBuffer:
    traj: Trajectory
    drops: Tensor
    """(μ, B, L) bool: prompt tokens masked in each inner iteration."""
    mask: Tensor
    """(B, G) bool: completion tokens in the loss."""
    adv: Tensor
    """(B, 1) advantages."""
    old_logp: Tensor | None
    """(μ, B, G) per-token log-probabilities right after the rollout (None when μ = 1: ratio 1)."""
    metrics: dict[str, float] = field(default_factory=dict)


class TokenObjective:
    buffer_type = TokenBuffer

    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig):
        self.mu, self.p_mask_prompt, self.cfg_scale = cfg.mu, cfg.p_mask_prompt, scfg.cfg_scale
        self.loss_cfg = loss_config(cfg, scfg)

    def plan(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device) -> Plan:
        return Plan()  # no greedy completions, no step selection

    def prepare(self, rollout: Rollout, policy: ModelAdapter, generator: torch.Generator | None) -> TokenBuffer:
        traj = rollout.traj
        drops = draw_prompt_drops(traj, self.mu, self.p_mask_prompt, generator)  # (μ, B, L)
        mask = completion_mask(traj.completion_ids, rollout.eos_ids)  # (B, G)
        adv = advantages(rollout.rewards, None, rollout.group_ids, 0.0, k=1)  # (B, 1)
        old = None
        if self.mu > 1:
            with torch.no_grad():
                old = torch.stack([completion_token_logp(policy, traj, d, cfg_scale=self.cfg_scale)[0] for d in drops])
        return TokenBuffer(traj=traj, drops=drops, mask=mask, adv=adv, old_logp=old,
                           metrics={"completion_tokens": float(mask.float().sum(1).mean())})

    def loss(self, buffer: TokenBuffer, micro: int, policy: ModelAdapter, reference: Reference | None) -> LossOutput:
        buf, lc = buffer, self.loss_cfg
        drop = buf.drops[micro % buf.drops.shape[0]]
        exact = lc.kl == "exact" and lc.beta > 0

        def logp(model: ModelAdapter):
            return completion_token_logp(model, buf.traj, drop, cfg_scale=self.cfg_scale, full=exact)

        new, new_full = logp(policy)  # (B, G)
        old = buf.old_logp[micro % buf.old_logp.shape[0]] if buf.old_logp is not None else new.detach()
        kl = None
        if lc.beta > 0 and reference is not None:
            ref, ref_full = reference(logp)
            kl = exact_kl(new_full, ref_full) if exact else k3_kl(new, ref)
        return token_policy_loss(new, old, buf.adv[:, 0], buf.mask, lc, kl=kl)


DIFFU_GRPO = Method(
    name="diffu-grpo",
    summary="d1 baseline: random prompt masking, one-step per-token log-probabilities, μ inner iterations",
    paper="d1 (diffu-GRPO), arXiv 2504.12216 (github.com/dllm-reasoning/d1)",
    build=TokenObjective,
    units=lambda cfg: cfg.mu,
    stepwise=False,
    defaults={"epsilon": 0.5, "epsilon_high": 0.5, "lam": 0.0, "mu": 12},
    fixed={"lam": 0.0},
)
