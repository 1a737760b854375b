"""LoRA (and QLoRA) on a ``ModelAdapter``'s model through peft.

    adapter = load_model(ModelConfig(model="checkpoints/tiny-llada", device="cpu"))
    add_lora(adapter, LoraSettings(r=128, alpha=64, dropout=0.05))      # in place; returns the adapter
    add_lora(adapter, LoraSettings(), init_adapter="runs/x/adapter")    # continue from a saved adapter

The target modules come from ``adapter.lora_targets`` (per model family, see models/families.py).
The reference policy of the RL trainer is the same model with the adapter disabled
(``with peft_model.disable_adapter(): ...``), so no second copy of the base model is held.

QLoRA needs the base model loaded in 4 bits, which needs CUDA and bitsandbytes:
:func:`load_model_4bit` checks both first and says what is missing.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace

import torch

from dllmrl.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 128
    """LoRA rank (paper: 128)."""
    alpha: int = 64
    """LoRA scaling numerator; the update is scaled by alpha / r (paper: 64)."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training (paper: 0.05)."""

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"--lora-r must be positive, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"--lora-alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.dropout}")


def add_lora(adapter, settings: LoraSettings = LoraSettings(), *, init_adapter: str | None = None,
             init_subfolder: str | None = None):
    """Wrap ``adapter.model`` in a trainable peft LoRA model (in place) and return the adapter.

    ``init_adapter``: start from a saved adapter (its own r / alpha / targets win over ``settings``).
    A model that already carries an adapter (loaded with --adapter) is made trainable instead.
    """
    from peft import LoraConfig, get_peft_model

    model = adapter.model
    if hasattr(model, "peft_config"):
        for name, p in model.named_parameters():
            p.requires_grad = "lora_" in name
        log.info("continuing the loaded adapter (its own LoRA settings apply)")
        return adapter
    if init_adapter:
        from dllmrl.models.loading import load_peft_adapter

        adapter.model = load_peft_adapter(model, init_adapter, init_subfolder, trainable=True)
        return adapter
    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    cfg = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(adapter.lora_targets) if not isinstance(adapter.lora_targets, str) else adapter.lora_targets,
        bias="none",
    )
    try:
        adapter.model = get_peft_model(model, cfg)
    except ValueError as e:
        raise ConfigError(f"LoRA could not target {adapter.lora_targets} in '{adapter.name}' ({e})") from None
    n_train = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in adapter.model.parameters())
    log.info("LoRA r=%d alpha=%d on %s: %d trainable of %d parameters", settings.r, settings.alpha,
             adapter.lora_targets, n_train, n_all)
    return adapter


def lora_parameters(model) -> dict[str, torch.Tensor]:
    """name -> trainable LoRA tensor (what a training step must change)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}


def require_4bit(device: str = "auto") -> None:
    """Raise a ConfigError that says what is missing for --load-in-4bit."""
    if device == "cpu" or not torch.cuda.is_available():
        raise ConfigError("--load-in-4bit (QLoRA) needs a CUDA GPU, and none is in use here; drop --load-in-4bit")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("--load-in-4bit needs bitsandbytes: pip install bitsandbytes (or drop --load-in-4bit)")


def load_model_4bit(mcfg):
    """Load --model with NF4 4-bit weights (QLoRA) and return its ModelAdapter.

    The family loader receives the quantisation config, so the weights are quantised as they
    load, straight onto the GPU; the full-precision model never exists in host memory.
    """
    from transformers import BitsAndBytesConfig

    from dllmrl.models import load_model

    require_4bit(mcfg.device)
    if mcfg.adapter:
        raise ConfigError("--load-in-4bit with --adapter is not supported yet; merge the adapter first")
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    return load_model(replace(mcfg, dtype="bfloat16"), quantization_config=bnb)
