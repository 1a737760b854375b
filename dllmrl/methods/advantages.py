"""Advantages (EGSPO step 4) and the λ schedule.

    A = advantages(rewards, None, group_ids, lam=0.0, normalise=True, k=K)        # EGSPO, diffu-GRPO
    A = advantages(rewards, greedy_rewards, group_ids, lam=1.0, normalise=True)    # EGSPO-SA

EGSPO-SA's return for the k-th selected step mixes the final reward r with the stepwise gain
over the one-shot greedy completion r̂_k from the state before that step:

    R_k = (r + λ (r − r̂_k)) / (1 + λ)        (the division is the "normalise" option)
    A_k = R_k − mean_group(R_k)               (per k, across the group; no division by the std)

The group mean is taken per rank k across the group's sequences, although their k-th steps are
different denoising steps: the reference's choice.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_mean(x: Tensor, group_ids: Tensor) -> Tensor:
    """(B, ...) values, (B,) group ids -> (B, ...) the mean over the rows of each row's group."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # (B,) dense ids 0..n_groups-1
    onehot = torch.nn.functional.one_hot(inv, int(inv.max()) + 1).to(x.dtype)  # (B, n_groups)
    flat = x.reshape(x.shape[0], -1)  # (B, D)
    sums = onehot.T @ flat  # (n_groups, D)
    counts = onehot.sum(0).unsqueeze(1)  # (n_groups, 1)
    return (onehot @ (sums / counts)).reshape(x.shape)


def stepwise_returns(rewards: Tensor, greedy_rewards: Tensor, lam: float, normalise: bool = True) -> Tensor:
    """(B,) r, (B, K) r̂ -> (B, K) R = r + λ (r − r̂), divided by (1 + λ) when normalising.

    A NaN in ``greedy_rewards`` marks a slot with no greedy completion (no step selected there):
    it is treated as r̂ = r, so its return is the plain final reward (and the trainer masks it anyway).
    """
    r = rewards.unsqueeze(1)  # (B, 1)
    g = torch.where(torch.isnan(greedy_rewards), r.expand_as(greedy_rewards), greedy_rewards)  # (B, K)
    ret = r + lam * (r - g)
    return ret / (1.0 + lam) if normalise else ret


def advantages(rewards: Tensor, greedy_rewards: Tensor | None, group_ids: Tensor, lam: float = 0.0,
               normalise: bool = True, *, k: int | None = None) -> Tensor:
    """(B,) final rewards, (B, K) greedy rewards or None, (B,) group ids -> (B, K) advantages.

    Without greedy rewards (or with λ = 0) every slot gets r − mean_group(r); ``k`` sets K then (default 1).
    """
    rewards = rewards.float()
    if greedy_rewards is None or lam == 0:
        width = k if k is not None else (greedy_rewards.shape[1] if greedy_rewards is not None else 1)
        ret = rewards.unsqueeze(1).expand(-1, width)  # (B, K)
    else:
        ret = stepwise_returns(rewards, greedy_rewards.float(), lam, normalise)  # (B, K)
    return ret - group_mean(ret, group_ids)


def lambda_at(step: int, lam: float, halve_every: int = 0) -> float:
    """λ after ``step`` optimizer steps: constant, or halved every ``halve_every`` steps (λ, λ/2, λ/4, ...)."""
    if halve_every and halve_every > 0:
        return lam * 0.5 ** (step // halve_every)
    return lam
