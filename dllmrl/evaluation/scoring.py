"""Scoring completions with a task pack: one record's score, and ``dllmrl score`` over a whole file."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dllmrl.errors import DataError

log = logging.getLogger(__name__)


def score_one(task: Any, ex: Any, completion: str, prompt_style: str) -> dict[str, Any]:
    """The scoring part of a record: extracted answer, correctness, rewards and the pack's details."""
    from dllmrl.tasks.base import response_text, total_reward

    response = response_text(task, completion, prompt_style)
    reward, parts = total_reward(task, ex, response)
    correct = bool(parts["correct"]) if "correct" in parts else bool(task.verify(ex, response))
    details = task.details(ex, response)
    return {"extracted": task.extract(response), "correct": correct, "reward": reward, "rewards": parts, **details}


def score_file(task: Any, rows: Sequence[Mapping[str, Any]], *, prompt_style: str = "eval",
               on_row: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Re-score completions made by any tool: each row needs ``completion`` and the task's own fields."""
    workers = max(1, task.score_workers)

    def one(i: int) -> dict[str, Any]:
        row = rows[i]
        if "completion" not in row or not isinstance(row["completion"], str):
            raise DataError(f"line {i + 1} has no 'completion' string")
        ex = task.from_fields(row)
        score = score_one(task, ex, row["completion"], prompt_style)
        if on_row:
            on_row(i)
        return {**row, "extracted": score["extracted"], "correct": score["correct"],
                **{k: v for k, v in score.items() if k not in ("extracted", "correct")}}

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(len(rows))))


def unique_rows(rows: Sequence[Mapping[str, Any]], source: Any) -> list[Mapping[str, Any]]:
    """``rows`` with each (id, settings) once, the first kept; rows without an 'id' all count.

    Two evals that once wrote into one directory leave duplicate records; counting them twice would
    weigh those examples double. Records of one id at several settings (gen_len...) are distinct.
    """
    from dllmrl.evaluation.records import record_key

    seen: set[tuple[str, str]] = set()
    out, dropped = [], 0
    for row in rows:
        if "id" in row:
            key = record_key(row)
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
        out.append(row)
    if dropped:
        log.warning("%s: %d lines repeat an id (with the same settings) and are counted once", source, dropped)
    return out


def check_out_file(out: Path) -> None:
    """``dllmrl score --out`` must name a file it can write, checked before the scoring work."""
    from dllmrl.errors import OutputError
    from dllmrl.io.lock import prepare_dir

    if out.is_dir():
        raise OutputError(f"--out {out} is a directory; pass a file path such as {out / 'scored.jsonl'}")
    prepare_dir(out.parent, "--out's folder")
    if out.exists() and not os.access(out, os.W_OK):
        raise OutputError(f"--out {out} is not writable; pass another file path")
