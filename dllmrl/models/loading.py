"""Resolve --model / --adapter / --device / --dtype into a ready ``ModelAdapter``.

Hub ids keep the real loading path; when the hub cannot be reached and the model is not
in the local cache, loading stops at once with a line that says what to do instead of
retrying for half a minute.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import socket
from contextvars import ContextVar
from pathlib import Path
from urllib.parse import urlparse

import torch

from dllmrl.config import ModelConfig
from dllmrl.errors import ModelLoadError, UnknownNameError
from dllmrl.registry import MODELS
from dllmrl.models.base import ModelAdapter

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOCAL_HINT = "use a local model directory instead, such as checkpoints/tiny-llada"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ModelLoadError(f"--device '{device}' is not a device torch knows ({e}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} asked for CUDA, but torch sees no GPU here; use --device cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint; respects HF_HUB_OFFLINE."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hub_cache(repo_id: str, filename: str = "config.json", subfolder: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    name = f"{subfolder}/{filename}" if subfolder else filename
    return isinstance(try_to_load_from_cache(repo_id, name), str)


def resolve_source(name: str, *, what: str = "--model", filename: str = "config.json", subfolder: str | None = None) -> str:
    """Return a local directory or a hub id that can be loaded, or raise a clear error."""
    from dllmrl.model_defaults import find_model

    name = find_model(name)  # a shipped checkpoint's short name (tiny-llada) -> its installed directory
    path = Path(name).expanduser()
    if path.exists():
        where = path / subfolder if subfolder else path
        if not where.is_dir() or not (where / filename).exists():
            raise ModelLoadError(f"{what} '{where}' holds no {filename}; it is not a Hugging Face {what.strip('-')} directory")
        return str(path)
    first = Path(name.split("/")[0])
    looks_local = name.startswith((".", "/", "~")) or name.count("/") != 1 or first.is_dir()
    if looks_local or not _HUB_ID.match(name):
        parent = path.parent if str(path.parent) else Path(".")
        hint = ""
        if parent.is_dir():
            close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=1)
            if close:
                hint = f"; did you mean '{parent / close[0]}'?"
        raise ModelLoadError(f"{what} path '{name}' does not exist{hint}")
    if _in_hub_cache(name, filename, subfolder):
        return name
    if not hub_reachable():
        raise ModelLoadError(
            f"{what} '{name}' is a Hugging Face hub id, but the hub cannot be reached from here and it is not in "
            f"the local cache; download it where the hub answers (hf download {name}) and pass the directory, "
            f"or {LOCAL_HINT}"
        )
    return name


def read_model_type(source: str) -> str:
    path = Path(source)
    if path.is_dir():
        cfg_file = path / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        cfg_file = Path(hf_hub_download(source, "config.json"))
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"--model '{source}': cannot read config.json ({e})") from None
    model_type = cfg.get("model_type")
    if not model_type:
        raise ModelLoadError(f"--model '{source}': config.json has no model_type")
    return str(model_type)


_EXTRA_KWARGS: ContextVar[dict] = ContextVar("dllmrl_from_pretrained_extra", default={})


def from_pretrained_kwargs(dtype: torch.dtype) -> dict:
    """What every family passes to ``from_pretrained`` for its weights (dtype, and quantisation when asked)."""
    return {"dtype": dtype, **_EXTRA_KWARGS.get()}


def load_model(cfg: ModelConfig, *, quantization_config=None) -> ModelAdapter:
    """Load the model family named by config.json, attach the adapter, move to device.

    ``quantization_config`` (e.g. bitsandbytes 4-bit, for QLoRA) is handed to the family's
    ``from_pretrained`` so the weights are quantised as they load, straight onto the GPU.
    """
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    source = resolve_source(cfg.model)
    from dllmrl.adapter_spec import named_adapters

    adapters = named_adapters(cfg.adapter, cfg.adapter_subfolder)
    if adapters:  # before the weights load: an adapter for another base model is refused at once
        from dllmrl.model_defaults import check_adapter_base

        for a in adapters:
            check_adapter_base(cfg.model, a.source, a.subfolder)
    model_type = read_model_type(source)
    try:
        family = MODELS.get(model_type)
    except UnknownNameError:
        if not cfg.trust_remote_code:
            raise ModelLoadError(
                f"--model '{cfg.model}' has architecture '{model_type}', which dllmrl does not know; "
                f"supported: {', '.join(MODELS.names())}. Pass --trust-remote-code to run the repository's own "
                f"code as a masked LM, or {LOCAL_HINT}"
            ) from None
        family = MODELS.get("remote-code")
    log.info("loading %s (%s) on %s as %s", cfg.model, model_type, device, dtype)
    extra = {}
    if quantization_config is not None:
        extra = {"quantization_config": quantization_config, "device_map": {"": device.index or 0}}
    token = _EXTRA_KWARGS.set(extra)
    from safetensors import SafetensorError

    try:
        adapter: ModelAdapter = family(source, cfg, dtype)
    except SafetensorError as e:
        raise ModelLoadError(f"--model '{cfg.model}': {damaged_weights(source)} cannot be read ({e}); it is "
                             "truncated or damaged: copy or download it again") from None
    finally:
        _EXTRA_KWARGS.reset(token)
    adapter.name = cfg.model
    for i, a in enumerate(adapters):  # the first wraps the model in peft; the others join it by name
        adapter.model = load_peft_adapter(adapter.model, a.source, a.subfolder, name=a.peft_name, join=i > 0)
    if quantization_config is None:  # quantised weights were placed by device_map and cannot move
        adapter.model.to(device)
    adapter.model.eval()
    return adapter


def damaged_weights(source: str) -> str:
    """The first ``*.safetensors`` file of a local model directory that does not open (else the directory)."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []:
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except (SafetensorError, OSError):
            return str(f)
    return f"a weights file of {source}"


def load_peft_adapter(model, adapter: str, subfolder: str | None = None, *, trainable: bool = False,
                      name: str = "default", join: bool = False):
    """Attach a peft adapter under ``name``; ``join``: ``model`` is already a PeftModel and gains one more."""
    from peft import PeftModel
    from safetensors import SafetensorError

    source = resolve_source(adapter, what="--adapter", filename="adapter_config.json", subfolder=subfolder)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    try:
        if join:
            model.load_adapter(source, adapter_name=name, is_trainable=trainable, **kwargs)
            return model
        return PeftModel.from_pretrained(model, source, adapter_name=name, is_trainable=trainable, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise ModelLoadError(f"--adapter '{adapter}' could not be loaded onto --model: {e}") from None
    except RuntimeError as e:  # torch's "size mismatch" list: the adapter was made for another architecture
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise ModelLoadError(f"--adapter '{adapter}' does not fit --model (its weights have other shapes: it was "
                             f"made for another base model): {first}") from None
