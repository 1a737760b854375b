"""Policy losses and KL forms (DESIGN.md EGSPO step 6; diffu-GRPO's token-level loss).

    loss, metrics = policy_loss(logp_new, logp_old, adv, LossConfig(), kl=kl)          # one value per sequence
    loss, metrics = token_policy_loss(logp_new, logp_old, adv, mask, cfg, kl=kl)       # one value per token

The clipped surrogate is PPO's, with separate lower and upper clip edges:
``−min(ρ A, clip(ρ, 1 − ε, 1 + ε_high) A)``, ``ρ = exp(logp_new − logp_old)``. ``clip_ratio`` counts
the samples whose gradient the clipping zeroes: ρ < 1 − ε with A < 0, or ρ > 1 + ε_high with A > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dllmrl.errors import ConfigError

KL_FORMS = ("k3", "exact")
AGGREGATIONS = ("sum", "mean")


@dataclass(frozen=True)
class LossConfig:
    epsilon: float = 0.2
    """Lower clip edge: ρ is clipped at 1 − ε."""
    epsilon_high: float = 0.5
    """Upper clip edge: ρ is clipped at 1 + ε_high."""
    beta: float = 0.04
    """KL coefficient; 0 skips the reference forward."""
    kl: str = "k3"
    """'k3': exp(ref − logp) − (ref − logp) − 1 on the step's log-probability; 'exact': Σ_v p (log p − log ref)."""
    aggregation: str = "sum"
    """How a step's token log-probabilities combine: 'sum' (the reference) or 'mean'."""
    tokens_per_step: float = 1.0
    """With 'sum', the loss is divided by this (gen_len / steps): a per-token scale."""

    def __post_init__(self) -> None:
        if self.kl not in KL_FORMS:
            raise ConfigError(f"--kl must be one of {', '.join(KL_FORMS)}, got '{self.kl}'")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"--aggregation must be one of {', '.join(AGGREGATIONS)}, got '{self.aggregation}'")


def clipped_surrogate(logp_new: Tensor, logp_old: Tensor, adv: Tensor, epsilon: float,
                      epsilon_high: float) -> tuple[Tensor, Tensor, Tensor]:
    """Elementwise −min(ρA, clip(ρ)A); also ρ and the bool mask of clipped (zero-gradient) elements."""
    ratio = torch.exp(logp_new - logp_old)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    loss = -torch.minimum(ratio * adv, clipped_ratio * adv)
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    return loss, ratio, clipped


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k3 estimate of KL(π || π_ref) from one sample: exp(ref − logp) − (ref − logp) − 1 (≥ 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def exact_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """(..., V) log-probabilities of π and π_ref -> (...) Σ_v π_v (log π_v − log π_ref,v)."""
    p = logprobs.exp()
    # where() before the product: a masked-out -inf - -inf would otherwise send NaN into the gradient
    diff = torch.where(p > 0, logprobs - ref_logprobs, torch.zeros_like(p))
    return (p * diff).sum(-1)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def policy_loss(logp_new: Tensor, logp_old: Tensor, adv: Tensor, cfg: LossConfig, *, kl: Tensor | None = None,
                valid: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """(B,) step log-probabilities (new, old), (B,) advantages -> scalar loss averaged over valid sequences.

    ``kl`` (B,) is added with weight β when given; ``valid`` (B,) masks sequences with no step in
    this slot. With sum aggregation the loss is divided by ``cfg.tokens_per_step``.
    """
    valid = torch.ones_like(adv, dtype=torch.bool) if valid is None else valid
    surr, ratio, clipped = clipped_surrogate(logp_new, logp_old.detach(), adv, cfg.epsilon, cfg.epsilon_high)  # (B,)
    per = surr + cfg.beta * kl if (kl is not None and cfg.beta > 0) else surr
    scale = cfg.tokens_per_step if cfg.aggregation == "sum" else 1.0
    loss = _masked_mean(per, valid) / scale
    with torch.no_grad():
        metrics = {
            "clip_ratio": _masked_mean(clipped.float(), valid),
            "ratio": _masked_mean(ratio.detach(), valid),
            "kl": _masked_mean(kl.detach(), valid) / scale if kl is not None else torch.zeros(()),
            "valid": valid.float().mean(),
        }
    return loss, metrics


def token_policy_loss(logp_new: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, cfg: LossConfig, *,
                      kl: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """diffu-GRPO: (B, G) per-token log-probabilities, (B,) advantages, (B, G) completion mask -> scalar
    loss summed over the batch's completion tokens and divided by their number (d1's normalisation)."""
    surr, ratio, clipped = clipped_surrogate(logp_new, logp_old.detach(), adv.unsqueeze(1), cfg.epsilon, cfg.epsilon_high)
    per = surr + cfg.beta * kl if (kl is not None and cfg.beta > 0) else surr
    loss = _masked_mean(per, mask)
    with torch.no_grad():
        metrics = {
            "clip_ratio": _masked_mean(clipped.float(), mask),
            "ratio": _masked_mean(ratio.detach(), mask),
            "kl": _masked_mean(kl.detach(), mask) if kl is not None else torch.zeros(()),
            "valid": mask.float().mean(),
        }
    return loss, metrics
