"""Training metrics: one JSON line per logged step in ``metrics.jsonl``, and TensorBoard when installed.

Only rank 0 writes. ``read_metrics(run_dir)`` loads the file back for plots and tests.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

from dllmrl.io.jsonl import append_jsonl, read_jsonl, write_jsonl

log = logging.getLogger(__name__)

RERUN_TRAIN = "rerun the same command with --resume to continue from the last checkpoint"


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsWriter:
    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:
                log.debug("tensorboard not installed; metrics go to metrics.jsonl only")

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint's step so the file has no duplicates.

        A torn last line (a run killed mid-write, a full disk) is dropped with a warning.
        """
        if not (self.enabled and self.path.exists()):
            return
        keep = [row for row in read_jsonl(self.path) if row.get("step", 0) <= step]
        write_jsonl(self.path, keep, rerun=RERUN_TRAIN)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        append_jsonl(self.path, [row], rerun=RERUN_TRAIN)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a torn last line is skipped with a warning."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")
