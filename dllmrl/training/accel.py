"""Build the ``accelerate.Accelerator`` every training command uses, plus rank helpers.

    acc = build_accelerator(device="auto", dtype="auto", grad_accum=2, seed=0)
    gen = rank_generator(acc, seed=0)           # this rank's sampling torch.Generator
    if acc.is_main_process: ...

The same code runs on a CPU, one GPU, or under ``accelerate launch`` / ``torchrun`` on many
GPUs and nodes (DeepSpeed ZeRO-2 included, configured by accelerate's own config file).

Two CPU pitfalls handled here: a plain ``Accelerator()`` without CUDA
under a multi-process launcher starts processes that never synchronise, so ``cpu=True`` is
passed whenever CUDA is absent; and each process is limited to ``threads`` torch threads.
"""

from __future__ import annotations

import logging
import os
import random

import torch

from dllmrl.errors import ConfigError

log = logging.getLogger(__name__)

_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}


def mixed_precision_for(dtype: str, use_cuda: bool) -> str:
    """--dtype -> accelerate's mixed_precision: bf16/fp16 autocast only on CUDA, 'no' elsewhere."""
    if dtype == "auto":
        return "bf16" if use_cuda else "no"
    if dtype not in _PRECISION:
        raise ConfigError(f"--dtype must be auto, float32, bfloat16 or float16, got '{dtype}'")
    return _PRECISION[dtype] if use_cuda else "no"


def build_accelerator(
    device: str = "auto",
    dtype: str = "auto",
    *,
    grad_accum: int = 1,
    seed: int | None = None,
    threads: int | None = None,
    report_to: tuple[str, ...] = (),
    project_dir: str | None = None,
):
    """An Accelerator for --device / --dtype.

    - ``device='cpu'`` or no CUDA present: ``cpu=True`` (gloo when launched multi-process).
    - Mixed precision follows --dtype on CUDA, unless ``accelerate launch`` already set it
      (ACCELERATE_MIXED_PRECISION), so a DeepSpeed config's bf16 setting is not contradicted.
    - ``seed`` seeds python, numpy and torch identically on every rank (LoRA initialisation
      must match across ranks); per-rank randomness comes from :func:`rank_generator`.
    - ``threads`` caps torch CPU threads per process (several processes share the cores).
    - ``report_to``: accelerate trackers (``log_with``), writing under ``project_dir/trackers``.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    from dllmrl.training.metrics import TRACKERS_DIR, check_trackers

    if grad_accum < 1:
        raise ConfigError(f"--grad-accum must be >= 1, got {grad_accum}")
    if threads:
        torch.set_num_threads(threads)
    want_cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for CUDA, but torch sees no GPU here; use --device cpu")
    if device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(torch.device(device))
    mp = None if "ACCELERATE_MIXED_PRECISION" in os.environ else mixed_precision_for(dtype, want_cuda)
    check_trackers(report_to)
    project = (ProjectConfiguration(project_dir=project_dir, logging_dir=os.path.join(project_dir, TRACKERS_DIR))
               if project_dir is not None else None)
    acc = Accelerator(cpu=not want_cuda, mixed_precision=mp, gradient_accumulation_steps=grad_accum,
                      log_with=list(report_to) or None, project_config=project)
    if seed is not None:
        seed_everything(seed)
    log.info("accelerator: %s, %d process(es), mixed precision %s", acc.device, acc.num_processes, acc.mixed_precision)
    return acc


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Call once at the start of a run, never in a loss."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rank_generator(accelerator, seed: int) -> torch.Generator:
    """A torch.Generator on this rank's device, seeded differently per rank (sampling, step draws)."""
    gen = torch.Generator(device=accelerator.device)
    gen.manual_seed(seed * 1_000_003 + accelerator.process_index)
    return gen


def reduce_mean(accelerator, value: torch.Tensor | float) -> float:
    """Mean of a scalar over all processes (for metrics)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=accelerator.device).reshape(1)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="mean")
    return float(t.item())


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
