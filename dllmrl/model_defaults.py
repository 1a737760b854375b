"""Where an option's value comes from: the one resolver every command uses, and the sources it reads.

Order, first set wins: the command line, ``--config FILE``, the model directory's ``dllmrl.json``,
the command's protocol (``PROTOCOLS``: the published settings that differ from the dataclass default),
the config dataclass default. The shipped tiny models carry a ``dllmrl.json``, e.g.
``{"prompt_style": "compact", "gen_len": 16, "steps": 16, "block_len": 16}``, so that
``dllmrl eval sudoku --model tiny-llada`` uses the settings their model card reports.

Shipped checkpoints (``checkpoints/`` in the repository, installed as the ``dllmrl.checkpoints``
package data) are reachable by their short name: ``--model tiny-llada``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from dllmrl.errors import DataError

log = logging.getLogger(__name__)
FILENAME = "dllmrl.json"


# ------------------------------------------------------------------ shipped checkpoints
def shipped_dir() -> Path | None:
    """The installed (or source) folder of the shipped checkpoints."""
    from importlib.resources import files

    try:
        root = Path(str(files("dllmrl.checkpoints")))
    except ModuleNotFoundError:  # pragma: no cover - an install without the package data
        return None
    return root if root.is_dir() else None


def shipped_models() -> list[str]:
    root = shipped_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))) if root else []


def find_model(name: str) -> str:
    """``name`` itself when it is a path that exists, else the shipped checkpoint of that short name
    (``tiny-llada``, also ``checkpoints/tiny-llada`` run from another directory), else ``name``."""
    if not name or Path(name).expanduser().exists():
        return name
    short = name[len("checkpoints/"):] if name.startswith("checkpoints/") else name
    root = shipped_dir()
    if root is not None and "/" not in short and (root / short).is_dir():
        return str(root / short)
    return name


def read_model_defaults(model: str) -> dict[str, Any]:
    """The model directory's dllmrl.json as a dict ({} for hub ids or when absent)."""
    path = Path(find_model(model)).expanduser() / FILENAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); fix or delete it") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object of option defaults")
    return data


def check_adapter_base(model: str, adapter: str, subfolder: str | None = None) -> None:
    """Refuse a local adapter whose adapter_config.json names another base model than ``model``
    (compared by the directory or repository name, so a hub id and its local download agree)."""
    from dllmrl.errors import ModelLoadError

    path = Path(find_model(adapter)).expanduser() / (subfolder or "") / "adapter_config.json"
    if not path.is_file():
        return  # a hub id: peft reads its config itself
    try:
        base = json.loads(path.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"--adapter {adapter}: {path} is not valid JSON ({e})") from None
    if not base:
        return
    names = {Path(str(base).rstrip("/")).name.lower(), Path(find_model(model).rstrip("/")).name.lower()}
    if len(names) > 1:
        raise ModelLoadError(f"--adapter {adapter} was made for base model '{base}', not for --model '{model}'; "
                             f"pass --model {base} (an adapter fits only the model it was trained on)")


# ------------------------------------------------------------------ protocols
def _eval_split(v: Mapping[str, Any]) -> str:
    """the task's evaluation split"""
    from dllmrl.tasks.base import get_task

    return get_task(v["task"]).eval_split if v.get("task") else "test"


def _eval_out(v: Mapping[str, Any]) -> str:
    """runs/eval/TASK-MODEL"""
    parts = [v.get("model"), v.get("adapter"), v.get("adapter_subfolder"), v.get("blend"), v.get("blend_base_scale")]
    flat = [str(x) for p in parts for x in ((p,) if isinstance(p, (str, int, float)) else (p or ()))]
    if v.get("blend_mode") not in (None, "sum"):
        flat.append(str(v["blend_mode"]))
    name = "-".join(p for p in flat if p)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_")[-120:]
    return str(Path("runs") / "eval" / f"{v['task']}-{name}")


def _merge_model(v: Mapping[str, Any]) -> str:
    """the base model the first --adapter names"""
    from dllmrl.config import ModelConfig
    from dllmrl.models.merge import adapter_base, plain_or_named

    adapters = plain_or_named(v.get("adapter"), v.get("adapter_subfolder"))
    return (adapter_base(adapters[0].source, adapters[0].subfolder) if adapters else None) or ModelConfig.model


# Each command's published settings where they differ from the dataclass defaults. A callable is
# computed from the other resolved values (its docstring is what --help shows).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "sample": {"gen_len": 128},
    "eval": {"split": _eval_split, "out": _eval_out},
    "train": {"temperature": 0.9, "prompt_style": "train"},
    "sft": {"prompt_style": "train", "gen_len": 256},
    "reward-model": {"prompt_style": "train", "gen_len": 256, "model": "tiny-llada"},
    "bench": {"model": "tiny-llada"},
    "merge": {"model": _merge_model},
}

_SAMPLER = {k: k for k in ("gen_len", "steps", "block_len", "temperature", "remasking", "decode", "threshold")}
# Field -> the dllmrl.json key it may come from, per command ('!key' negates a boolean).
MODEL_KEYS: dict[str, dict[str, str]] = {
    "sample": _SAMPLER,
    # The evaluation's temperature is dllmrl.json's "temperature"; training reads "train_temperature",
    # since a greedy rollout would make every completion of a group the same.
    "eval": {**_SAMPLER, "gen_lens": "gen_len", "prompt_style": "prompt_style", "raw": "!chat"},
    "train": {**_SAMPLER, "temperature": "train_temperature", "prompt_style": "prompt_style", "chat": "chat"},
    "sft": {"gen_len": "gen_len", "prompt_style": "prompt_style", "chat": "chat"},
    "reward-model": {k: k for k in ("gen_len", "steps", "block_len", "prompt_style")},
}


def model_key(command: str, name: str) -> str | None:
    return MODEL_KEYS.get(command, {}).get(name)


def _from_model(keys: Mapping[str, str], name: str, model_values: Mapping[str, Any]) -> Any:
    key = keys.get(name)
    if key is None:
        return None
    value = model_values.get(key.lstrip("!"))
    return (not value) if key.startswith("!") and value is not None else value


def layered(command: str, defaults: Mapping[str, Any], given: Mapping[str, Any],
            file_values: Mapping[str, Any] = {}, *, protocol: Mapping[str, Any] | None = None,
            model_keys: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Resolve every field of ``defaults`` (name -> dataclass default): the first value that is not None
    among the command line, the file, the model's dllmrl.json and the protocol. Returns the values and,
    per field, the source it came from ('command line', 'file', 'model', 'protocol', 'default')."""
    protocol = PROTOCOLS.get(command, {}) if protocol is None else protocol
    keys = MODEL_KEYS.get(command, {}) if model_keys is None else model_keys
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    computed: dict[str, Callable[[Mapping[str, Any]], Any]] = {}

    def first(name: str, model_values: Mapping[str, Any]) -> None:
        for source, value in (("command line", given.get(name)), ("file", file_values.get(name)),
                              ("model", _from_model(keys, name, model_values)),
                              ("protocol", protocol.get(name)), ("default", defaults[name])):
            if callable(value):
                computed[name] = value
                return
            if value is not None:
                values[name], sources[name] = value, source
                return
        values[name], sources[name] = None, "default"

    if "model" in defaults:
        first("model", {})
    model_values = read_model_defaults(values["model"]) if values.get("model") else {}
    for name in defaults:
        if name != "model":
            first(name, model_values)
    if "gen_lens" in values and not isinstance(values["gen_lens"], tuple):
        from dllmrl.config import parse_gen_lens

        values["gen_lens"] = parse_gen_lens(values["gen_lens"])
    # The model's steps belong to the model's gen_len: at another length the protocol's rule applies.
    if sources.get("steps") == "model" and "gen_len" in model_values:
        lens = values.get("gen_lens", (values.get("gen_len"),))
        if tuple(lens) != (model_values["gen_len"],):
            values["steps"] = protocol.get("steps", defaults.get("steps"))
            sources["steps"] = "protocol"
    for name, fn in computed.items():
        values[name], sources[name] = fn(values), "protocol"
    return values, sources


def resolve(model: str, given: dict[str, Any], fallback: dict[str, Any]) -> dict[str, Any]:
    """For library callers: each key of ``fallback`` from ``given`` (unless None), else the model's
    dllmrl.json, else ``fallback`` (``layered`` with these keys as the protocol)."""
    values, _ = layered("", {"model": model, **{k: None for k in fallback}}, {"model": model, **given},
                        protocol=fallback, model_keys={k: k for k in fallback})
    return {k: values[k] for k in fallback}
