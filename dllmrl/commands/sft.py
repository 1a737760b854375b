"""``dllmrl sft TASK``: masked-diffusion supervised fine-tuning on a task pack's gold completions."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dllmrl.commands.options import Resolved, config_options
from dllmrl.config import ModelConfig
from dllmrl.training.sft_config import SftConfig

EPILOG = """Examples:

  python3 -m dllmrl.models.tiny runs/tiny-base --hidden 128 --layers 4 --max-len 64

  dllmrl sft sudoku --model runs/tiny-base --prompt-style compact --gen-len 32 --lr 1e-3 --max-steps 1500 -o runs/sft-sudoku

  dllmrl sft gsm8k --model GSAI-ML/LLaDA-8B-Instruct --lora on --lr 1e-4 --batch-size 4 --grad-accum 8

Ctrl-C saves a checkpoint; the same command plus --resume continues the run exactly.

The trained model lands in OUTPUT/model (full fine-tuning: use it with --model) or OUTPUT/adapter (LoRA: use it with --adapter on the same --model).

scripts/make_tiny_llada.sh rebuilds the shipped tiny model (checkpoints/tiny-llada).
"""


@config_options("sft", SftConfig, ModelConfig, exclude={"adapter", "adapter_subfolder"})
def sft_command(
    task: Annotated[Optional[str], typer.Argument(help="Task pack to train on (see `dllmrl ls tasks`); may come from --config.")] = None,
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Supervised fine-tuning with the masked-diffusion objective: the prompt is kept, each completion token
    is masked with probability t ~ U(0, 1) per sequence, and the cross-entropy on masked tokens is weighted by 1/t."""
    from dllmrl.errors import ConfigError

    if opts["task"] is None:
        raise ConfigError("dllmrl sft needs a TASK (e.g. dllmrl sft sudoku) or a --config file that names one")
    cfg, mcfg = opts.build(SftConfig), opts.build(ModelConfig)
    task, model = cfg.task, mcfg.model

    from dllmrl.config import config_dict
    from dllmrl.training.sft import resolve_config, run_sft
    from dllmrl.ui import kv_table, progress, stderr_console

    console = stderr_console()
    console.print(kv_table(f"dllmrl sft {task}", config_dict(mcfg, resolve_config(cfg, model))))
    with progress(console) as bar:
        job = bar.add_task("sft", total=cfg.max_steps, info="")

        def on_progress(p) -> None:
            if p.resumed_from is not None and p.step == p.resumed_from + 1:
                bar.console.print(f"resumed from the checkpoint of step {p.resumed_from}", highlight=False)
            info = None
            if p.metrics:
                m = p.metrics
                info = f"loss {m['loss']:.3f}  ce {m['ce']:.3f}  acc {m['acc']:.3f}  lr {m['lr']:.2g}"
                if "eval_accuracy" in m:
                    info += f"  eval {m['eval_accuracy']:.3f}"
            bar.update(job, completed=p.step, **({"info": info} if info else {}))

        result = run_sft(cfg, mcfg, on_progress=on_progress)
    if result.interrupted:
        console.print(f"[yellow]interrupted at step {result.step}[/]; saved {result.checkpoint}. "
                      f"Continue with the same command plus --resume.")
        raise typer.Exit(130)
    flag = "--adapter" if result.lora else "--model"
    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
    console.print(f"[green]done[/]: {result.step} steps{resumed}; metrics in {result.run_dir / 'metrics.jsonl'}; "
                  f"trained {'adapter' if result.lora else 'model'} in {result.model_dir}")
    base = f" --model {model}" if result.lora else ""
    console.print(f"evaluate it with: dllmrl eval {task}{base} {flag} {result.model_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sft", epilog=EPILOG, no_args_is_help=True)(sft_command)
