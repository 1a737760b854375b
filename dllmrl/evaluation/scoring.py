"""Scoring completions with a task pack: one record's score, and ``dllmrl score`` over a whole file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

from dllmrl.errors import DataError


def score_one(task: Any, ex: Any, completion: str, prompt_style: str) -> dict[str, Any]:
    """The scoring part of a record: extracted answer, correctness, rewards and the pack's details."""
    from dllmrl.tasks.base import response_text, total_reward

    response = response_text(task, completion, prompt_style)
    reward, parts = total_reward(task, ex, response)
    correct = bool(parts["correct"]) if "correct" in parts else bool(task.verify(ex, response))
    details = task.details(ex, response) if hasattr(task, "details") else {}
    return {"extracted": task.extract(response), "correct": correct, "reward": reward, "rewards": parts, **details}


def score_file(task: Any, rows: Sequence[Mapping[str, Any]], *, prompt_style: str = "eval",
               on_row: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Re-score completions made by any tool: each row needs ``completion`` and the task's own fields."""
    workers = max(1, int(getattr(task, "score_workers", 1)))

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
