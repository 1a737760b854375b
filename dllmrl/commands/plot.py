"""``dllmrl plot RUN_DIR...``: a PNG of a metric against step, one line per method (mean over seeds)."""

from __future__ import annotations

from typing import Annotated, List

import typer

EPILOG = """Example:

  dllmrl plot runs/repro/sudoku-* --metric reward --smooth 5 --out docs/sudoku_reward.png
"""


def plot_command(
    run_dirs: Annotated[List[str], typer.Argument(help="Run directories holding metrics.jsonl.")],
    metric: Annotated[str, typer.Option("--metric", help="Key of metrics.jsonl to plot (dllmrl train writes reward, accuracy, loss, kl, ...).")] = "reward",
    out: Annotated[str, typer.Option("--out", "-o", help="PNG file to write.")] = "reward.png",
    smooth: Annotated[int, typer.Option("--smooth", help="Trailing moving-average window (1 = raw).")] = 1,
    title: Annotated[str, typer.Option("--title", help="Plot title.")] = "",
) -> None:
    """Plot a training metric against step for several runs (runs named NAME-sSEED are averaged)."""
    from dllmrl.plot import plot_runs

    path = plot_runs(run_dirs, metric, out, smooth=smooth, title=title or None)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("plot", epilog=EPILOG, no_args_is_help=True)(plot_command)
