"""``dllmrl train TASK``: RL post-training (EGSPO, EGSPO-SA, diffu-GRPO; baselines wd1, SPG, d2-StepMerge) with LoRA."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

EPILOG = """Examples:

  dllmrl train sudoku --model checkpoints/tiny-llada --max-steps 200 -o runs/tiny-egspo-sa

  dllmrl train sudoku --model checkpoints/tiny-llada -o runs/tiny-egspo-sa --resume       (Ctrl-C saves; this continues)

  dllmrl train countdown --method egspo --select random --k-steps 8 --temperature 0.2

  dllmrl train gsm8k --method diffu-grpo --mu 12 --beta 0.04

  dllmrl train sudoku --method spg --eubo-beta 1.0 --mix-weight 0.5       (baselines: wd1, spg, d2-stepmerge)

  dllmrl train sudoku --method egspo --select entropy-mass --entropy-mass 0.7 --k-steps 32

  accelerate launch --config_file configs/accelerate_zero2.yaml -m dllmrl.cli train gsm8k \\
      --model GSAI-ML/LLaDA-8B-Instruct --method egspo-sa --lambda 1 --lambda-halve-every 500

Defaults are the paper's: LoRA r 128 / alpha 64 / dropout 0.05, AdamW (0.9, 0.99) with weight decay 0.1,
lr 3e-5, grad-norm 0.2, K = 8 steps, G = 8 generations, gen-len 256, 128 steps, block 32, temperature 0.9
(a model directory's dllmrl.json overrides the sampler settings). The adapter lands in OUTPUT/adapter.
"""


from dllmrl.commands.options import Resolved, config_options
from dllmrl.config import ModelConfig, SamplerConfig, parse_reward_weights  # noqa: F401  (parse_reward_weights: API)
from dllmrl.training.train_config import TrainConfig


@config_options("train", TrainConfig, SamplerConfig, ModelConfig)
def train_command(
    task: Annotated[Optional[str], typer.Argument(help="Task pack to train on (see `dllmrl ls tasks`); may come from --config.")] = None,
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Post-train a diffusion LM with RL on a task's rewards: EGSPO (entropy-guided steps), EGSPO-SA (plus stepwise
    advantages from one-shot greedy completions), diffu-GRPO (the d1 baseline), or the baselines wd1, SPG and
    d2-StepMerge (`dllmrl ls methods`)."""
    from dllmrl.config import config_dict
    from dllmrl.errors import ConfigError
    from dllmrl.training.trainer import (
        TrainingInterrupted, check_k_steps, check_no_cache, resolve_train_config, train, training_sampler_config,
    )
    from dllmrl.ui import kv_table, progress, stderr_console, table
    from dllmrl.tasks.base import get_task

    if opts["task"] is None:
        raise ConfigError("dllmrl train needs a TASK (e.g. dllmrl train sudoku) or a --config file that names one")
    cfg = opts.build(TrainConfig, reward_weights=opts["reward_weights"] or ())
    mcfg = opts.build(ModelConfig)
    from dllmrl.adapter_spec import single_adapter

    single_adapter(mcfg.adapter, mcfg.adapter_subfolder, "train")  # several adapters blend only at sampling time
    scfg = training_sampler_config(mcfg.model, **opts.build(SamplerConfig).__dict__)
    check_no_cache(scfg)  # train() checks these too; here they fail before the config table is printed
    check_k_steps(cfg, scfg)
    task, model = cfg.task, mcfg.model
    main = _is_rank0()
    console = stderr_console()
    get_task(task)  # an unknown task fails here, before the config table
    resolved = resolve_train_config(cfg, model)
    if main:
        console.print(kv_table(f"dllmrl train {task}", config_dict(resolved, scfg, mcfg)))

    # metrics.jsonl key -> short column header of the table printed every --log-every steps
    columns = {"reward": "reward", "accuracy": "acc", "kl": "kl", "clip_ratio": "clip", "entropy_selected": "entropy",
               "lambda": "λ", "lr": "lr", "step_s": "s/step"}
    with progress(console, disable=not main) as bar:
        job = bar.add_task(f"train {resolved.method}", total=resolved.max_steps, info="")

        def on_step(report) -> None:
            if report.resumed_from is not None and report.step == report.resumed_from + 1:
                bar.console.print(f"resumed from the checkpoint of step {report.resumed_from}", highlight=False)
            m = report.metrics
            bar.update(job, completed=report.step,
                       info=f"reward {m.get('reward', float('nan')):.3f}  acc {m.get('accuracy', float('nan')):.3f}")
            if report.step % resolved.log_every == 0 or report.step == report.max_steps:
                bar.console.print(table(f"step {report.step}", ["step", *columns.values()],
                                        [[report.step, *(m.get(k) for k in columns)]]))

        try:
            result = train(cfg, scfg, mcfg, on_step=on_step)
        except TrainingInterrupted as e:
            console.print(f"[yellow]{e}[/]", highlight=False)
            raise typer.Exit(130) from None
    if main:
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
        console.print(f"[green]done[/]: {result.step} steps{resumed}; metrics in {result.run_dir / 'metrics.jsonl'}; "
                      f"adapter in {result.adapter_dir}", highlight=False)
        console.print(f"evaluate it with: dllmrl eval {task} --model {model} --adapter {result.adapter_dir}",
                      highlight=False)


def _is_rank0() -> bool:
    """Under accelerate launch / torchrun only rank 0 prints (read from the launcher's environment, so that
    no accelerate state is created before the trainer's own Accelerator)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EPILOG, no_args_is_help=True)(train_command)
