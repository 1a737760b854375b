"""``dllmrl reward-model TASK``: train a small reward model on a DLLM's own samples (for --guidance)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from dllmrl.commands.options import Resolved, config_options
from dllmrl.config import ModelConfig, RewardModelConfig, SamplerConfig

EPILOG = """Example:

  dllmrl reward-model sudoku --model checkpoints/tiny-llada --output runs/my-reward-model
"""


@dataclass(frozen=True)
class RewardModelRun:
    """Where the reward model goes and which prompts feed it."""

    task: str | None = None
    """Task pack whose verifier labels the samples (e.g. sudoku)."""
    output: str | None = None
    """Directory for the reward model (required)."""
    prompt_style: str | None = None
    """Prompt style of the sampled prompts."""


@config_options("reward-model", RewardModelRun, RewardModelConfig, SamplerConfig, ModelConfig,
                include={SamplerConfig: {"gen_len", "steps", "block_len"}, ModelConfig: {"model", "device", "dtype"}})
def reward_model_command(
    task: Annotated[Optional[str], typer.Argument(help="Task pack whose verifier labels the samples (e.g. sudoku).")] = None,
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Sample the model's own completions, label them with the task's verifier, train a reward model."""
    from dllmrl.errors import ConfigError

    for name in ("task", "output"):
        if opts[name] is None:
            raise ConfigError(f"dllmrl reward-model needs {'a TASK' if name == 'task' else '--output DIR'}")
    cfg, mcfg = opts.build(RewardModelConfig), opts.build(ModelConfig)
    scfg = opts.build(SamplerConfig, temperature=0.0)
    task, output, num_prompts = opts["task"], opts["output"], cfg.num_prompts

    from rich.console import Console

    from dllmrl.training.reward_model import make_reward_model
    from dllmrl.ui import kv_table, progress

    with progress() as bar:
        job = bar.add_task("sampling", total=min(num_prompts, 10**9), info="")
        summary = make_reward_model(
            task, mcfg, scfg, cfg, opts["prompt_style"], output,
            on_progress=lambda n: bar.advance(job, n),
            on_epoch=lambda e, loss: bar.update(job, description=f"training, epoch {e + 1}", info=f"loss {loss:.4f}"),
        )
    Console().print(kv_table(f"reward model saved to {output}", {k: v for k, v in summary.items() if not isinstance(v, dict)}))


def register(app: typer.Typer) -> None:
    app.command("reward-model", epilog=EPILOG)(reward_model_command)
