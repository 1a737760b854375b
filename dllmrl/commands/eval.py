"""``dllmrl eval TASK``: accuracy of a model on a task pack, per generation length, resumable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from dllmrl.commands.options import (
    AdapterOpt, AdapterSubfolderOpt, BestOfNOpt, BlockLenOpt, CacheOpt, CfgScaleOpt, DecodeOpt, DeviceOpt, DtypeOpt,
    GuidanceLrOpt, GuidanceOpt, GuidanceStepsOpt, ModelOpt, RemaskingOpt, RewardModelOpt, SeedOpt, StepsOpt,
    TemperatureOpt, ThresholdOpt, TrustRemoteCodeOpt,
)

EPILOG = """Examples:

  dllmrl eval sudoku --model checkpoints/tiny-sudoku --limit 32

  dllmrl eval gsm8k --model GSAI-ML/LLaDA-8B-Instruct --gen-len 128,256,512 --batch-size 16

  dllmrl eval math500 --adapter REPO --adapter-subfolder math/egspo-sa --out runs/eval/math-egspo-sa

Rerunning the same command resumes: examples that already have a record are not generated again.
"""

GLOBAL_DEFAULTS = {"gen_len": 256, "block_len": 32, "temperature": 0.0, "prompt_style": "eval"}


def parse_gen_lens(text: str | int | tuple | list | None) -> tuple[int, ...] | None:
    """'128,256' (the option), 256 or [128, 256] (a dllmrl.json value) -> (128, 256)."""
    if text is None:
        return None
    if isinstance(text, int):
        return (text,)
    if isinstance(text, (tuple, list)):
        text = ",".join(str(x) for x in text)
    from dllmrl.errors import ConfigError

    try:
        out = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--gen-len takes one length or several separated by commas (128,256,512), got '{text}'") from None
    if not out:
        raise ConfigError("--gen-len needs at least one length, e.g. --gen-len 256")
    return out


def default_out(task: str, model: str, adapter: str | None, subfolder: str | None) -> str:
    name = "-".join(p for p in (model, adapter, subfolder) if p)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_")[-120:]
    return str(Path("runs") / "eval" / f"{task}-{name}")


def eval_command(
    task: Annotated[str, typer.Argument(help="Task pack (dllmrl ls tasks): sudoku, countdown, gsm8k, math500, humaneval, mbpp.")],
    model: ModelOpt = "GSAI-ML/LLaDA-8B-Instruct",
    adapter: AdapterOpt = None,
    adapter_subfolder: AdapterSubfolderOpt = None,
    gen_len: Annotated[Optional[str], typer.Option("--gen-len", help="Generation length, or several separated by commas (128,256,512). Default: the model's dllmrl.json, else 256.")] = None,
    steps: StepsOpt = None,  # type: ignore[assignment]
    block_len: BlockLenOpt = None,  # type: ignore[assignment]
    temperature: TemperatureOpt = None,  # type: ignore[assignment]
    remasking: RemaskingOpt = "low_confidence",
    cfg_scale: CfgScaleOpt = 0.0,
    decode: DecodeOpt = "fixed",
    threshold: ThresholdOpt = 0.9,
    cache: CacheOpt = "none",
    prompt_style: Annotated[Optional[str], typer.Option("--prompt-style", help="eval (the published protocol), train, or compact (tiny models). Default: the model's dllmrl.json, else eval.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Send prompts without the model's chat template.")] = False,
    split: Annotated[Optional[str], typer.Option("--split", help="Split to evaluate (default: the paper's test split; sudoku: test256).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate only the first N examples.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts generated together.")] = 8,
    out: Annotated[Optional[str], typer.Option("--out", help="Directory for records.jsonl and results.json (default: runs/eval/TASK-MODEL).")] = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = "none",
    reward_model: RewardModelOpt = None,
    guidance_steps: GuidanceStepsOpt = 1,
    guidance_lr: GuidanceLrOpt = 1.0,
    best_of_n: BestOfNOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Evaluate a model on a task: one JSONL record per example, a results.json, and accuracy per generation length.

    Steps default to gen_len / 2 (the reference's rule); options not given come from the model
    directory's dllmrl.json, then from the published protocol (block 32, temperature 0).
    """
    from rich.console import Console

    from dllmrl.config import ModelConfig
    from dllmrl.evaluation.loop import EvalConfig
    from dllmrl.sampling.guidance import GuidanceConfig
    from dllmrl.model_defaults import read_model_defaults, resolve
    from dllmrl.ui import kv_table, stderr_console
    from dllmrl.tasks.base import get_task

    pack = get_task(task)  # an unknown task fails before anything heavy happens
    lens = parse_gen_lens(gen_len)
    given = {"gen_len": lens, "block_len": block_len, "temperature": temperature, "prompt_style": prompt_style}
    r = resolve(model, given, GLOBAL_DEFAULTS)
    lens = parse_gen_lens(r["gen_len"])
    defaults = read_model_defaults(model)
    if steps is None and "steps" in defaults and lens == (defaults.get("gen_len"),):
        steps = int(defaults["steps"])  # the model's steps belong to the model's gen_len only
    raw = raw or defaults.get("chat") is False
    split = split or getattr(pack, "eval_split", "test")
    if hasattr(pack, "check_split"):
        pack.check_split(split)
        pack.check_style(r["prompt_style"])
    cfg = EvalConfig(
        task=task, split=split, gen_lens=lens, steps=steps, block_len=int(r["block_len"]),  # type: ignore[arg-type]
        temperature=float(r["temperature"]), remasking=remasking, cfg_scale=cfg_scale, decode=decode,
        threshold=threshold, cache=cache, prompt_style=r["prompt_style"], raw=raw, batch_size=batch_size, limit=limit, seed=seed,
        out=out or default_out(task, model, adapter, adapter_subfolder),
    )
    mcfg = ModelConfig(model=model, adapter=adapter, adapter_subfolder=adapter_subfolder, device=device, dtype=dtype,
                       trust_remote_code=trust_remote_code)
    gcfg = GuidanceConfig(guidance=guidance, reward_model=reward_model, guidance_steps=guidance_steps,
                          guidance_lr=guidance_lr, best_of_n=best_of_n)
    err = stderr_console()
    shown = {"model": model, "adapter": adapter, **{k: v for k, v in cfg.__dict__.items() if v is not None}}
    shown["steps"] = steps if steps is not None else "gen_len / 2"
    if gcfg.guidance != "none":
        shown.update({k: v for k, v in gcfg.__dict__.items() if v is not None})
    err.print(kv_table("dllmrl eval", shown))

    from dllmrl.models import load_model

    adapter_ = load_model(mcfg)
    reward = None
    if gcfg.guidance != "none":
        from dllmrl.sampling.guidance import check_vocabularies, load_reward_model

        reward = load_reward_model(gcfg.reward_model, adapter_.device, adapter_.dtype)
        check_vocabularies(adapter_, reward)
    info = {"model": model, "adapter": adapter, "adapter_subfolder": adapter_subfolder}
    results = run_with_progress(pack, adapter_, cfg, info, gcfg, reward)
    Console().print(results_table(results))
    err.print(f"[dim]records: {results.records_path}  results: {Path(cfg.out) / 'results.json'}[/]")


def run_with_progress(pack, adapter, cfg, model_info, guidance=None, reward=None):
    from dllmrl.evaluation.loop import evaluate
    from dllmrl.ui import progress

    bars: dict[int, int] = {}
    with progress() as bar:
        def on_progress(p) -> None:
            if p.gen_len not in bars:
                bars[p.gen_len] = bar.add_task(f"{cfg.task} gen_len {p.gen_len}", total=p.total, info="")
            acc = p.correct / p.done if p.done else 0.0
            resumed = f", {p.resumed} resumed" if p.resumed else ""
            bar.update(bars[p.gen_len], completed=p.done, info=f"acc {acc:.3f} ({p.correct}/{p.done}{resumed})")

        return evaluate(pack, adapter, cfg, model_info=model_info, on_progress=on_progress, guidance=guidance,
                        reward=reward)


def results_table(results):
    from dllmrl.ui import table

    extra = sorted({k for r in results.lengths for k in r.metrics})
    if results.headline in extra:  # the paper's metric first
        extra.remove(results.headline)
        extra.insert(0, results.headline)
    cols = ["gen_len", "steps", "n", "accuracy", *extra]
    rows = [[r.gen_len, r.steps, r.n, r.accuracy, *[r.metrics.get(k) for k in extra]] for r in results.lengths]
    best = results.best
    rows.append([f"best ({best.gen_len})", best.steps, best.n, best.accuracy, *[best.metrics.get(k) for k in extra]])
    return table(f"{results.task} / {results.split}: best by {results.headline}", cols, rows)


def register(app: typer.Typer) -> None:
    app.command("eval", epilog=EPILOG, no_args_is_help=True)(eval_command)
