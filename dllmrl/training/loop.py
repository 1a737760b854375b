"""The training skeleton shared by ``dllmrl train`` (RL) and ``dllmrl sft``: everything but how a batch becomes a loss.

    resume = open_run(acc, run_dir, resume=cfg.resume, configs={"train": cfg, "sampler": scfg, "model": mcfg})
    optimizer, scheduler = build_optimizer(params, OptimSettings(lr=..., warmup_steps=...))
    loop = Loop(LoopParts(acc, model, optimizer, scheduler, params, run_dir, writer), settings, work)
    outcome = loop.run(resume)            # work: a ``Work`` (micro_loss, snapshot, restore, evaluate)

What the skeleton owns, alike for both loops:
- the run directory rules: a fresh start refuses a directory that holds a run (a checkpoint, or the
  metrics of one that never saved), ``--resume`` needs a checkpoint and the same settings
  (``RESUMABLE`` may change; the output path is not a setting, so a copied run directory resumes),
  interrupted saves are recovered first, and config.json is written atomically;
- AdamW with linear warm-up (the scheduler counts optimizer steps; accelerate does not prepare it);
- gradient accumulation (``grad_accum`` micro-steps per optimizer step), clipping, and a stop with one
  line (``NonFiniteError``) as soon as a loss or the gradient norm is not finite, before the
  optimizer step, so no poisoned weights are stepped, saved or exported;
- checkpoints every ``save_every`` steps and at the end, quick evaluation, metrics rows (means over
  ``log_every`` steps) to metrics.jsonl and the accelerate trackers, progress reports;
- Ctrl-C and SIGTERM: the finished optimizer steps are kept, a half-accumulated step is dropped, the
  checkpoint holds the state (RNG included) of the last step boundary, so a resumed run replays
  exactly. A signal that arrives during a save is held until the save is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch
from torch import Tensor

from dllmrl.errors import ConfigError, DataError, DllmrlError
from dllmrl.training.accel import peak_rss_mb
from dllmrl.training.checkpoint import (
    Checkpoint, capture_rng, latest_checkpoint, load_checkpoint, recover_checkpoints, save_checkpoint,
    write_json_atomic,
)
from dllmrl.training.metrics import MetricsWriter

log = logging.getLogger(__name__)

RESUMABLE = frozenset({"resume", "output", "max_steps", "save_every", "keep_checkpoints", "eval_every", "eval_limit",
                       "log_every", "device", "reward_workers", "report_to"})
"""Options that may change between a run and its resumption (both loops); any other difference is refused."""


class NonFiniteError(DllmrlError):
    """A loss or gradient norm became NaN or infinite; training stopped before the optimizer step."""


# ---------------------------------------------------------------------------------------------- run directory
def open_run(acc, run_dir: Path, *, resume: bool, configs: Mapping[str, Any]) -> Path | None:
    """The checkpoint to resume from (None: a fresh run). Every process calls it; rank 0 first finishes
    saves a crash interrupted. ``configs``: section name -> config dataclass, as config.json stores them."""
    if acc.is_main_process:
        recover_checkpoints(run_dir)
    acc.wait_for_everyone()
    newest = latest_checkpoint(run_dir)
    if not resume:
        if newest is not None:
            raise ConfigError(f"--output {run_dir} already holds a run ({newest.name}); pass --resume to "
                              "continue it or choose another --output")
        if (run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"--output {run_dir} holds the metrics.jsonl of an earlier run that saved no checkpoint; "
                              "delete that directory or choose another --output")
        return None
    if newest is None:
        raise ConfigError(f"--resume: --output {run_dir} holds no checkpoint; leave out --resume to start a run there")
    _check_same_settings(run_dir, configs)
    return newest


def _check_same_settings(run_dir: Path, configs: Mapping[str, Any]) -> None:
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        before = {k: v for section in configs for k, v in saved[section].items()}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"--resume: {run_dir}/config.json cannot be read ({e}); it records the run's settings") from None
    now = json.loads(json.dumps({k: v for c in configs.values() for k, v in asdict(c).items()}))  # as saved
    # A field newer than the saved run counts as unchanged while it keeps its default.
    defaults = json.loads(json.dumps({f.name: f.default for c in configs.values() for f in fields(c)
                                      if f.default is not MISSING}))
    diff = [k for k in now if k not in RESUMABLE and before.get(k, defaults.get(k)) != now[k]]
    if diff:
        changes = ", ".join(f"--{k.replace('_', '-')} {before.get(k)} -> {now[k]}" for k in diff)
        raise ConfigError(f"--resume: the run in {run_dir} was started with other settings ({changes}); "
                          "use the original options or a new --output")


def write_config(acc, run_dir: Path, record: Mapping[str, Any]) -> None:
    """config.json (rank 0), atomically: a kill while writing leaves the previous file whole."""
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", json.loads(json.dumps(record)))


# ---------------------------------------------------------------------------------------------- optimizer
@dataclass(frozen=True)
class OptimSettings:
    lr: float
    warmup_steps: int
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.99)


def build_optimizer(params: list[torch.nn.Parameter], s: OptimSettings):
    """AdamW and a linear warm-up to ``lr`` over ``warmup_steps`` optimizer steps, then constant."""
    optimizer = torch.optim.AdamW(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    warm = s.warmup_steps
    # Not prepared: accelerate would step a prepared scheduler once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: min(1.0, (n + 1) / warm) if warm else 1.0)
    return optimizer, scheduler


# ---------------------------------------------------------------------------------------------- signals
class _Signals:
    """SIGTERM acts as Ctrl-C; inside ``hold()`` both are recorded and re-raised once the block is done."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.holding = False
        self.active = threading.current_thread() is threading.main_thread()

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.holding:  # no logging here: the handler may interrupt a logging call holding its lock
            self.pending = signum
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if not self.active:  # signal handlers can only be set from the main thread
            yield
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def hold(self, *, reraise: bool = True) -> Iterator[None]:
        """Signals wait until the block is done; then (with ``reraise``) one KeyboardInterrupt stands for them."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            log.warning("signal %d arrived during a save; the save was finished first", self.pending)
            self.pending = None
            if reraise:
                raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class LoopSettings:
    max_steps: int
    grad_accum: int
    max_grad_norm: float
    """0: no clipping (the norm is still measured, to catch non-finite gradients)."""
    save_every: int
    keep_checkpoints: int
    eval_every: int
    log_every: int
    """A metrics row every N optimizer steps: the means over those steps."""


@dataclass(frozen=True)
class Snapshot:
    """A loop's own state at a step boundary, as a checkpoint keeps it."""

    extra: dict[str, Any]
    """JSON-able, written by rank 0 (data position...)."""
    rank_state: Any = None
    """This process's state (a rollout buffer...): dataclasses, tensors, numbers, strings."""


class Work(Protocol):
    """What differs between the loops: how a micro-step becomes a loss, and the state to checkpoint."""

    generators: dict[str, torch.Generator]
    """Named generators whose states checkpoints keep (besides python, numpy and torch)."""

    def micro_loss(self, step: int, micro: int) -> tuple[Tensor, Mapping[str, Tensor | float]]: ...

    def step_metrics(self, step_s: float) -> dict[str, float]: ...

    def snapshot(self) -> Snapshot: ...

    def restore(self, ckpt: Checkpoint) -> None: ...

    def evaluate(self) -> float: ...


@dataclass(frozen=True)
class LoopParts:
    acc: Any
    model: torch.nn.Module
    """The prepared (possibly DDP-wrapped) model."""
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    run_dir: Path
    writer: MetricsWriter
    tokenizer: Any = None
    """Saved with a full model (not with an adapter)."""
    add_files: Callable[[Path], None] | None = None
    """Writes extra files into each checkpoint before it is marked complete."""


@dataclass(frozen=True)
class Progress:
    """What the loop reports after each optimizer step (feeds the CLI's progress bar and tables)."""

    step: int
    max_steps: int
    metrics: Mapping[str, Any] | None = None
    """The metrics.jsonl row, on logging steps only."""
    resumed_from: int | None = None
    """The checkpoint step this run resumed from (None: a fresh start)."""


@dataclass(frozen=True)
class Outcome:
    step: int
    checkpoint: Path | None
    """The newest checkpoint written or resumed from."""
    interrupted: bool
    resumed_from: int | None
    last_metrics: dict[str, Any]


class Loop:
    def __init__(self, parts: LoopParts, settings: LoopSettings, work: Work,
                 on_progress: Callable[[Progress], None] | None = None):
        self.p, self.s, self.work, self.on_progress = parts, settings, work, on_progress
        self.signals = _Signals()
        self.sums: dict[str, float] = {}
        self.interval = 0
        self.last_row: dict[str, Any] = {}

    def run(self, resume_from: Path | None) -> Outcome:
        p, s = self.p, self.s
        step, resumed = 0, None
        if resume_from is not None:
            ck = load_checkpoint(resume_from, accelerator=p.acc, model=p.model, optimizer=p.optimizer,
                                 scheduler=p.scheduler, generators=self.work.generators)
            self.work.restore(ck)
            step = resumed = ck.step
            p.writer.truncate_after(step)
            log.warning("resumed from %s at step %d", resume_from, step)
        p.model.train()
        boundary = (self.work.snapshot(), capture_rng(self.work.generators))
        saved = (step, resume_from) if resume_from is not None else (-1, None)
        with self.signals.installed():
            try:
                while step < s.max_steps:
                    t0 = time.perf_counter()
                    self._optimizer_step(step)
                    step, boundary = step + 1, (self.work.snapshot(), capture_rng(self.work.generators))
                    self._after_step(step, time.perf_counter() - t0, resumed)
                    if (s.save_every and step % s.save_every == 0) or (step == s.max_steps and saved[0] != step):
                        with self.signals.hold():  # a signal now is handled once the checkpoint is whole
                            saved = (step, self._save(step, boundary))
            except KeyboardInterrupt:
                return self._interrupted(step, boundary, saved, resumed)
        p.writer.close()
        return Outcome(step, saved[1], False, resumed, self.last_row)

    def _optimizer_step(self, step: int) -> None:
        """grad_accum micro-steps, then one optimizer step (accelerate divides each loss by grad_accum)."""
        p, s = self.p, self.s
        sums: dict[str, float] = {}
        for micro in range(s.grad_accum):
            with p.acc.accumulate(p.model):
                loss, metrics = self.work.micro_loss(step, micro)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise NonFiniteError(f"the loss is {value} at step {step + 1} (micro-step {micro}); training "
                                         "stopped without saving it. Lower --lr or --max-grad-norm, or resume from "
                                         "the last checkpoint")
                p.acc.backward(loss)
                if p.acc.sync_gradients:
                    sums["grad_norm"] = self._clip(step)
                p.optimizer.step()  # a no-op until the last micro-step of the optimizer step
                p.optimizer.zero_grad(set_to_none=True)
            for k, v in {"loss": value, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) / s.grad_accum
        sums["lr"] = p.scheduler.get_last_lr()[0]
        p.scheduler.step()
        for k, v in sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def _clip(self, step: int) -> float:
        """Clip to max_grad_norm (0: measure only) and return the norm; NaN under DeepSpeed (it clips itself)."""
        limit = self.s.max_grad_norm if self.s.max_grad_norm > 0 else float("inf")
        norm = self.p.acc.clip_grad_norm_(self.p.params, limit)
        if norm is None:
            return float("nan")
        norm = float(norm)
        if not math.isfinite(norm):
            self.p.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"the gradient norm is {norm} at step {step + 1}; training stopped before the "
                                 "optimizer step, without saving. Lower --lr, or resume from the last checkpoint")
        return norm

    def _after_step(self, step: int, step_s: float, resumed: int | None) -> None:
        p, s = self.p, self.s
        self.sums["step_s"] = self.sums.get("step_s", 0.0) + step_s
        self.interval += 1
        row: dict[str, Any] | None = None
        if step % s.log_every == 0 or step == s.max_steps:
            row = self._row(step_s)
        if s.eval_every and step % s.eval_every == 0:
            row = {**(row or {}), "eval_accuracy": self.work.evaluate()}
        if row is not None:
            p.writer.log(step, row)
            self.last_row = row
        if self.on_progress is not None and p.acc.is_main_process:
            self.on_progress(Progress(step, s.max_steps, row, resumed))

    def _row(self, step_s: float) -> dict[str, Any]:
        """Means over the interval, reduced over processes in one call; then the boundary values."""
        keys = sorted(self.sums)
        vals = torch.tensor([self.sums[k] / self.interval for k in keys], dtype=torch.float64,
                            device=self.p.acc.device)
        if self.p.acc.num_processes > 1:
            vals = self.p.acc.reduce(vals, reduction="mean")
        row: dict[str, Any] = {**self.work.step_metrics(step_s), **dict(zip(keys, vals.tolist()))}
        row["peak_rss_mb"] = peak_rss_mb()
        if torch.cuda.is_available():
            row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        self.sums, self.interval = {}, 0
        return row

    def _save(self, step: int, boundary: tuple[Snapshot, dict]) -> Path:
        p, (snap, rng) = self.p, boundary
        return save_checkpoint(p.run_dir, step, accelerator=p.acc, model=p.model, optimizer=p.optimizer,
                                   scheduler=p.scheduler, tokenizer=p.tokenizer, rng=rng, extra=snap.extra,
                               rank_state=snap.rank_state, keep_last=self.s.keep_checkpoints or None,
                               add_files=p.add_files)

    def _interrupted(self, step: int, boundary: tuple[Snapshot, dict], saved: tuple[int, Path | None],
                     resumed: int | None) -> Outcome:
        # The finished optimizer steps are kept; a half-accumulated step is dropped.
        self.p.optimizer.zero_grad(set_to_none=True)
        with self.signals.installed(), self.signals.hold(reraise=False):  # a second signal finishes this save
            path = saved[1] if saved[0] == step else (self._save(step, boundary) if step > 0 else None)
        self.p.writer.close()
        log.warning("interrupted at step %d; %s", step, f"saved {path}" if path else "nothing to save yet")
        return Outcome(step, path, True, resumed, self.last_row)
