"""Weight-space baselines for sampling-time blending: several LoRA adapters merged into one, by peft.

    merge_adapters("tiny-llada", [NamedAdapter("m0", "A"), NamedAdapter("m1", "B")], (0.5, 0.5), "ties", "OUT",
                   density=0.5)

peft's ``add_weighted_adapter`` does the arithmetic. What its combinations mean for one LoRA layer
(delta_i = s_i * B_i @ A_i, s_i = alpha_i / r_i):

- ``cat``: the ranks are stacked, A = [w_i s_i A_i], B = [B_i]: exactly sum_i w_i * delta_i, at rank sum r_i.
- ``linear``: A = sum_i sqrt(w_i s_i) A_i and B = sum_i sqrt(w_i s_i) B_i at scaling 1, so the delta is
  (sum sqrt(w_i s_i) B_i)(sum sqrt(w_i s_i) A_i): cross terms, not the weighted sum (merging an adapter
  with itself at 0.5 + 0.5 doubles its delta). Same ranks only.
- ``svd``: the exact weighted sum of deltas, truncated back to the largest rank by an SVD.
- ``ties`` / ``dare`` / ``dare-ties``: TIES (trim to ``density``, elect signs, disjoint mean) and DARE (random
  drop to ``density``, rescale), applied to the A and B matrices separately as peft does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from dllmrl.adapter_spec import NamedAdapter
from dllmrl.config import ModelConfig
from dllmrl.errors import ConfigError

log = logging.getLogger(__name__)

COMBINATIONS = {"linear": "linear", "cat": "cat", "svd": "svd", "ties": "ties", "dare": "dare_linear",
                "dare-ties": "dare_ties"}
"""--how -> peft's combination_type."""
NEEDS_DENSITY = ("ties", "dare", "dare-ties")
MERGED = "default"
"""The merged adapter's peft name: 'default' is saved at the top of the output directory."""


def check_merge(n: int, weights: Sequence[float], how: str, density: float | None) -> None:
    if how not in COMBINATIONS:
        raise ConfigError(f"--how must be one of {', '.join(COMBINATIONS)}, got '{how}'")
    if n < 1:
        raise ConfigError("dllmrl merge needs --adapter DIR, once per adapter to merge")
    if len(weights) != n:
        raise ConfigError(f"{n} --adapter but {len(weights)} --weights; give one weight per adapter, e.g. "
                          f"--weights {','.join(['0.5'] * n)}")
    if how in NEEDS_DENSITY and (density is None or not 0 < density <= 1):
        raise ConfigError(f"--how {how} keeps a fraction of the entries: pass --density in (0, 1], e.g. 0.5")


def merge_adapters(model: str, adapters: Sequence[NamedAdapter], weights: Sequence[float], how: str, out: str | Path,
                   *, density: float | None = None, device: str = "cpu", dtype: str = "float32") -> Path:
    """Load ``adapters`` onto ``model``, combine them with peft, save one normal adapter directory at ``out``."""
    from dllmrl.models.loading import load_model

    check_merge(len(adapters), weights, how, density)
    spec = tuple(f"{a.name}={a.describe()}" for a in adapters)
    peft_model = load_model(ModelConfig(model=model, adapter=spec, device=device, dtype=dtype)).model
    try:
        peft_model.add_weighted_adapter([a.peft_name for a in adapters], list(weights), MERGED,
                                        combination_type=COMBINATIONS[how], density=density)
    except ValueError as e:  # e.g. linear over adapters of different ranks
        raise ConfigError(f"--how {how}: peft cannot combine these adapters ({e}); try --how cat or svd") from None
    out = Path(out)
    peft_model.save_pretrained(str(out), selected_adapters=[MERGED])
    note = {"model": model, "adapters": [a.describe() for a in adapters], "weights": list(weights), "how": how,
            "combination_type": COMBINATIONS[how], "density": density}
    (out / "dllmrl_merge.json").write_text(json.dumps(note, indent=2) + "\n")
    log.info("merged %d adapters (%s) into %s", len(adapters), how, out)
    return out


def plain_or_named(adapter, subfolder) -> tuple[NamedAdapter, ...]:
    """``dllmrl merge``'s adapters: NAME=DIR as sample/eval take them, or plain directories (named m0, m1, ...)
    sharing one --adapter-subfolder."""
    from dllmrl.adapter_spec import named_adapters

    raw = (adapter,) if isinstance(adapter, str) else tuple(adapter or ())
    if any("=" in a for a in raw):
        return named_adapters(adapter, subfolder)
    sub = subfolder if isinstance(subfolder, str) else None
    return tuple(NamedAdapter(f"m{i}", a, sub) for i, a in enumerate(raw))


def adapter_base(source: str, subfolder: str | None = None) -> str | None:
    """The base model a local adapter directory names (None for a hub id or when it names none)."""
    from dllmrl.model_defaults import find_model

    path = Path(find_model(source)).expanduser() / (subfolder or "") / "adapter_config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("base_model_name_or_path") or None
    except json.JSONDecodeError:
        return None
