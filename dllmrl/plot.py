"""Plot a metric against step for several runs, from their ``metrics.jsonl``.

    dllmrl plot runs/sudoku-egspo-sa-s0 runs/sudoku-egspo-s0 --metric reward --out reward.png

Runs sharing a label (the run directory name without a trailing ``-s<seed>``) are drawn as
their mean with a band from the minimum to the maximum over seeds. matplotlib is an optional
extra (``pip install 'dllmrl[plot]'``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from dllmrl.errors import ConfigError, DataError
from dllmrl.training.metrics import read_metrics


def run_label(run_dir: str | Path) -> str:
    return re.sub(r"[-_]s(eed)?\d+$", "", Path(run_dir).name)


DEFAULT_METRIC = "reward"
"""The mean training reward per step, as ``dllmrl train`` writes it to metrics.jsonl."""


def series(run_dir: str | Path, metric: str, smooth: int = 1) -> tuple[list[int], list[float]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise DataError(f"{run_dir} has no metrics.jsonl; pass run directories written by dllmrl train")
    rows = [r for r in read_metrics(run_dir) if r.get(metric) is not None]
    if not rows:
        raise DataError(f"{path} has no metric '{metric}'; pick one of its keys with --metric")
    steps = [int(r["step"]) for r in rows]
    vals = [float(r[metric]) for r in rows]
    if smooth > 1:  # trailing moving average: a plot, not a statistic
        vals = [sum(vals[max(0, i - smooth + 1): i + 1]) / len(vals[max(0, i - smooth + 1): i + 1]) for i in range(len(vals))]
    return steps, vals


def plot_runs(run_dirs: Sequence[str | Path], metric: str, out: str | Path, *, smooth: int = 1, title: str | None = None) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("dllmrl plot needs matplotlib: pip install 'dllmrl[plot]'") from None
    groups: dict[str, list[tuple[list[int], list[float]]]] = defaultdict(list)
    for d in run_dirs:
        groups[run_label(d)].append(series(d, metric, smooth))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, runs in sorted(groups.items()):
        common = sorted(set.intersection(*(set(s) for s, _ in runs)))
        per_run = [dict(zip(s, v)) for s, v in runs]
        mean = [sum(r[x] for r in per_run) / len(per_run) for x in common]
        line, = ax.plot(common, mean, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(common, [min(r[x] for r in per_run) for x in common],
                            [max(r[x] for r in per_run) for x in common], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
