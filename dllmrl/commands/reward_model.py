"""``dllmrl reward-model TASK``: train a small reward model on a DLLM's own samples (for --guidance)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dllmrl.commands.options import BlockLenOpt, DeviceOpt, DtypeOpt, ModelOpt, SeedOpt

EPILOG = """Example:

  dllmrl reward-model sudoku --model checkpoints/tiny-sudoku --output checkpoints/tiny-sudoku-reward
"""


def reward_model_command(
    task: Annotated[str, typer.Argument(help="Task pack whose verifier labels the samples (e.g. sudoku).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Directory for the reward model.")],
    model: ModelOpt = "checkpoints/tiny-sudoku",
    num_prompts: Annotated[int, typer.Option("--num-prompts", help="Training-split prompts to sample from.")] = 1024,
    samples_per_prompt: Annotated[int, typer.Option("--samples-per-prompt", help="Completions per prompt.")] = 4,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature for the labelled completions.")] = 1.0,
    target: Annotated[str, typer.Option("--target", help="correct (verifier, BCE) or reward (task reward, MSE).")] = "correct",
    hidden: Annotated[int, typer.Option("--hidden", help="Reward model hidden size.")] = 64,
    layers: Annotated[int, typer.Option("--layers", help="Reward model layers.")] = 2,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the labelled samples.")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per step.")] = 64,
    holdout: Annotated[float, typer.Option("--holdout", help="Fraction of prompts held out for the accuracy report.")] = 0.1,
    prompt_style: Annotated[Optional[str], typer.Option("--prompt-style", help="Prompt style (default: the model's dllmrl.json, else train).")] = None,
    gen_len: Annotated[Optional[int], typer.Option("--gen-len", help="Generated positions (default: the model's dllmrl.json, else 256).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps (default: the model's dllmrl.json, else gen-len / 2).")] = None,
    block_len: Annotated[Optional[int], typer.Option("--block-len", help="Block length (default: the model's dllmrl.json, else 32).")] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Sample the model's own completions, label them with the task's verifier, train a reward model."""
    from dllmrl.config import ModelConfig, SamplerConfig
    from dllmrl.model_defaults import resolve
    from dllmrl.training.reward_model import RewardModelConfig

    cfg = RewardModelConfig(num_prompts=num_prompts, samples_per_prompt=samples_per_prompt, temperature=temperature,
                            target=target, hidden=hidden, layers=layers, epochs=epochs, lr=lr, batch_size=batch_size,
                            holdout=holdout, seed=seed)
    opts = resolve(model, {"prompt_style": prompt_style, "gen_len": gen_len, "steps": steps, "block_len": block_len},
                   {"prompt_style": "train", "gen_len": 256, "steps": None, "block_len": 32})
    scfg = SamplerConfig(gen_len=opts["gen_len"], steps=opts["steps"] or opts["gen_len"] // 2, block_len=opts["block_len"])
    mcfg = ModelConfig(model=model, device=device, dtype=dtype)

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
