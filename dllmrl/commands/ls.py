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
        from dllmrl.methods import get_method

        rows = [(n, get_method(n).summary, get_method(n).paper) for n in METHODS.names()]
        console.print(table("training methods", ["method", "summary", "paper"], rows))
    else:
        import dllmrl.models  # noqa: F401  (registers the families)

        console.print(table("model families (config.json model_type)", ["model_type"], [(n,) for n in MODELS.names()]))


def register(app: typer.Typer) -> None:
    app.command("ls")(ls_command)
