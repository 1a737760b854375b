"""The ``dllmrl`` command: thin Typer wiring over the library.

    dllmrl sample "1030020000400201" --model checkpoints/tiny-llada
    dllmrl ls tasks

Errors the user can fix (``DllmrlError``) end as one red line; set DLLMRL_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer
from typer.core import TyperGroup

from dllmrl.errors import DllmrlError

# Each name is a module in dllmrl/commands exposing register(app).
COMMANDS = ["sample", "eval", "score", "ls", "bench", "train", "sft", "reward-model", "plot", "merge"]



class _Group(TyperGroup):
    """Turns a DllmrlError raised by any command into one red line and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DllmrlError as e:
            if os.environ.get("DLLMRL_DEBUG"):
                raise
            from dllmrl.ui import stderr_console

            stderr_console().print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True, markup=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="dllmrl",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Post-train diffusion language models with RL (EGSPO, EGSPO-SA, diffu-GRPO) and evaluate them.",
)

for _name in COMMANDS:
    importlib.import_module(f"dllmrl.commands.{_name.replace('-', '_')}").register(app)


def _setup_logging() -> None:
    from rich.logging import RichHandler

    from dllmrl.ui import stderr_console

    level = os.environ.get("DLLMRL_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=stderr_console(), show_path=False)])
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def main() -> None:
    _setup_logging()
    app()


if __name__ == "__main__":
    main()
