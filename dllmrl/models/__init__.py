"""Model adapters and loading. ``load_model(ModelConfig)`` is the entry point."""

from dllmrl.models import families as _families  # noqa: F401  (registers the built-in families)
from dllmrl.models.base import ModelAdapter
from dllmrl.models.loading import load_model, load_peft_adapter, resolve_device, resolve_dtype

__all__ = ["ModelAdapter", "load_model", "load_peft_adapter", "resolve_device", "resolve_dtype"]
