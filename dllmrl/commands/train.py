"""``dllmrl train TASK``: RL post-training (EGSPO, EGSPO-SA, diffu-GRPO) with LoRA on accelerate."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from dllmrl.commands.options import (
    AdapterOpt, AdapterSubfolderOpt, CfgScaleOpt, DecodeOpt, DeviceOpt, DtypeOpt, ModelOpt, RemaskingOpt, ThresholdOpt,
    TrustRemoteCodeOpt,
)
from dllmrl.commands.sft import field_help

EPILOG = """Examples:

  dllmrl train sudoku --model checkpoints/tiny-sudoku --max-steps 200 -o runs/tiny-egspo-sa

  dllmrl train sudoku --model checkpoints/tiny-sudoku -o runs/tiny-egspo-sa --resume       (Ctrl-C saves; this continues)

  dllmrl train countdown --method egspo --select random --k-steps 8 --temperature 0.2

  dllmrl train gsm8k --method diffu-grpo --mu 12 --beta 0.04

  accelerate launch --config_file configs/accelerate_zero2.yaml -m dllmrl.cli train gsm8k \\
      --model GSAI-ML/LLaDA-8B-Instruct --method egspo-sa --lambda 1 --lambda-halve-every 500

Defaults are the paper's: LoRA r 128 / alpha 64 / dropout 0.05, AdamW (0.9, 0.99) with weight decay 0.1,
lr 3e-5, grad-norm 0.2, K = 8 steps, G = 8 generations, gen-len 256, 128 steps, block 32, temperature 0.9
(a model directory's dllmrl.json overrides the sampler settings). The adapter lands in OUTPUT/adapter.
"""


def _h(name: str) -> str:
    from dllmrl.training.train_config import TrainConfig

    return field_help(TrainConfig)[name]


def parse_reward_weights(items: List[str] | None) -> tuple[tuple[str, float], ...]:
    """['correct=1', 'format=0.5'] -> (('correct', 1.0), ('format', 0.5))."""
    from dllmrl.errors import ConfigError

    out = []
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--reward-weight takes NAME=WEIGHT (e.g. correct=1), got '{item}'")
    return tuple(out)


def _opt(*decls: str, name: str):
    return typer.Option(*decls, help=_h(name))


def train_command(
    task: Annotated[str, typer.Argument(help="Task pack to train on (see `dllmrl ls tasks`).")],
    model: ModelOpt = "GSAI-ML/LLaDA-8B-Instruct",
    adapter: AdapterOpt = None,
    adapter_subfolder: AdapterSubfolderOpt = None,
    method: Annotated[str, _opt("--method", name="method")] = "egspo-sa",
    select: Annotated[str, _opt("--select", name="select")] = "entropy",
    eos_limit: Annotated[bool, _opt("--eos-limit/--no-eos-limit", name="eos_limit")] = False,
    k_steps: Annotated[int, _opt("--k-steps", name="k_steps")] = 8,
    lam: Annotated[Optional[float], _opt("--lambda", name="lam")] = None,
    lambda_halve_every: Annotated[int, _opt("--lambda-halve-every", name="lambda_halve_every")] = 0,
    normalise: Annotated[bool, _opt("--normalise/--no-normalise", name="normalise")] = True,
    step_reward: Annotated[str, _opt("--step-reward", name="step_reward")] = "all",
    beta: Annotated[float, _opt("--beta", name="beta")] = 0.04,
    kl: Annotated[str, _opt("--kl", name="kl")] = "k3",
    epsilon: Annotated[Optional[float], _opt("--epsilon", name="epsilon")] = None,
    epsilon_high: Annotated[Optional[float], _opt("--epsilon-high", name="epsilon_high")] = None,
    aggregation: Annotated[str, _opt("--aggregation", name="aggregation")] = "sum",
    mu: Annotated[Optional[int], _opt("--mu", name="mu")] = None,
    p_mask_prompt: Annotated[float, _opt("--p-mask-prompt", name="p_mask_prompt")] = 0.15,
    num_generations: Annotated[int, _opt("--num-generations", "-G", name="num_generations")] = 8,
    batch_size: Annotated[int, _opt("--batch-size", name="batch_size")] = 8,
    grad_accum: Annotated[int, _opt("--grad-accum", name="grad_accum")] = 2,
    lr: Annotated[float, _opt("--lr", name="lr")] = 3e-5,
    warmup_steps: Annotated[int, _opt("--warmup-steps", name="warmup_steps")] = 10,
    weight_decay: Annotated[float, _opt("--weight-decay", name="weight_decay")] = 0.1,
    adam_beta1: Annotated[float, _opt("--adam-beta1", name="adam_beta1")] = 0.9,
    adam_beta2: Annotated[float, _opt("--adam-beta2", name="adam_beta2")] = 0.99,
    max_grad_norm: Annotated[float, _opt("--max-grad-norm", name="max_grad_norm")] = 0.2,
    max_steps: Annotated[int, _opt("--max-steps", name="max_steps")] = 1000,
    lora_r: Annotated[int, _opt("--lora-r", name="lora_r")] = 128,
    lora_alpha: Annotated[int, _opt("--lora-alpha", name="lora_alpha")] = 64,
    lora_dropout: Annotated[float, _opt("--lora-dropout", name="lora_dropout")] = 0.05,
    load_in_4bit: Annotated[bool, _opt("--load-in-4bit", name="load_in_4bit")] = False,
    prompt_style: Annotated[Optional[str], _opt("--prompt-style", name="prompt_style")] = None,
    chat: Annotated[bool, _opt("--chat/--raw", name="chat")] = True,
    output: Annotated[Optional[str], _opt("--output", "-o", name="output")] = None,
    save_every: Annotated[int, _opt("--save-every", name="save_every")] = 100,
    keep_checkpoints: Annotated[int, _opt("--keep-checkpoints", name="keep_checkpoints")] = 0,
    eval_every: Annotated[int, _opt("--eval-every", name="eval_every")] = 0,
    eval_limit: Annotated[int, _opt("--eval-limit", name="eval_limit")] = 64,
    eval_split: Annotated[Optional[str], _opt("--eval-split", name="eval_split")] = None,
    log_every: Annotated[int, _opt("--log-every", name="log_every")] = 10,
    seed: Annotated[int, _opt("--seed", name="seed")] = 0,
    resume: Annotated[bool, _opt("--resume", name="resume")] = False,
    reward_workers: Annotated[int, _opt("--reward-workers", name="reward_workers")] = 4,
    reward_weights: Annotated[Optional[List[str]], _opt("--reward-weight", name="reward_weights")] = None,
    gen_len: Annotated[Optional[int], typer.Option("--gen-len", help="Generated positions (default: the model's dllmrl.json, else 256).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps (default: dllmrl.json, else 128).")] = None,
    block_len: Annotated[Optional[int], typer.Option("--block-len", help="Block length (default: dllmrl.json, else 32).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature of the rollouts (default: dllmrl.json, else 0.9; the paper uses 0.2 for Countdown).")] = None,
    cfg_scale: CfgScaleOpt = 0.0,
    remasking: RemaskingOpt = "low_confidence",
    decode: DecodeOpt = "fixed",
    threshold: ThresholdOpt = 0.9,
    cache: Annotated[Optional[str], typer.Option("--cache", hidden=True)] = None,
    cache_refresh: Annotated[Optional[int], typer.Option("--cache-refresh", hidden=True)] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Post-train a diffusion LM with RL on a task's rewards: EGSPO (entropy-guided steps), EGSPO-SA (plus stepwise
    advantages from one-shot greedy completions) or diffu-GRPO (the d1 baseline)."""
    from dllmrl.config import ModelConfig, config_dict
    from dllmrl.errors import ConfigError

    if cache is not None or cache_refresh is not None:  # accepted only to refuse them clearly
        flag = f"--cache {cache}" if cache is not None else "--cache-refresh"
        raise ConfigError(f"{flag} is for sample and eval only: training scores the exact states its "
                          "rollouts visited, which a cached (approximate) rollout does not; drop --cache")
    from dllmrl.training.train_config import TrainConfig
    from dllmrl.training.trainer import TrainingInterrupted, resolve_train_config, train, training_sampler_config
    from dllmrl.ui import kv_table, progress, stderr_console, table
    from dllmrl.tasks.base import get_task

    cfg = TrainConfig(
        task=task, method=method, select=select, eos_limit=eos_limit, k_steps=k_steps, lam=lam,
        lambda_halve_every=lambda_halve_every, normalise=normalise, step_reward=step_reward, beta=beta, kl=kl,
        epsilon=epsilon, epsilon_high=epsilon_high, aggregation=aggregation, mu=mu, p_mask_prompt=p_mask_prompt,
        num_generations=num_generations, batch_size=batch_size, grad_accum=grad_accum, lr=lr, warmup_steps=warmup_steps,
        weight_decay=weight_decay, adam_beta1=adam_beta1, adam_beta2=adam_beta2, max_grad_norm=max_grad_norm,
        max_steps=max_steps, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, load_in_4bit=load_in_4bit,
        prompt_style=prompt_style, chat=chat, output=output, save_every=save_every, keep_checkpoints=keep_checkpoints,
        eval_every=eval_every, eval_limit=eval_limit, eval_split=eval_split, log_every=log_every, seed=seed,
        resume=resume, reward_workers=reward_workers, reward_weights=parse_reward_weights(reward_weights),
    )
    scfg = training_sampler_config(model, gen_len=gen_len, steps=steps, block_len=block_len, temperature=temperature,
                                   cfg_scale=cfg_scale, remasking=remasking, decode=decode, threshold=threshold)
    mcfg = ModelConfig(model=model, adapter=adapter, adapter_subfolder=adapter_subfolder, device=device, dtype=dtype,
                       trust_remote_code=trust_remote_code)
    main = _is_rank0()
    console = stderr_console()
    resolved = resolve_train_config(cfg, model)
    get_task(task)  # an unknown task fails here, before the config table
    if main:
        console.print(kv_table(f"dllmrl train {task}", config_dict(resolved, scfg, mcfg)))

    # metrics.jsonl key -> short column header of the table printed every --log-every steps
    columns = {"reward": "reward", "accuracy": "acc", "kl": "kl", "clip_ratio": "clip", "entropy_selected": "entropy",
               "lambda": "λ", "lr": "lr", "step_s": "s/step"}
    with progress(console, disable=not main) as bar:
        job = bar.add_task(f"train {resolved.method}", total=resolved.max_steps, info="")

        def on_step(report) -> None:
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
        console.print(f"[green]done[/]: {result.step} steps; metrics in {result.run_dir / 'metrics.jsonl'}; "
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
