"""Per-model defaults a checkpoint directory can carry in ``dllmrl.json``.

The shipped tiny models were trained on compact prompts and short generations; their
directory says so, e.g. ``{"prompt_style": "compact", "gen_len": 32, "steps": 16, "block_len": 32}``,
so that ``dllmrl eval sudoku --model checkpoints/tiny-sudoku`` uses the settings the model card
reports. An option given on the command line always wins.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dllmrl.errors import DataError

log = logging.getLogger(__name__)
FILENAME = "dllmrl.json"


def read_model_defaults(model: str) -> dict[str, Any]:
    """The model directory's dllmrl.json as a dict ({} for hub ids or when absent)."""
    path = Path(model).expanduser() / FILENAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); fix or delete it") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object of option defaults")
    return data


def resolve(model: str, given: dict[str, Any], fallback: dict[str, Any]) -> dict[str, Any]:
    """For each key of ``fallback``: the given value if not None, else the model's default, else the fallback."""
    defaults = read_model_defaults(model)
    out = {}
    for key, value in fallback.items():
        if given.get(key) is not None:
            out[key] = given[key]
        elif key in defaults:
            out[key] = defaults[key]
        else:
            out[key] = value
    return out
