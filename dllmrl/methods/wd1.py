"""wd1: ratio-free weighted likelihood ("wd1: Weighted Policy Optimization for Diffusion Language Models
Reasoning", arXiv 2507.08838; public code github.com/xiaohangt/wd1,
``RevDiffuGRPOTrainer.compute_loss`` in ``wd1/trainers/rev_grpo_trainer.py``, run as ``--trainer_type wll_d1_neg``).

The maths, per group of G completions of one prompt:

    A_i   = r_i − mean_group(r)                       (no division by the std)
    w⁺_i  = softmax_group(ψ A)_i,   w⁻_i = softmax_group(−ψ A)_i
    l_i   = Σ_{j in o_i} log p_θ(o_ij | masked prompt, fully masked completion)   (d1's one-step estimate)
    loss  = −Σ_i w⁺_i l_i + Σ_i w⁻_i l_i

No ratio, no clipping, no KL (the shipped trainer has none). ``l_i`` is d1's estimator: the
completion fully masked, each real prompt token masked with probability p (0.15), one forward,
per-token log-probabilities summed over the completion up to and including its first EOS; a
fresh prompt mask for each of the μ inner iterations. wd1's code takes the softmax over the
per-device micro-batch, which its scripts make exactly one group (6 completions); here the
softmax is per group and the loss is the mean over the groups of the batch, which is what wd1's
gradient accumulation over one-group micro-batches averages to. ψ = 1 reproduces the code.

A group whose rewards are all equal has w⁺ = w⁻ = 1/G, so its loss and gradient are exactly 0.

    w_pos, w_neg = wd1_weights(adv, group_ids, psi=1.0)
    loss, metrics = wd1_loss(sequence_logp(token_logp, mask), w_pos, w_neg, group_ids)

Tests: tests/test_methods_baselines.py.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _dense_groups(group_ids: Tensor) -> tuple[Tensor, int]:
    _, inv = torch.unique(group_ids, return_inverse=True)  # (B,) ids 0..n-1
    return inv, int(inv.max()) + 1


def group_softmax(x: Tensor, group_ids: Tensor) -> Tensor:
    """(B,) scores, (B,) group ids -> (B,) softmax of the scores within each row's group."""
    inv, n = _dense_groups(group_ids)
    x = x.float()
    peak = torch.full((n,), float("-inf"), device=x.device).scatter_reduce(0, inv, x, "amax")  # (n,)
    e = torch.exp(x - peak[inv])  # (B,) shifted by the group max: no overflow
    total = torch.zeros(n, device=x.device).index_add(0, inv, e)  # (n,)
    return e / total[inv]


def wd1_weights(adv: Tensor, group_ids: Tensor, psi: float = 1.0) -> tuple[Tensor, Tensor]:
    """(B,) advantages -> (w⁺, w⁻), each (B,): softmax_group(ψA) and softmax_group(−ψA)."""
    return group_softmax(psi * adv, group_ids), group_softmax(-psi * adv, group_ids)


def sequence_logp(token_logp: Tensor, mask: Tensor) -> Tensor:
    """(B, G) per-token log-probabilities, (B, G) bool completion mask -> (B,) their sum l_i."""
    return (token_logp * mask.to(token_logp.dtype)).sum(1)


def wd1_loss(seq_logp: Tensor, w_pos: Tensor, w_neg: Tensor, group_ids: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """(B,) l_i and weights -> mean over groups of −Σ w⁺ l + Σ w⁻ l, and metrics."""
    _, n = _dense_groups(group_ids)
    per = (w_neg - w_pos).detach() * seq_logp  # (B,) the weights are constants of the rollout
    loss = per.sum() / n
    with torch.no_grad():
        metrics = {"seq_logp": seq_logp.detach().mean(), "weight_max": w_pos.max()}
    return loss, metrics
