"""Save and restore the full trainer state, crash-safely, under ``RUN_DIR/checkpoints/step-NNNNNNN``.

    path = save_checkpoint(run_dir, step, accelerator=acc, model=model, optimizer=opt, scheduler=sched,
                           extra={"lam": 0.5, "data_pos": 96}, generators={"sample": gen})
    recover_checkpoints(run_dir)                       # after a crash: finish or drop interrupted saves
    ckpt = load_checkpoint(latest_checkpoint(run_dir), accelerator=acc, model=model, optimizer=opt,
                           scheduler=sched, generators={"sample": gen})
    ckpt.step, ckpt.extra, ckpt.rank_state

Layout of one checkpoint directory:
    adapter/            peft adapter (save_pretrained format) when the model is a peft model
    model/              otherwise the whole model (save_pretrained, plus the tokenizer when given)
    trainer_state.pt    optimizer and scheduler state dicts (rank 0)
    rank-<r>.pt         per-process state: RNG states (python, numpy, torch, CUDA, named generators)
                        as tensors, and ``rank_state`` (e.g. a rollout buffer that lives on that process)
    state.json          step and ``extra`` (JSON), written last and atomically: it marks a complete checkpoint

Safety: the .pt files hold only tensors, numbers, strings, lists and dicts and are read with
``torch.load(weights_only=True)``, so opening a checkpoint someone sent you cannot run code; a file
that needs more (a pickled object, or a checkpoint of dllmrl before format 2) is refused with one line.
Dataclasses travel through :func:`to_plain` / :func:`from_plain`.

Crash safety: a checkpoint is written into ``.tmp-step-N`` and renamed into place once complete. A
step that already exists is replaced by renaming the old one aside (``.old-step-N``), renaming the
new one in, then deleting the old, so a kill at any moment leaves a complete copy that
:func:`recover_checkpoints` puts back. Under DeepSpeed the optimizer is sharded, so its state goes
through ``accelerator.save_state`` (``deepspeed/``; accelerate loads that part with its own rules).
Multi-node runs need the run directory on a shared filesystem.

``DLLMRL_SAVE_PAUSE_S`` (tests only) sleeps that long at each stage of a save, so a crash test can
kill a process inside one.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import os
import pickle
import random
import re
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from safetensors import SafetensorError

from dllmrl.io.jsonl import disk_error
from dllmrl.errors import DataError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FORMAT = 2
"""Version of the .pt files' contents; 1 (pickled RNG tuples and buffers) is refused."""
_NAME = re.compile(r"^step-(\d+)$")
_PENDING = re.compile(r"^\.(tmp|old)-(step-\d+)$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    extra: dict[str, Any] = field(default_factory=dict)
    """JSON-able trainer extras saved by rank 0 (lambda, data position, ...)."""
    rank_state: Any = None
    """Whatever this rank passed as ``rank_state`` when saving, in plain form (None if absent)."""


# ------------------------------------------------------------------ plain data
def to_plain(obj: Any) -> Any:
    """Dataclasses (recursively) -> dicts of their fields: what ``torch.load(weights_only=True)`` reads back."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    return obj


def from_plain(cls: type, data: Mapping[str, Any], device: torch.device | str | None = None) -> Any:
    """Rebuild a dataclass written by :func:`to_plain`; fields typed as dataclasses are rebuilt too,
    tensors move to ``device``."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            raise DataError(f"the saved {cls.__name__} has no field '{f.name}' (saved by another dllmrl version)")
        v, hint = data[f.name], hints.get(f.name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(v, Mapping):
            v = from_plain(hint, v, device)
        elif isinstance(v, torch.Tensor) and device is not None:
            v = v.to(device)
        kwargs[f.name] = v
    return cls(**kwargs)


def safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file that needs unpickling of objects is refused with one line."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{path} holds pickled Python objects ({str(e).splitlines()[0][:120]}); it is refused "
                        "because loading it could run code (a checkpoint of an older dllmrl, or not a dllmrl "
                        "file): start the run again in a new --output") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path} is not a dllmrl checkpoint of format {FORMAT} (an older dllmrl wrote it); "
                        "start the run again in a new --output")
    return data


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------ RNG
def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """This process's RNG states as tensors: python, numpy, torch CPU, every CUDA device, named generators."""
    version, mt, gauss = random.getstate()
    state: dict[str, Any] = {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64),
                                        "gauss": gauss},
                             "torch": torch.get_rng_state()}
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(cached)}
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return state


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
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
    """Complete checkpoints of a run, oldest first (an interrupted save is not listed until recovered)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and _complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _complete(path: Path) -> bool:
    return (path / "state.json").is_file()


def recover_checkpoints(run_dir: str | Path) -> None:
    """Finish what a crash interrupted (rank 0, before resuming): a complete ``.tmp-step-N`` with no
    ``step-N`` is renamed into place, an ``.old-step-N`` whose replacement is missing is put back,
    and every other leftover temporary directory is deleted."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return
    pending = sorted((m.group(1), m.group(2), p) for p in root.iterdir() if (m := _PENDING.match(p.name)))
    for kind, name, path in sorted(pending, key=lambda t: t[0] != "tmp"):  # new copies first, then old ones
        final = root / name
        if not final.exists() and _complete(path):
            path.rename(final)
            log.warning("recovered checkpoint %s from an interrupted save (%s)", final, path.name)
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s left by an interrupted save", path)


def replace_dir(src: Path, dest: Path) -> None:
    """Move the complete directory ``src`` to ``dest``, replacing it so that some complete copy exists
    at every moment: the old one goes aside (``.old-NAME``), the new one in, then the old is deleted."""
    if not dest.exists():
        src.rename(dest)
        return
    aside = dest.with_name(".old-" + dest.name)
    if aside.exists():
        shutil.rmtree(aside)
    dest.rename(aside)
    _pause()
    src.rename(dest)
    shutil.rmtree(aside, ignore_errors=True)


def _pause() -> None:
    """Tests only: sleep ``DLLMRL_SAVE_PAUSE_S`` seconds, so a crash test can land a kill inside a save."""
    seconds = float(os.environ.get("DLLMRL_SAVE_PAUSE_S", "0") or 0)
    if seconds > 0:
        time.sleep(seconds)


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
def _disk_errors_as_one_line(save: Callable[..., Path]) -> Callable[..., Path]:
    """A full or read-only disk while saving is one line; the partial copy is removed, so the last complete
    checkpoint stays the one ``--resume`` uses."""

    @functools.wraps(save)
    def wrapped(run_dir: str | Path, *args: Any, **kwargs: Any) -> Path:
        try:
            return save(run_dir, *args, **kwargs)
        except (OSError, RuntimeError, SafetensorError) as e:
            err = _as_os_error(e)
            if err is None:
                raise
            for tmp in Path(run_dir).glob(".tmp-step-*"):
                shutil.rmtree(tmp, ignore_errors=True)
            raise disk_error(err, Path(run_dir), rerun="rerun with --resume: the last complete checkpoint is kept") from None

    return wrapped


def _as_os_error(e: BaseException) -> OSError | None:
    """torch.save and safetensors report a full disk as their own errors; recover the OSError they stand for."""
    if isinstance(e, OSError):
        return e
    text = str(e)
    if "No space left on device" in text or "os error 28" in text or "unexpected pos" in text:
        return OSError(errno.ENOSPC, "No space left on device")
    if "Read-only file system" in text or "os error 30" in text:
        return OSError(errno.EROFS, "Read-only file system")
    return None


@_disk_errors_as_one_line
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
    add_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete checkpoint for ``step``; every process must call it. Returns its path.

    ``rng``: RNG states captured earlier with :func:`capture_rng` (e.g. at the last optimizer
    step, when saving on Ctrl-C); by default they are captured now. ``rank_state`` goes through
    :func:`to_plain`. ``add_files(dir)`` writes extra files into the checkpoint before it is marked
    complete. ``keep_last`` deletes older checkpoints beyond that many.
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
    torch.save({"format": FORMAT, "rng": rng_state, "rank_state": to_plain(rank_state)}, tmp / f"rank-{rank}.pt")
    if _is_deepspeed(accelerator):
        # ZeRO shards the optimizer: every rank writes its part (frozen base weights excluded).
        accelerator.save_state(str(tmp / "deepspeed"), exclude_frozen_parameters=True)
    _barrier(accelerator)
    if rank == 0:
        save_model_weights(_unwrap(accelerator, model), tmp, tokenizer)
        _pause()
        state: dict[str, Any] = {"format": FORMAT}
        if optimizer is not None and not _is_deepspeed(accelerator):
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        torch.save(state, tmp / "trainer_state.pt")
        if add_files is not None:
            add_files(tmp)
        write_json_atomic(tmp / "state.json", {"step": step, "extra": dict(extra or {})})  # last: complete
        _pause()
        replace_dir(tmp, final)
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
    if not _complete(path):
        raise DataError(f"{path} is not a complete checkpoint (no state.json)")
    meta = json.loads((path / "state.json").read_text())
    rank = _rank(accelerator)
    rank_file = path / f"rank-{rank}.pt"
    if not rank_file.exists():
        raise DataError(
            f"{path} has no state for process {rank}: it was saved by fewer processes; "
            "resume with the same number of processes"
        )
    trainer_state = safe_load(path / "trainer_state.pt")  # refuse unsafe files before touching the model
    per_rank = safe_load(rank_file)
    load_model_weights(_unwrap(accelerator, model), path)
    if _is_deepspeed(accelerator):
        accelerator.load_state(str(path / "deepspeed"), load_module_strict=False)
    elif optimizer is not None and "optimizer" in trainer_state:
        optimizer.load_state_dict(trainer_state["optimizer"])
    if scheduler is not None and "scheduler" in trainer_state:
        scheduler.load_state_dict(trainer_state["scheduler"])
    if restore_random:
        restore_rng(per_rank["rng"], generators)
    log.info("resumed from %s (step %d)", path, meta["step"])
    return Checkpoint(path=path, step=int(meta["step"]), extra=meta.get("extra", {}), rank_state=per_rank.get("rank_state"))


def save_final_adapter(run_dir: str | Path, model, accelerator=None, tokenizer=None) -> Path | None:
    """Copy the trained weights to ``RUN_DIR/adapter`` (or ``RUN_DIR/model``) for --adapter / --model (rank 0),
    replacing a previous copy crash-safely."""
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
    replace_dir(tmp / name, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    _barrier(accelerator)
    return dest
