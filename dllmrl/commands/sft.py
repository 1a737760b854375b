"""``dllmrl sft TASK``: masked-diffusion supervised fine-tuning on a task pack's gold completions."""

from __future__ import annotations

import ast
import inspect
import textwrap
from functools import lru_cache
from typing import Annotated, Optional

import typer

from dllmrl.commands.options import DeviceOpt, DtypeOpt, ModelOpt, TrustRemoteCodeOpt

EPILOG = """Examples:

  python3 -m dllmrl.models.tiny runs/tiny-base --hidden 128 --layers 4 --max-len 64

  dllmrl sft sudoku --model runs/tiny-base --prompt-style compact --gen-len 32 --lr 1e-3 --max-steps 1500 -o runs/sft-sudoku

  dllmrl sft gsm8k --model GSAI-ML/LLaDA-8B-Instruct --lora on --lr 1e-4 --batch-size 4 --grad-accum 8

Ctrl-C saves a checkpoint; the same command plus --resume continues the run exactly.

The trained model lands in OUTPUT/model (full fine-tuning: use it with --model) or OUTPUT/adapter (LoRA: use it with --adapter on the same --model).

scripts/make_tiny_checkpoints.sh rebuilds the shipped tiny models.
"""


@lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """Field name -> the docstring under it in a dataclass body (the one source of help texts)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    out = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            out[node.target.id] = " ".join(str(nxt.value.value).split())
    return out


def _h(name: str) -> str:
    from dllmrl.training.sft_config import SftConfig

    return field_help(SftConfig)[name]


def sft_command(
    task: Annotated[str, typer.Argument(help="Task pack to train on (see `dllmrl ls tasks`).")],
    model: ModelOpt = "GSAI-ML/LLaDA-8B-Instruct",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help=_h("output"))] = None,
    split: Annotated[str, typer.Option("--split", help=_h("split"))] = "train",
    prompt_style: Annotated[Optional[str], typer.Option("--prompt-style", help=_h("prompt_style"))] = None,
    gen_len: Annotated[Optional[int], typer.Option("--gen-len", help=_h("gen_len"))] = None,
    chat: Annotated[bool, typer.Option("--chat/--raw", help=_h("chat"))] = True,
    limit: Annotated[Optional[int], typer.Option("--limit", help=_h("limit"))] = None,
    max_steps: Annotated[int, typer.Option("--max-steps", help=_h("max_steps"))] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help=_h("batch_size"))] = 16,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help=_h("grad_accum"))] = 1,
    lr: Annotated[float, typer.Option("--lr", help=_h("lr"))] = 1e-4,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help=_h("warmup_steps"))] = 50,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help=_h("weight_decay"))] = 0.1,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help=_h("max_grad_norm"))] = 1.0,
    min_t: Annotated[float, typer.Option("--min-t", help=_h("min_t"))] = 1e-3,
    lora: Annotated[str, typer.Option("--lora", help=_h("lora"))] = "auto",
    lora_r: Annotated[int, typer.Option("--lora-r", help=_h("lora_r"))] = 128,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", help=_h("lora_alpha"))] = 64,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help=_h("lora_dropout"))] = 0.05,
    save_every: Annotated[int, typer.Option("--save-every", help=_h("save_every"))] = 500,
    eval_every: Annotated[int, typer.Option("--eval-every", help=_h("eval_every"))] = 0,
    eval_limit: Annotated[int, typer.Option("--eval-limit", help=_h("eval_limit"))] = 64,
    eval_split: Annotated[Optional[str], typer.Option("--eval-split", help=_h("eval_split"))] = None,
    keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", help=_h("keep_checkpoints"))] = 0,
    log_every: Annotated[int, typer.Option("--log-every", help=_h("log_every"))] = 10,
    seed: Annotated[int, typer.Option("--seed", help=_h("seed"))] = 0,
    resume: Annotated[bool, typer.Option("--resume", help=_h("resume"))] = False,
    report_to: Annotated[str, typer.Option("--report-to", help=_h("report_to"))] = "",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Supervised fine-tuning with the masked-diffusion objective: the prompt is kept, each completion token
    is masked with probability t ~ U(0, 1) per sequence, and the cross-entropy on masked tokens is weighted by 1/t."""
    from dllmrl.config import ModelConfig
    from dllmrl.training.sft_config import SftConfig

    cfg = SftConfig(
        task=task, output=output, split=split, prompt_style=prompt_style, gen_len=gen_len, chat=chat, limit=limit,
        max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, warmup_steps=warmup_steps,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm, min_t=min_t, lora=lora, lora_r=lora_r,
        lora_alpha=lora_alpha, lora_dropout=lora_dropout, save_every=save_every, eval_every=eval_every,
        eval_limit=eval_limit, eval_split=eval_split,
        keep_checkpoints=keep_checkpoints, log_every=log_every, seed=seed,
        resume=resume, report_to=report_to,
    )
    mcfg = ModelConfig(model=model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)

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
