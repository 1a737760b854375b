"""``dllmrl score TASK FILE.jsonl``: re-score completions made by any tool with the pack's own verifier."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from dllmrl.commands.options import Resolved, config_options


@dataclass(frozen=True)
class ScoreConfig:
    """Options of ``dllmrl score``."""

    out: str | None = None
    """Write each line back with 'extracted' and 'correct' added."""
    prompt_style: str = "eval"
    """Prompt style the completions answered (its prefill, e.g. '<reasoning>', counts for format rewards)."""

EPILOG = """Each line holds 'completion' plus the task's ground truth:

  gsm8k, math500: answer          countdown: numbers, target
  sudoku: puzzle, solution        humaneval, mbpp: task_id

Examples:

  dllmrl score gsm8k generations.jsonl

  dllmrl score sudoku runs/eval/sudoku-x/records.jsonl --out rescored.jsonl
"""


def read_lines(path: Path) -> list[dict]:
    from dllmrl.errors import DataError

    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a JSONL file with one completion per line")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n} is not valid JSON ({e.msg}); fix or remove the line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n} is not a JSON object")
        rows.append(row)
    return rows


@config_options("score", ScoreConfig)
def score_command(
    task: Annotated[str, typer.Argument(help="Task pack (dllmrl ls tasks).")],
    file: Annotated[Path, typer.Argument(help="JSONL: 'completion' plus the task's ground-truth fields on each line.")],
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Re-score completions: prints accuracy (and the task's own metrics); --out writes the scored lines."""
    out = Path(opts["out"]) if opts["out"] is not None else None
    prompt_style = opts["prompt_style"]
    from rich.console import Console

    from dllmrl.evaluation.loop import score_file
    from dllmrl.ui import progress, table
    from dllmrl.tasks.base import get_task

    pack = get_task(task)
    pack.check_style(prompt_style)
    rows = read_lines(file)
    if not rows:
        from dllmrl.errors import DataError

        raise DataError(f"{file} holds no lines to score")
    with progress() as bar:
        t = bar.add_task(f"scoring {task}", total=len(rows), info="")
        scored = score_file(pack, rows, prompt_style=prompt_style, on_row=lambda i: bar.advance(t))
    correct = sum(bool(r["correct"]) for r in scored)
    metrics = {"accuracy": correct / len(scored), **pack.summary(scored)}
    Console().print(table(f"{task}: {file.name}", ["metric", "value"], [*metrics.items(), ("n", len(scored))]))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored), encoding="utf-8")


def register(app: typer.Typer) -> None:
    app.command("score", epilog=EPILOG, no_args_is_help=True)(score_command)
