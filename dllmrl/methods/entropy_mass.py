"""Adaptive step count for EGSPO and EGSPO-SA: ``--select entropy-mass --entropy-mass 0.7``.

OUR OWN definition, not the EGSPO authors' (they are working on an entropy-adaptive variant of
their own; this rule is not theirs and no number of theirs should be attributed to it). Per
sequence, rank the steps by recorded entropy (highest first, ties to the earlier step, steps that
revealed nothing never count, and with ``--eos-limit`` only steps up to the last non-EOS step)
and keep the fewest of them whose entropies add up to at least the fraction f of the sequence's
total entropy over those steps:

    K_b = min { K : Σ_{k < K} H_b(t_(k)) >= f · Σ_t H_b(t) },  at least 1, at most --k-steps

so a sequence whose uncertainty sits in a few steps trains on few steps, and a diffuse one on
many. ``--k-steps`` caps K_b and sets the number of micro-steps per rollout (the trainer fixes
it in advance); row b fills slots 0..K_b − 1 and the rest are empty (-1), so micro-step k
batches every sequence that still has a k-th step and masks the others out of the loss.

    steps = entropy_mass_steps(traj.step_entropy, mass=0.7, cap=8)        # (B, 8), -1 pads

Tests: tests/test_methods_baselines.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dllmrl.methods.selection import StepPlan
from dllmrl.sampling.keepers import TopEntropySteps, last_non_eos_step, top_k_entropy_steps
from dllmrl.sampling.trajectory import Trajectory

if TYPE_CHECKING:
    from dllmrl.training.train_config import TrainConfig


def entropy_mass_steps(step_entropy: Tensor, mass: float, cap: int, last_step: Tensor | None = None) -> Tensor:
    """(B, T) entropies (-inf: nothing revealed) -> (B, cap) the fewest top-entropy steps holding ``mass`` of
    the total, highest first; -1 pads. ``last_step`` (B,) limits the choice to steps <= last_step."""
    B, T = step_entropy.shape
    ranked = top_k_entropy_steps(step_entropy, T, last_step)  # (B, T) all eligible steps, best first
    valid = ranked >= 0
    h = torch.gather(step_entropy, 1, ranked.clamp(min=0)).double()
    h = torch.where(valid, h, torch.zeros_like(h))  # (B, T)
    target = mass * h.sum(1, keepdim=True)  # (B, 1)
    before = torch.cumsum(h, 1) - h  # (B, T) entropy of the better-ranked steps
    first = torch.arange(T, device=h.device).unsqueeze(0) == 0
    # slot k is needed while the steps before it fall short of the target (slack for rounding)
    keep = valid & (first | (before < target - 1e-9 * target.abs()))
    chosen = torch.where(keep, ranked, torch.full_like(ranked, -1))[:, :cap]
    if cap > T:
        chosen = torch.cat([chosen, chosen.new_full((B, cap - T), -1)], 1)
    return chosen


class EntropyMassSelector:
    """``--select entropy-mass``: a running top-``k_steps`` keeper (a superset of what the rule keeps, since
    the kept steps are a prefix of the entropy ranking) and the mass rule read off the finished trajectory."""

    def __init__(self, cfg: TrainConfig):
        self.mass = float(cfg.entropy_mass)

    def plan(self, batch: int, total_steps: int, k: int, *, eos_limit: bool, generator: torch.Generator | None,
             device: torch.device) -> StepPlan:
        def select(traj: Trajectory) -> Tensor:
            last = last_non_eos_step(traj.step_non_eos) if eos_limit else None
            return entropy_mass_steps(traj.step_entropy, self.mass, k, last)

        return StepPlan(TopEntropySteps(k, eos_limit), select)
