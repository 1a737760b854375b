"""Eval records: what makes two comparable, reading them back, and folding new ones into ``records.jsonl``.

A record is one JSON line per (example, settings). ``records.jsonl`` is only ever appended to, in
example order within each merge, and a record whose (id, settings) is already there is never written
twice, so a crash at any point leaves a file that a rerun can complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from dllmrl.config import SamplerConfig
from dllmrl.io.jsonl import append_jsonl, read_jsonl

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"
RESULTS = "results.json"


def settings_for(cfg: Any, scfg: SamplerConfig, model: Mapping[str, Any], task_version: str) -> dict[str, Any]:
    """What makes two records comparable: the model, the task and its version, the prompt and the sampler
    (``cfg``: an EvalConfig)."""
    return {**dict(model), "task": cfg.task, "task_version": task_version, "split": cfg.split, "prompt_style": cfg.prompt_style, "raw": cfg.raw,
            "gen_len": scfg.gen_len, "steps": scfg.steps, "block_len": scfg.block_len, "temperature": scfg.temperature,
            "remasking": scfg.remasking, "cfg_scale": scfg.cfg_scale, "decode": scfg.decode,
            "threshold": scfg.threshold if scfg.decode == "threshold" else None,
            **({"cache": scfg.cache} if scfg.cache != "none" else {}),  # absent when off: older records still match
            "seed": cfg.seed if scfg.temperature > 0 or scfg.remasking == "random" else None}


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records already written (none when the file is absent); a torn last line is skipped with a warning."""
    path = Path(path)
    return read_jsonl(path) if path.is_file() else []


def record_key(rec: Mapping[str, Any]) -> tuple[str, str]:
    return str(rec.get("id")), json.dumps(rec.get("settings"), sort_keys=True)


def fold_in(path: Path, rows: Iterable[Mapping[str, Any]], order: Sequence[str]) -> int:
    """Append to ``path`` the ``rows`` it does not hold yet, sorted by their id's place in ``order``.

    Ids outside ``order`` (left by a run with another --limit) keep their relative place at the end.
    Returns how many rows were appended.
    """
    seen = {record_key(r) for r in read_records(path)}
    place = {ex_id: i for i, ex_id in enumerate(order)}
    new: list[Mapping[str, Any]] = []
    for r in rows:
        k = record_key(r)
        if k not in seen:
            seen.add(k)
            new.append(r)
    new.sort(key=lambda r: place.get(str(r.get("id")), len(place)))
    if new:
        append_jsonl(path, new)
    return len(new)
