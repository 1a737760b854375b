"""Compute accounting: how many model forward and backward passes a training run has spent.

    counter = ForwardCounter(model.get_input_embeddings())   # every pass embeds its ids first (a pre-hook)
    with counter.phase("rollout"): sample(...)
    with counter.excluded(): quick_eval(...)
    counter.totals()   # {"forwards": ..., "backwards": ..., "forwards_rollout": ..., "eval_forwards": ...}

Units (what every metrics.jsonl row reports, cumulative since the run's start, over resumes):

- ``forwards``: forward passes over one sequence (prompt + completion). A call of the model on a
  (B, L) batch adds B. So a rollout of B sequences with T denoising steps adds B x T (2 B x T with
  classifier-free guidance, which runs the unconditional copy too); a micro-step over the batch adds
  B; SPG's K masked copies add B x K; d2's N group forwards add B x N; a reference-model forward
  (β > 0) and the no-grad "old" log-probabilities (diffu-GRPO / d2 with μ > 1) add B each time.
  The one-shot greedy completions EGSPO-SA keeps are argmaxes of the denoising forward's logits and
  cost no pass.
- ``backwards``: backward passes over one sequence: the sequences of the forwards that ran with
  gradients enabled (the trainer back-propagates every such loss once).
- ``forwards_rollout``: the part of ``forwards`` spent sampling the rollouts.
- ``eval_forwards``: forwards of the quick held-out evaluation (``--eval-every``), kept out of
  ``forwards``.

Counting at the input embedding (not by method) means every method, present or future, is counted
the same way, whatever its objective runs: every pass embeds its ids first, whether it is the family's
whole forward, the trunk of the hidden-states/head split, or a cached window of a block (B sequences
each). Counts are per process; the trainer reports their sum over
processes.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping

import torch


@dataclass
class ComputeTotals:
    forwards: int = 0
    backwards: int = 0
    forwards_rollout: int = 0
    eval_forwards: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> "ComputeTotals":
        return cls(**{k: int(saved[k]) for k in asdict(cls()) if k in saved})


class ForwardCounter:
    """Counts the sequences of every forward of ``module`` (a forward pre-hook), by phase."""

    def __init__(self, module: torch.nn.Module):
        self.totals = ComputeTotals()
        self._phase = "train"
        self._handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        n = int(ids.shape[0])
        t = self.totals
        if self._phase == "eval":
            t.eval_forwards += n
            return
        t.forwards += n
        if self._phase == "rollout":
            t.forwards_rollout += n
        if torch.is_grad_enabled():
            t.backwards += n

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute the forwards inside to ``name``: "rollout", "eval" (kept out of ``forwards``) or "train"."""
        before, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = before

    def excluded(self) -> contextlib.AbstractContextManager[None]:
        return self.phase("eval")

    def remove(self) -> None:
        self._handle.remove()
