"""``dllmrl score TASK FILE.jsonl``: re-score completions made by any tool with the pack's own verifier."""

from __future__ import annotations

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


@config_options("score", ScoreConfig)
def score_command(
    task: Annotated[str, typer.Argument(help="Task pack (dllmrl ls tasks).")],
    file: Annotated[Path, typer.Argument(help="JSONL: 'completion' plus the task's ground-truth fields on each line.")],
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Re-score completions: prints accuracy (and the task's own metrics); --out writes the scored lines."""
    from contextlib import nullcontext

    from rich.console import Console

    from dllmrl.evaluation.scoring import check_out_file, score_file, unique_rows
    from dllmrl.io.jsonl import read_jsonl, write_jsonl
    from dllmrl.io.lock import DirLock
    from dllmrl.tasks.base import get_task
    from dllmrl.ui import progress, table

    out = Path(opts["out"]) if opts["out"] is not None else None
    prompt_style = opts["prompt_style"]
    pack = get_task(task)
    pack.check_style(prompt_style)
    if out is not None:
        check_out_file(out)
    # One writer per --out file: a second score into it stops at once with the holder's pid.
    with DirLock(out.parent, "dllmrl score", option="--out", lock_file=f".{out.name}.lock") if out else nullcontext():
        rows = unique_rows(read_jsonl(file), file)  # duplicate ids (two evals into one directory) count once
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
            write_jsonl(out, scored, rerun="rerun the same command")


def register(app: typer.Typer) -> None:
    app.command("score", epilog=EPILOG, no_args_is_help=True)(score_command)
