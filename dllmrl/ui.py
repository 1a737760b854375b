"""Rich rendering, used only by the CLI: the live unmasking view, progress bars and tables."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

_STDERR: Console | None = None


def stderr_console() -> Console:
    global _STDERR
    if _STDERR is None:
        _STDERR = Console(stderr=True)
    return _STDERR


def progress(console: Console | None = None, *, disable: bool = False) -> Progress:
    """The standard progress bar; extra fields (accuracy, reward) go in the description."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console or stderr_console(), disable=disable, transient=False,
    )


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c not in (columns[0],) else "left")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    return t


def kv_table(title: str, items: Mapping[str, Any]) -> Table:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("option", style="cyan")
    t.add_column("value")
    for k, v in items.items():
        t.add_row(k, fmt(v))
    return t


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return "" if v is None else str(v)


class UnmaskView:
    """Renders the generation region of one sequence: masks dim, this step's reveals highlighted."""

    MASK = "·"

    def __init__(self, token_text, row: int = 0):
        self.token_text = token_text  # id -> display string
        self.row = row
        self.step = 0
        self.total = 0

    def render(self, tokens: Sequence[int], revealed: Sequence[bool], mask_id: int, step: int, total: int) -> Text:
        out = Text()
        out.append(f"step {step + 1}/{total}\n", style="bold cyan")
        for tok, new in zip(tokens, revealed):
            if tok == mask_id:
                out.append(self.MASK, style="dim")
            else:
                s = self.token_text(int(tok))
                out.append(s, style="bold black on yellow" if new else "")
        return out
