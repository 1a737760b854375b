"""Paired comparisons of evaluation runs: is a trained model better than its base on the same test examples?

    base = {"test-0": 1.0, "test-1": 0.0, ...}                 # example id -> score (1/0 for correct)
    runs = [{"test-0": 1.0, ...}, {"test-0": 0.0, ...}]         # one mapping per seed
    b, r = paired_by_id(base, runs)
    ci = paired_bootstrap(b, r, n=10_000, seed=0)               # ci.diff, ci.low, ci.high

The bootstrap resamples test examples (the same draw for the base and every seed, so each run's
score stays paired with the base's score on the same example) and, with several seeds, averages the
seeds' differences within each resample: the interval covers the test-set sampling error of the
seed-averaged difference. It does not widen for seed-to-seed variation beyond what those seeds show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from dllmrl.errors import DataError


@dataclass(frozen=True)
class PairedInterval:
    diff: float
    """Mean over seeds of (run mean - base mean) on the full test set."""
    low: float
    high: float
    """The percentile interval of the resampled differences at ``level``."""
    level: float
    n_examples: int
    n_seeds: int


def paired_by_id(base: Mapping[str, float], runs: Sequence[Mapping[str, float]]) -> tuple[list[float], list[list[float]]]:
    """Align the base's and every run's scores on the base's example ids (each run must score the same ids)."""
    ids = sorted(base)
    for i, run in enumerate(runs):
        if set(run) != set(base):
            missing, extra = len(set(base) - set(run)), len(set(run) - set(base))
            raise DataError(f"run {i} scored different examples than the base ({missing} missing, {extra} extra); "
                            "evaluate both on the same split without a different --limit")
    return [float(base[k]) for k in ids], [[float(run[k]) for k in ids] for run in runs]


def paired_bootstrap(base_correct: Sequence[float], run_correct_by_seed: Sequence[Sequence[float]], *,
                     n: int = 10_000, seed: int = 0, level: float = 0.95) -> PairedInterval:
    """Seed-averaged paired difference run - base with a bootstrap interval over test examples."""
    base = np.asarray(base_correct, dtype=np.float64)  # (E,)
    runs = np.asarray(run_correct_by_seed, dtype=np.float64)  # (S, E)
    if runs.ndim != 2 or runs.shape[1] != base.shape[0] or base.shape[0] == 0:
        raise DataError(f"paired_bootstrap needs (E,) base scores and (seeds, E) run scores with E > 0; got "
                        f"{base.shape} and {runs.shape}")
    d = runs.mean(0) - base  # (E,): seeds averaged per example, so one draw of examples serves every seed
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.shape[0], size=(n, d.shape[0]))  # (n, E)
    draws = d[idx].mean(1)  # (n,)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return PairedInterval(diff=float(d.mean()), low=float(low), high=float(high), level=level,
                          n_examples=int(d.shape[0]), n_seeds=int(runs.shape[0]))
