"""diffu-GRPO (d1), the baseline: one-step per-token log-probabilities with random prompt masking.

Per rollout: draw μ prompt masks (each real prompt token masked with probability p = 0.15, a
fresh mask per inner iteration); the completion is fully masked; one forward gives every
completion token's log-probability. Advantage r − group mean (no std), token-level clipped loss
over the completion up to and including its first EOS, per-token k3 KL. The "old"
log-probabilities are computed right after the rollout with the same masks (d1), when μ > 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from dllmrl.sampling.trajectory import Trajectory
from dllmrl.methods import Method
from dllmrl.methods.advantages import advantages
from dllmrl.methods.logp import completion_token_logp, draw_prompt_drops
from dllmrl.methods.losses import LossConfig, exact_kl, k3_kl, token_policy_loss


def completion_mask(completion_ids: Tensor, eos_ids: Any) -> Tensor:
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
    def units(self, cfg: Any) -> int:
        return cfg.mu

    def plan(self, cfg: Any, batch: int, total_steps: int, generator: torch.Generator | None, device: torch.device):
        return None  # no greedy completions needed

    def prepare(self, method: Method, cfg: Any, traj: Trajectory, plan: Any, rewards: Tensor, group_ids: Tensor,
                lam: float, *, policy, eos_ids: Any, generator: torch.Generator | None = None, cfg_scale: float = 0.0,
                **_: Any) -> TokenBuffer:
        drops = draw_prompt_drops(traj, cfg.mu, cfg.p_mask_prompt, generator)  # (μ, B, L)
        mask = completion_mask(traj.completion_ids, eos_ids)  # (B, G)
        adv = advantages(rewards, None, group_ids, 0.0, k=1)  # (B, 1)
        old = None
        if cfg.mu > 1:
            with torch.no_grad():
                old = torch.stack([completion_token_logp(policy, traj, d, cfg_scale=cfg_scale)[0] for d in drops])
        return TokenBuffer(traj=traj, drops=drops, mask=mask, adv=adv, old_logp=old,
                           metrics={"completion_tokens": float(mask.float().sum(1).mean())})

    def loss(self, buf: TokenBuffer, u: int, *, policy, reference: Callable | None, loss_cfg: LossConfig,
             cfg_scale: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        drop = buf.drops[u % buf.drops.shape[0]]
        exact = loss_cfg.kl == "exact" and loss_cfg.beta > 0
        new, new_full = completion_token_logp(policy, buf.traj, drop, cfg_scale=cfg_scale, full=exact)  # (B, G)
        old = buf.old_logp[u % buf.old_logp.shape[0]] if buf.old_logp is not None else new.detach()
        kl = None
        if loss_cfg.beta > 0 and reference is not None:
            ref, ref_full = reference(lambda m: completion_token_logp(m, buf.traj, drop, cfg_scale=cfg_scale, full=exact))
            kl = exact_kl(new_full, ref_full) if exact else k3_kl(new, ref)
        return token_policy_loss(new, old, buf.adv[:, 0], buf.mask, loss_cfg, kl=kl)


DIFFU_GRPO = Method(
    name="diffu-grpo",
    summary="d1 baseline: random prompt masking, one-step per-token log-probabilities, μ inner iterations",
    objective=TokenObjective(),
    stepwise=False,
    defaults={"epsilon": 0.5, "epsilon_high": 0.5, "lam": 0.0, "mu": 12},
    fixed={"lam": 0.0},
)
