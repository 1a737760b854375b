"""Rollout plumbing for the trainer: which prompts a process draws, scoring completions, quick eval.

    feed = PromptFeed(len(examples), seed=0)
    idx = feed.indices(start, count)               # deterministic, reshuffled each epoch
    scorer = Scorer(task, workers=4)
    scores = scorer.score(examples, responses)     # weighted reward, each reward by name, correct
    correct, n = quick_eval(adapter, task, examples, scfg, prefill=..., batch_size=8)

Data position is a single integer shared by all processes (process r of n takes prompts
``start + r * count ...``), so it is the only data state a checkpoint needs.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from dllmrl.config import SamplerConfig
from dllmrl.errors import ConfigError
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.sampler import sample

log = logging.getLogger(__name__)


class PromptFeed:
    """Global prompt position -> example index: a fresh permutation of the split every epoch."""

    def __init__(self, size: int, seed: int):
        if size <= 0:
            raise ValueError("the training split is empty")
        self.size = size
        self.seed = seed
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}  # keep memory bounded
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms[epoch] = torch.randperm(self.size, generator=g)
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> list[int]:
        return [int(self._perm(p // self.size)[p % self.size]) for p in range(start, start + count)]


@dataclass(frozen=True)
class Score:
    total: float
    """Weighted sum of the task's rewards (the training reward)."""
    parts: dict[str, float]
    """Each reward function's value, unweighted."""
    correct: bool
    """task.verify."""


class Scorer:
    """Scores responses with the task's rewards and verifier, in a thread pool, with a per-rollout cache."""

    def __init__(self, task: Any, workers: int = 1, weights: Mapping[str, float] | None = None):
        self.task = task
        self.workers = workers
        names = set(task.rewards())
        unknown = sorted(set(weights or {}) - names)
        if unknown:
            raise ConfigError(f"--reward-weight names unknown reward(s) {', '.join(unknown)}; "
                              f"task '{task.name}' has: {', '.join(sorted(names))}")
        self.weights = dict(weights or {})
        self._pool: ThreadPoolExecutor | None = None
        self._cache: dict[tuple[str, str], Score] = {}
        self.seconds = 0.0

    def _one(self, ex: Any, response: str) -> Score:
        rewards = self.task.rewards()
        parts = {name: float(fn(ex, response)) for name, (fn, _w) in rewards.items()}
        total = sum(parts[n] * self.weights.get(n, w) for n, (_f, w) in rewards.items())
        return Score(total, parts, bool(self.task.verify(ex, response)))

    def score(self, examples: Sequence[Any], responses: Sequence[str]) -> list[Score]:
        t0 = time.perf_counter()
        keys = [(str(ex.id), r) for ex, r in zip(examples, responses)]
        todo = {k: (ex, r) for k, ex, r in zip(keys, examples, responses) if k not in self._cache}
        if todo:
            items = list(todo.items())
            if self.workers > 1 and len(items) > 1:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="reward")
                results = list(self._pool.map(lambda kv: self._one(*kv[1]), items))
            else:
                results = [self._one(*v) for _, v in items]
            self._cache.update({k: s for (k, _), s in zip(items, results)})
        out = [self._cache[k] for k in keys]
        self.seconds += time.perf_counter() - t0
        return out

    def new_rollout(self) -> None:
        self._cache.clear()
        self.seconds = 0.0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def response_prefix(task: Any, prompt_style: str) -> str:
    """The prefill of a prompt style: model input, and the start of the response that rewards see."""
    return task.prefill_for(prompt_style)


def encode_prompts(adapter: ModelAdapter, examples: Sequence[Any], *, prefill: str, chat: bool,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    texts = [adapter.render_prompt(ex.prompt, chat=chat, prefill=prefill) for ex in examples]
    return adapter.encode(texts, device)


@torch.no_grad()
def quick_eval(adapter: ModelAdapter, task: Any, examples: Sequence[Any], scfg: SamplerConfig, *, prefill: str,
               chat: bool, batch_size: int, seed: int = 0) -> tuple[int, int]:
    """Greedy (temperature 0) accuracy on ``examples``: (number correct, number seen)."""
    greedy = replace(scfg, temperature=0.0)
    gen = torch.Generator(device=adapter.device).manual_seed(seed)  # own generator: training's stays untouched
    correct = 0
    was_training = adapter.model.training
    adapter.model.eval()
    try:
        for i in range(0, len(examples), batch_size):
            chunk = [examples[j] for j in range(i, min(i + batch_size, len(examples)))]
            ids, attn = encode_prompts(adapter, chunk, prefill=prefill, chat=chat, device=adapter.device)
            traj = sample(adapter, ids, attn, greedy, generator=gen)
            for ex, row in zip(chunk, traj.completion_ids):
                correct += int(bool(task.verify(ex, prefill + adapter.decode_completion(row))))
    finally:
        adapter.model.train(was_training)
    return correct, len(examples)


def quick_accuracy(acc: Any, adapter: ModelAdapter, task: Any, *, split: str | None, limit: int, prompt_style: str,
                   scfg: SamplerConfig, chat: bool, batch_size: int, seed: int) -> float:
    """Held-out greedy accuracy over the first ``limit`` examples of ``split`` (default: 'validation' when
    the task has one, else 'test'), shared across processes; every process calls it."""
    split = split or ("validation" if "validation" in task.splits() else "test")
    exs = task.load(split, prompt_style=prompt_style)
    n = min(limit, len(exs))
    mine = [exs[i] for i in range(acc.process_index, n, acc.num_processes)]
    correct, seen = quick_eval(adapter, task, mine, scfg, prefill=response_prefix(task, prompt_style), chat=chat,
                               batch_size=batch_size, seed=seed)
    t = torch.tensor([correct, seen], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        t = acc.reduce(t, reduction="sum")
    return float(t[0] / t[1].clamp(min=1))
