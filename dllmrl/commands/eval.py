"""``dllmrl eval TASK``: accuracy of a model on a task pack, per generation length, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dllmrl.commands.options import Resolved, config_options
from dllmrl.config import BlendConfig, GuidanceConfig, ModelConfig
from dllmrl.evaluation.loop import EvalConfig

EPILOG = """Examples:

  dllmrl eval sudoku --model checkpoints/tiny-llada --adapter checkpoints/tiny-llada-adapters --adapter-subfolder sudoku/egspo-sa --limit 32

  dllmrl eval gsm8k --model GSAI-ML/LLaDA-8B-Instruct --gen-len 128,256,512 --batch-size 16

  dllmrl eval math500 --adapter REPO --adapter-subfolder math/egspo-sa --out runs/eval/math-egspo-sa

  dllmrl eval gsm8k --adapter gsm8k=REPO:gsm8k/egspo-sa --adapter math=REPO:math/egspo-sa --blend gsm8k=0.5,math=0.5

Rerunning the same command resumes: examples that already have a record are not generated again.
"""

@config_options("eval", EvalConfig, ModelConfig, GuidanceConfig, BlendConfig)
def eval_command(
    task: Annotated[Optional[str], typer.Argument(help="Task pack (dllmrl ls tasks): sudoku, countdown, gsm8k, math500, humaneval, mbpp; may come from --config.")] = None,
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Evaluate a model on a task: one JSONL record per example, a results.json, and accuracy per generation length.

    Steps default to gen_len / 2 (the reference's rule); options not given come from --config, then the
    model directory's dllmrl.json, then the published protocol (block 32, temperature 0).
    """
    from rich.console import Console

    from dllmrl.errors import ConfigError
    from dllmrl.tasks.base import get_task
    from dllmrl.ui import kv_table, stderr_console

    if task is None and opts["task"] is None:
        raise ConfigError("dllmrl eval needs a TASK (e.g. dllmrl eval sudoku) or a --config file that names one")
    pack = get_task(opts["task"])  # an unknown task fails before anything heavy happens
    cfg = opts.build(EvalConfig)
    pack.check_split(cfg.split)
    pack.check_style(cfg.prompt_style)
    mcfg, gcfg, bcfg = opts.build(ModelConfig), opts.build(GuidanceConfig), opts.build(BlendConfig)
    from dataclasses import replace

    from dllmrl.adapter_spec import named_adapters
    from dllmrl.sampling.blend import apply_blend, check_blend

    named = named_adapters(mcfg.adapter, mcfg.adapter_subfolder)
    check_blend(bcfg, named, cfg.cache)  # a bad blend fails before the weights load
    blend = bcfg.record(named, cfg.seed) if bcfg.active else None

    from dllmrl.evaluation.shards import Ranks, join_launch

    # one process of several under torchrun / accelerate launch
    mcfg = replace(mcfg, device=join_launch(mcfg.device))
    main = Ranks.current().main
    model, adapter, adapter_subfolder, steps = mcfg.model, mcfg.adapter, mcfg.adapter_subfolder, cfg.steps
    err = stderr_console()
    shown = {"model": model, "adapter": adapter, **{k: v for k, v in cfg.__dict__.items() if v is not None}}
    shown["steps"] = steps if steps is not None else "gen_len / 2"
    if gcfg.guidance != "none":
        shown.update({k: v for k, v in gcfg.__dict__.items() if v is not None})
    if blend is not None:
        shown["blend"] = blend
    if main:
        err.print(kv_table("dllmrl eval", shown))

    from dllmrl.config import model_max_positions
    from dllmrl.models import load_model

    adapter_ = apply_blend(load_model(mcfg), bcfg, named, cfg.cache)
    for g in cfg.gen_lens:  # before any sampling allocates for a length the model cannot hold
        cfg.sampler_config(g).check_fits(model_max_positions(adapter_.model))
    reward = None
    if gcfg.guidance != "none":
        from dllmrl.sampling.guidance import check_vocabularies, load_reward_model

        reward = load_reward_model(gcfg.reward_model, adapter_.device, adapter_.dtype)
        check_vocabularies(adapter_, reward)
    # as JSON reads it back (records are compared as dicts): several adapters are a list
    info = {"model": model, "adapter": list(adapter) if isinstance(adapter, tuple) else adapter,
            "adapter_subfolder": list(adapter_subfolder) if isinstance(adapter_subfolder, tuple) else adapter_subfolder}
    if blend is not None:  # part of every record's settings, so a changed blend regenerates
        info["blend"] = blend
    if not main:  # the other ranks generate their share; rank 0 reports
        from dllmrl.evaluation.loop import evaluate

        evaluate(pack, adapter_, cfg, model_info=info, guidance=gcfg, reward=reward)
        return
    results = run_with_progress(pack, adapter_, cfg, info, gcfg, reward)
    Console().print(results_table(results))
    if bcfg.blend_kl:
        write_kl(adapter_, Path(cfg.out), blend, err)
    err.print(f"[dim]records: {results.records_path}  results: {Path(cfg.out) / 'results.json'}[/]")


def write_kl(adapter, out: Path, blend: dict, err) -> None:
    """OUT/kl_to_base.json: the blend's mean KL to the base over what THIS run generated (resumed records
    were generated earlier and are not in it; delete the records to measure every example)."""
    import json

    kl = adapter.kl_to_base
    if kl is None:
        err.print("[yellow]--blend-kl: nothing was generated in this run (every record resumed), so no KL; "
                  "delete the records to measure it[/]")
        return
    (out / "kl_to_base.json").write_text(json.dumps(
        {"kl_to_base": kl, "positions": adapter.kl_rows, "blend": blend}, indent=1) + "\n")
    err.print(f"mean KL(blend || base) per decoded position and step: {kl:.4f} nats over {adapter.kl_rows} positions")


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
