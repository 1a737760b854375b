"""Training metrics: one JSON line per logged step in ``metrics.jsonl`` (always), and the accelerate trackers
of ``--report-to`` (tensorboard, wandb, mlflow, ...) through ``accelerator.log``.

    acc = build_accelerator(..., report_to=("tensorboard",), project_dir=run_dir)
    writer = MetricsWriter(run_dir, acc, report_to=("tensorboard",))
    writer.start(config)              # accelerator.init_trackers: the run's settings as hyperparameters
    writer.log(step, {"loss": 0.3})
    writer.close()                    # accelerator.end_training

Only rank 0 writes metrics.jsonl (accelerate's trackers log from the main process themselves).
TensorBoard event files land in ``RUN_DIR/trackers/dllmrl``. ``read_metrics(run_dir)`` loads the
file back for plots and tests.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dllmrl.io.jsonl import append_jsonl, read_jsonl, write_jsonl

log = logging.getLogger(__name__)

RERUN_TRAIN = "rerun the same command with --resume to continue from the last checkpoint"
PROJECT = "dllmrl"
"""The trackers' project name (wandb project, TensorBoard subdirectory)."""
TRACKERS_DIR = "trackers"


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _hparam(v: Any) -> bool | int | float | str | None:
    """A config value as a tracker hyperparameter (TensorBoard takes only scalars and strings)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


class MetricsWriter:
    def __init__(self, run_dir: str | Path, accelerator: Any, *, report_to: Sequence[str] = ()):
        self.acc = accelerator
        self.enabled = accelerator.is_main_process
        self.path = Path(run_dir) / "metrics.jsonl"
        self.report_to = tuple(report_to)
        self._started = False

    def start(self, config: Mapping[str, Any]) -> None:
        """Open the trackers with the run's flattened settings (a no-op without --report-to)."""
        if not self.report_to:
            return
        values = {k: v for k, v in ((k, _hparam(v)) for k, v in config.items()) if v is not None}
        self.acc.init_trackers(PROJECT, config=values)
        self._started = True

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint's step so the file has no duplicates.

        A torn last line (a run killed mid-write, a full disk) is dropped with a warning.
        """
        if not (self.enabled and self.path.exists()):
            return
        keep = [row for row in read_jsonl(self.path) if row.get("step", 0) <= step]
        write_jsonl(self.path, keep, rerun=RERUN_TRAIN)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        if self.enabled:
            append_jsonl(self.path, [row], rerun=RERUN_TRAIN)
        if self._started:
            numbers = {k: v for k, v in row.items()
                       if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.acc.log(numbers, step=step)

    def close(self) -> None:
        if self._started:
            self.acc.end_training()
            self._started = False


def parse_report_to(value: str) -> tuple[str, ...]:
    """'tensorboard,wandb' -> ('tensorboard', 'wandb'); '' or 'none' -> ()."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    return () if names in ((), ("none",)) else names


def check_trackers(names: Sequence[str]) -> None:
    """Raise a ConfigError naming the package to install for a tracker accelerate cannot find."""
    if not names:
        return
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    from dllmrl.errors import ConfigError

    known = [str(t) for t in LoggerType]
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in known:
            raise ConfigError(f"--report-to {name}: unknown tracker; pick from {', '.join(known)}")
        if name != "all" and name not in available:
            raise ConfigError(f"--report-to {name}: the {name} package is not installed here; "
                              f"pip install {name} or leave it out of --report-to")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a torn last line is skipped with a warning."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")
