"""``dllmrl bench``: the sampler and a training micro-step against their forward-pass floors."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from dllmrl.commands.options import Resolved, config_options
from dllmrl.config import BenchConfig, ModelConfig

EPILOG = """Examples:

  dllmrl bench --model checkpoints/tiny-llada --prompt-len 32 --gen-len 32

  dllmrl bench --tiny-vocab 32000 --json

  dllmrl bench --model GSAI-ML/LLaDA-8B-Instruct --batch-size 4 --gen-len 256 --device cuda

  dllmrl bench --shape llada-8b --device cuda --cache none --cache dual --decode fixed --decode threshold
"""


@config_options("bench", BenchConfig, ModelConfig, exclude={"adapter", "adapter_subfolder"})
def bench_command(
    shape: Annotated[Optional[str], typer.Option("--shape", help="Time a published architecture with random weights instead of --model: llada-8b or dream-7b (no download).")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="With --shape: keep only this many layers.")] = None,
    hidden: Annotated[Optional[int], typer.Option("--hidden", help="With --shape: shrink the hidden size (MLP scaled alike; for a CPU smoke test).")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="With --shape and --hidden: attention heads.")] = None,
    tiny_vocab: Annotated[Optional[int], typer.Option("--tiny-vocab", help="Time a random tiny ModernBERT with this vocabulary instead of --model (e.g. 100 vs 32000 shows trajectory memory does not depend on it).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads (default: torch's choice).")] = None,
    no_train: Annotated[bool, typer.Option("--no-train", help="Skip the training micro-step.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else on stdout.")] = False,
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Time the forward-pass floor, the sampler and a training micro-step; report peak memory."""
    cfg, mcfg = opts.build(BenchConfig), opts.build(ModelConfig)
    batch_size, prompt_len, gen_len, k_steps = cfg.batch_size, cfg.prompt_len, cfg.gen_len, cfg.k_steps
    import torch
    from rich.console import Console

    from dllmrl.bench import random_tiny_adapter, run_bench, train_step_fns
    from dllmrl.models import load_model, resolve_device, resolve_dtype
    from dllmrl.ui import stderr_console, table

    if threads:
        torch.set_num_threads(threads)
    if shape:
        from dllmrl.models.shapes import random_shape_adapter

        dev = resolve_device(mcfg.device)
        adapter = random_shape_adapter(shape, layers=layers, hidden=hidden, heads=heads, device=dev,
                                       dtype=resolve_dtype(mcfg.dtype, dev), seed=cfg.seed)
    elif tiny_vocab:
        adapter = random_tiny_adapter(tiny_vocab, max_len=prompt_len + gen_len)
        dev = resolve_device(mcfg.device)
        adapter.model.to(dev, resolve_dtype(mcfg.dtype, dev))
    else:
        adapter = load_model(mcfg)
    status = stderr_console().status("benchmarking")
    with status:
        res = run_bench(adapter, cfg, train_step=None if no_train else train_step_fns(),
                        on_phase=lambda name: status.update(f"timing: {name}"))
    res["model"] = adapter.name
    if as_json:
        typer.echo(json.dumps(res))
        return
    rows = [
        ("forward floor (steps plain forwards)", f"{res['floor_s']:.3f} s", ""),
        ("sampler (eval)", f"{res['sampler_s']:.3f} s", f"{res['sampler_floor_ratio']:.3f}x floor"),
        ("rollout (training: T=0.9, top-K greedy kept)", f"{res['rollout_s']:.3f} s", f"{res['rollout_floor_ratio']:.3f}x floor"),
        ("generated tokens / s", f"{res['tokens_per_s']:.0f}", ""),
        ("trajectory memory / sequence", f"{res['trajectory_bytes_per_seq'] / 1024:.1f} KiB", ""),
    ]
    if "train_batched_s" in res:
        rows += [
            ("train micro-step floor (fwd+bwd)", f"{res['train_floor_s'] * 1000:.1f} ms", ""),
            ("train micro-step, batched", f"{res['train_batched_s'] * 1000:.1f} ms", f"{res['train_floor_ratio']:.3f}x floor"),
            ("train micro-step, per sample", f"{res['train_per_sample_s'] * 1000:.1f} ms",
             f"batched is {res['train_batched_speedup']:.2f}x faster"),
        ]
    for row in res.get("settings", []):
        for name in ("eval", "rollout"):
            rows.append((f"{name}, --cache {row['cache']} --decode {row['decode']}",
                         f"{row[name + '_tokens_per_s']:.0f} tok/s", f"{row[name + '_nfe']} forwards"))
    peaks = [k for k in res if k.endswith("_peak_mb")]
    rows += [(f"peak memory: {k[:-8].replace('_', ' ')}", f"{res[k]:.0f} MB", "") for k in peaks]
    rows.append(("peak RSS (process)", f"{res['peak_rss_mb']:.0f} MB", ""))
    title = (f"{res['model']} on {res['device']} ({res['dtype']}, {res['threads']} threads): batch {batch_size}, "
             f"prompt {prompt_len}, gen {gen_len}, steps {res['steps']}, K {k_steps}")
    Console().print(table(title, ["measure", "value", "ratio"], rows))


def register(app: typer.Typer) -> None:
    app.command("bench", epilog=EPILOG)(bench_command)
