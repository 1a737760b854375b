"""Save and restore the full trainer state, atomically, under ``RUN_DIR/checkpoints/step-NNNNNNN``.

    path = save_checkpoint(run_dir, step, accelerator=acc, model=model, optimizer=opt, scheduler=sched,
                           extra={"lam": 0.5, "data_pos": 96}, generators={"sample": gen})
    ckpt = load_checkpoint(latest_checkpoint(run_dir), accelerator=acc, model=model, optimizer=opt,
                           scheduler=sched, generators={"sample": gen})
    ckpt.step, ckpt.extra, ckpt.rank_state

Layout of one checkpoint directory:
    adapter/            peft adapter (save_pretrained format) when the model is a peft model
    model/              otherwise the whole model (save_pretrained, plus the tokenizer when given)
    trainer_state.pt    optimizer and scheduler state dicts (rank 0)
    rank-<r>.pt         per-process state: RNG states (python, numpy, torch, CUDA, named generators)
                        and ``rank_state`` (e.g. a rollout buffer that lives on that process)
    state.json          step and ``extra`` (JSON), written last: its presence marks a complete checkpoint

Atomicity: everything is written into ``.tmp-step-NNNNNNN`` and renamed when complete, so a
crash mid-save never leaves a directory that :func:`latest_checkpoint` would pick. Under
DeepSpeed the optimizer is sharded, so its state goes through ``accelerator.save_state``
(``deepspeed/`` subdirectory) instead of ``trainer_state.pt``. Multi-node runs need the run
directory on a shared filesystem.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from dllmrl.errors import DataError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    extra: dict[str, Any] = field(default_factory=dict)
    """JSON-able trainer extras saved by rank 0 (lambda, data position, ...)."""
    rank_state: Any = None
    """Whatever this rank passed as ``rank_state`` when saving (None if absent)."""


# ------------------------------------------------------------------ RNG
def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """This process's RNG states: python, numpy, torch CPU, every CUDA device, and named generators."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return state


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(state["generators"][k])


# ------------------------------------------------------------------ helpers
def _unwrap(accelerator, model):
    return accelerator.unwrap_model(model) if accelerator is not None else model


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _is_deepspeed(accelerator) -> bool:
    if accelerator is None:
        return False
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _barrier(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _rank(accelerator) -> int:
    return 0 if accelerator is None else accelerator.process_index


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / "state.json").exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_model_weights(model, out: Path, tokenizer=None) -> None:
    """A peft model saves only its adapter (``out/adapter``); any other model saves whole (``out/model``)."""
    if is_peft(model):
        model.save_pretrained(out / "adapter")
    else:
        model.save_pretrained(out / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(out / "model")


def load_model_weights(model, src: Path) -> None:
    """Load what :func:`save_model_weights` wrote into an already built model (in place)."""
    if (src / "adapter").is_dir():
        if not is_peft(model):
            raise DataError(f"{src} holds a LoRA adapter, but the model being resumed has none; resume with the same --lora-r")
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        weights = load_peft_weights(str(src / "adapter"), device=str(next(model.parameters()).device))
        result = set_peft_model_state_dict(model, weights)
        bad = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if bad:
            raise DataError(f"{src}/adapter does not match the model's LoRA layout (unexpected {bad[:3]})")
        return
    folder = src / "model"
    if not folder.is_dir():
        raise DataError(f"{src} holds neither adapter/ nor model/; it is not a dllmrl checkpoint")
    index = folder / "model.safetensors.index.json"
    if index.exists():
        from transformers.modeling_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model, str(folder), strict=True)
    else:
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"), device=str(next(model.parameters()).device))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # tied weights (embeddings / lm head) are saved once
        if unexpected or [k for k in missing if not _tied(model, k)]:
            raise DataError(f"{folder} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def _tied(model, key: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or getattr(model, "all_tied_weights_keys", None) or []
    return any(key == t or key.endswith(str(t)) for t in tied)


# ------------------------------------------------------------------ save / load
def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    accelerator=None,
    model,
    optimizer=None,
    scheduler=None,
    extra: Mapping[str, Any] | None = None,
    rank_state: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
    rng: Mapping[str, Any] | None = None,
    tokenizer=None,
    keep_last: int | None = None,
) -> Path:
    """Write a complete checkpoint for ``step``; every process must call it. Returns its path.

    ``rng``: RNG states captured earlier with :func:`capture_rng` (e.g. at the last optimizer
    step, when saving on Ctrl-C); by default they are captured now. ``keep_last`` deletes
    older checkpoints beyond that many.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(".tmp-" + final.name)
    rank = _rank(accelerator)
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier(accelerator)
    rng_state = dict(rng) if rng is not None else capture_rng(generators)
    torch.save({"rng": rng_state, "rank_state": rank_state}, tmp / f"rank-{rank}.pt")
    if _is_deepspeed(accelerator):
        # ZeRO shards the optimizer: every rank writes its part (frozen base weights excluded).
        accelerator.save_state(str(tmp / "deepspeed"), exclude_frozen_parameters=True)
    if rank == 0:
        save_model_weights(_unwrap(accelerator, model), tmp, tokenizer)
        state: dict[str, Any] = {}
        if optimizer is not None and not _is_deepspeed(accelerator):
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        torch.save(state, tmp / "trainer_state.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "extra": dict(extra or {})}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep_last:
            for old in list_checkpoints(run_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("saved checkpoint %s", final)
    _barrier(accelerator)
    return final


def load_checkpoint(
    path: str | Path,
    *,
    accelerator=None,
    model,
    optimizer=None,
    scheduler=None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_random: bool = True,
) -> Checkpoint:
    """Restore a checkpoint into the (already prepared) model, optimizer and scheduler; every process calls it."""
    path = Path(path)
    meta_file = path / "state.json"
    if not meta_file.exists():
        raise DataError(f"{path} is not a complete checkpoint (no state.json)")
    meta = json.loads(meta_file.read_text())
    load_model_weights(_unwrap(accelerator, model), path)
    trainer_state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
    if _is_deepspeed(accelerator):
        accelerator.load_state(str(path / "deepspeed"), load_module_strict=False)
    elif optimizer is not None and "optimizer" in trainer_state:
        optimizer.load_state_dict(trainer_state["optimizer"])
    if scheduler is not None and "scheduler" in trainer_state:
        scheduler.load_state_dict(trainer_state["scheduler"])
    rank = _rank(accelerator)
    rank_file = path / f"rank-{rank}.pt"
    if not rank_file.exists():
        raise DataError(
            f"{path} has no state for process {rank}: it was saved by fewer processes; "
            "resume with the same number of processes"
        )
    per_rank = torch.load(rank_file, map_location="cpu", weights_only=False)
    if restore_random:
        restore_rng(per_rank["rng"], generators)
    log.info("resumed from %s (step %d)", path, meta["step"])
    return Checkpoint(path=path, step=int(meta["step"]), extra=meta.get("extra", {}), rank_state=per_rank.get("rank_state"))


def save_final_adapter(run_dir: str | Path, model, accelerator=None, tokenizer=None) -> Path | None:
    """Copy the trained weights to ``RUN_DIR/adapter`` (or ``RUN_DIR/model``) for --adapter / --model (rank 0)."""
    if _rank(accelerator) != 0:
        _barrier(accelerator)
        return None
    run = Path(run_dir)
    tmp = run / ".tmp-final"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unwrapped = _unwrap(accelerator, model)
    save_model_weights(unwrapped, tmp, tokenizer)
    name = "adapter" if is_peft(unwrapped) else "model"
    dest = run / name
    if dest.exists():
        shutil.rmtree(dest)
    (tmp / name).rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    _barrier(accelerator)
    return dest
