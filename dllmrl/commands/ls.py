"""``dllmrl ls tasks|methods|models``: what is registered (cheap: no model is loaded)."""

from __future__ import annotations

from typing import Annotated

import typer

WHAT = ("tasks", "methods", "models")


def ls_command(what: Annotated[str, typer.Argument(help="tasks, methods or models.")] = "tasks") -> None:
    """List registered task packs (with splits and sizes), training methods or model families."""
    from rich.console import Console

    from dllmrl.errors import ConfigError
    from dllmrl.registry import METHODS, MODELS, TASKS
    from dllmrl.ui import table

    if what not in WHAT:
        raise ConfigError(f"dllmrl ls takes one of {', '.join(WHAT)}, got '{what}'")
    console = Console()
    if what == "tasks":
        from dllmrl.tasks.base import get_task

        rows = []
        for name in TASKS.names():
            splits = get_task(name).splits()
            rows.append((name, ", ".join(f"{s} ({n})" for s, n in splits.items())))
        console.print(table("task packs", ["task", "splits (examples)"], rows))
    elif what == "methods":
        from rich.table import Table

        from dllmrl.methods import get_method

        # text columns read left to right; a long paper reference folds instead of being cut at the terminal's edge
        t = Table(title="training methods", title_justify="left")
        t.add_column("method", no_wrap=True)
        t.add_column("summary")
        t.add_column("paper", overflow="fold")
        for name in METHODS.names():
            method = get_method(name)
            t.add_row(name, method.summary, method.paper)
        console.print(t)
    else:
        import dllmrl.models  # noqa: F401  (registers the families)

        console.print(table("model families (config.json model_type)", ["model_type"], [(n,) for n in MODELS.names()]))


def register(app: typer.Typer) -> None:
    app.command("ls")(ls_command)
