"""Published architectures with random weights, for timing at full scale without a download.

    adapter = random_shape_adapter("llada-8b", layers=2, device="cuda", dtype=torch.bfloat16)

The shapes (``data/<name>.json``) restate the public config.json of each model. ``layers``
shrinks the depth; ``hidden`` and ``heads`` shrink the width (for a CPU smoke test), with the
MLP width scaled alike and the key/value heads kept dividing the query heads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dllmrl.errors import ConfigError
from dllmrl.models.base import ModelAdapter

SHAPES = ("llada-8b", "dream-7b")
DATA = Path(__file__).parent / "data"


def shape_config(name: str, *, layers: int | None = None, hidden: int | None = None, heads: int | None = None):
    """The transformers config of a named shape, shrunk as asked."""
    if name not in SHAPES:
        raise ConfigError(f"--shape must be one of {', '.join(SHAPES)}, got '{name}'")
    spec = json.loads((DATA / f"{name}.json").read_text())
    c = dict(spec["config"])
    if spec["family"] == "llada":
        from dllmrl.models.llada import LLaDAConfig as cls

        keys = ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size")
    else:
        from dllmrl.models.dream import DreamConfig as cls

        keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    d, n_layers, n_heads, n_kv, mlp = keys
    if layers is not None:
        c[n_layers] = layers
    if hidden is not None or heads is not None:
        new_hidden = hidden or c[d]
        new_heads = heads or c[n_heads]
        if new_hidden % new_heads or (new_hidden // new_heads) % 2:
            raise ConfigError(f"--hidden {new_hidden} with --heads {new_heads} needs an even head size; pick --heads "
                              "dividing --hidden into an even number")
        ratio = c[n_heads] // c[n_kv]  # query heads per key/value head
        c[n_kv] = new_heads // ratio if new_heads % ratio == 0 and new_heads >= ratio else new_heads
        c[mlp] = max(2, c[mlp] * new_hidden // c[d])
        c[d], c[n_heads] = new_hidden, new_heads
    return spec["family"], cls(**c)


def random_shape_adapter(name: str, *, layers: int | None = None, hidden: int | None = None, heads: int | None = None,
                         device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                         seed: int = 0) -> ModelAdapter:
    """The named architecture on dllmrl's native class, random weights built directly on ``device`` in ``dtype``."""
    family, conf = shape_config(name, layers=layers, hidden=hidden, heads=heads)
    if family == "llada":
        from dllmrl.models.llada import LLaDAModelLM as model_cls
    else:
        from dllmrl.models.dream import DreamModel as model_cls
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # no float32 copy of 8B parameters first
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            model = model_cls(conf).eval()
    finally:
        torch.set_default_dtype(previous)
    eos = conf.eos_token_id
    return ModelAdapter(model=model, tokenizer=None, mask_id=int(conf.mask_token_id), eos_ids=(int(eos),) if eos is not None else (),
                        pad_id=conf.pad_token_id, shift_logits=family == "dream", family=family, name=f"random-{name}")
