"""Which denoising steps a rollout trains on (EGSPO step 3: the K steps of highest mean entropy), and the plans that get the
sampler to keep their one-shot greedy completions.

Pure selectors over a finished trajectory, each (B, K) with -1 marking an empty slot:

    entropy_steps(traj, k, eos_limit=False)          # EGSPO: the K highest-entropy steps
    random_steps(traj, k, keys, eos_limit=False)      # ablation: a uniform random K-subset
    uniform_steps(traj, k, eos_limit=False)           # ablation: K evenly spaced steps

With ``eos_limit`` only steps up to the last step that revealed a non-EOS token are eligible.
Steps that revealed nothing (entropy -inf) are never chosen.

EGSPO-SA needs the greedy completion from the state before each selected step, and the
sampler can only keep them while it runs. ``STEP_SELECTORS`` entries therefore build a
``StepPlan``: a keeper passed as the sampler's ``greedy_at`` plus the function that reads the
selected steps off the finished trajectory, so the kept completions and the selection agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from dllmrl.sampling.keepers import FixedSteps, GreedyKeeper, TopEntropySteps, last_non_eos_step, top_k_entropy_steps
from dllmrl.sampling.trajectory import Trajectory

if TYPE_CHECKING:
    from dllmrl.training.train_config import TrainConfig


def _eligible(traj: Trajectory, eos_limit: bool) -> Tensor:
    """(B, T) bool: steps that revealed something and, with the EOS limit, lie at or before the last non-EOS step."""
    ok = torch.isfinite(traj.step_entropy)
    if eos_limit:
        T = traj.num_steps
        steps = torch.arange(T, device=ok.device).expand_as(ok)
        ok &= steps <= last_non_eos_step(traj.step_non_eos).view(-1, 1)
    return ok


def entropy_steps(traj: Trajectory, k: int, *, eos_limit: bool = False) -> Tensor:
    """(B, K) the K steps with the highest recorded mean entropy (ties: earlier step), -1 pads."""
    last = last_non_eos_step(traj.step_non_eos) if eos_limit else None
    return top_k_entropy_steps(traj.step_entropy, k, last)


def random_steps(traj: Trajectory, k: int, keys: Tensor, *, eos_limit: bool = False) -> Tensor:
    """(B, K) a uniform random K-subset of the eligible steps: the top K of i.i.d. ``keys`` (B, T) in [0, 1)."""
    score = torch.where(_eligible(traj, eos_limit), keys.to(traj.step_entropy), torch.full_like(traj.step_entropy, float("-inf")))
    return top_k_entropy_steps(score, k)


def uniform_steps(traj: Trajectory, k: int, *, eos_limit: bool = False) -> Tensor:
    """(B, K) K evenly spaced steps over [0, last] (last = T-1, or the last non-EOS step); -1 where a
    point repeats an earlier one or falls on a step that revealed nothing."""
    B, T = traj.step_entropy.shape
    device = traj.step_entropy.device
    last = last_non_eos_step(traj.step_non_eos).clamp(min=0) if eos_limit else torch.full((B,), T - 1, device=device)
    frac = torch.linspace(0, 1, k, device=device) if k > 1 else torch.zeros(1, device=device)
    steps = torch.round(frac.unsqueeze(0) * last.view(-1, 1).float()).long()  # (B, K)
    repeat = torch.zeros_like(steps, dtype=torch.bool)
    repeat[:, 1:] = steps[:, 1:] == steps[:, :-1]  # sorted, so duplicates are adjacent
    revealed = torch.gather(torch.isfinite(traj.step_entropy), 1, steps)
    return torch.where(repeat | ~revealed, torch.full_like(steps, -1), steps)


@dataclass
class StepPlan:
    """What a selector needs from the sampler (``keeper``) and how it reads the selection afterwards."""

    keeper: GreedyKeeper
    select: Callable[[Trajectory], Tensor]


class _AllSteps(FixedSteps):
    """Keeps every step's greedy completion: O(T x gen_len) token ids per row (no vocabulary)."""

    def __init__(self, total_steps: int):
        super().__init__(list(range(total_steps)))


class _ScoredKeeper:
    """A TopEntropySteps whose score is fixed keys drawn in advance instead of the entropy."""

    def __init__(self, keys: Tensor, k: int, eos_limit: bool):
        self.keys = keys
        self.inner = TopEntropySteps(k, eos_limit)

    def _score(self, t: int, score: Tensor) -> Tensor:
        return torch.where(torch.isfinite(score), self.keys[:, t].to(score), score)

    def start(self, batch: int, gen_len: int, device: torch.device) -> None:
        self.inner.start(batch, gen_len, device)

    def wants(self, t: int, score: Tensor, non_eos: Tensor) -> Tensor:
        return self.inner.wants(t, self._score(t, score), non_eos)

    def update(self, t: int, score: Tensor, non_eos: Tensor, greedy: Tensor | None) -> None:
        self.inner.update(t, self._score(t, score), non_eos, greedy)

    def result(self) -> tuple[Tensor, Tensor]:
        return self.inner.result()


class _ConfigFree:
    """Selectors are built from the training config, ``STEP_SELECTORS.get(name)(cfg)``; these need none of it."""

    def __init__(self, cfg: TrainConfig | None = None) -> None:
        pass


class EntropySelector(_ConfigFree):
    """EGSPO: the K highest-entropy steps; a running top-K keeps only their completions (O(K x gen_len))."""

    def plan(self, batch: int, total_steps: int, k: int, *, eos_limit: bool, generator: torch.Generator | None,
             device: torch.device) -> StepPlan:
        return StepPlan(TopEntropySteps(k, eos_limit), lambda traj: entropy_steps(traj, k, eos_limit=eos_limit))


class RandomSelector(_ConfigFree):
    """Ablation: K distinct steps drawn uniformly per sequence (keys drawn before sampling from the generator)."""

    def plan(self, batch: int, total_steps: int, k: int, *, eos_limit: bool, generator: torch.Generator | None,
             device: torch.device) -> StepPlan:
        keys = torch.rand((batch, total_steps), generator=generator, device=device)
        return StepPlan(_ScoredKeeper(keys, k, eos_limit), lambda traj: random_steps(traj, k, keys, eos_limit=eos_limit))


class UniformSelector(_ConfigFree):
    """Ablation: K evenly spaced steps. Without the EOS limit they are known in advance; with it the
    last non-EOS step is known only at the end, so every step's completion is kept (token ids only)."""

    def plan(self, batch: int, total_steps: int, k: int, *, eos_limit: bool, generator: torch.Generator | None,
             device: torch.device) -> StepPlan:
        def select(traj: Trajectory) -> Tensor:
            return uniform_steps(traj, k, eos_limit=eos_limit)

        if eos_limit:
            return StepPlan(_AllSteps(total_steps), select)
        frac = torch.linspace(0, 1, k) if k > 1 else torch.zeros(1)
        fixed = torch.round(frac * (total_steps - 1)).long().unique()
        return StepPlan(FixedSteps(fixed.tolist()), select)

