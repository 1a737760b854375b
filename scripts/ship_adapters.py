#!/usr/bin/env python3
"""Copy chosen runs' adapters into the paper's hub layout, one folder per task and method, with a card each.

    python3 scripts/ship_adapters.py TASK RUN [RUN...] [--runs runs/compare/TASK] [--dest checkpoints/tiny-llada-adapters]
        [--eval-dir RUNS/eval]

RUN is a run name under --runs (``egspo-sa-s1``) or a run directory, optionally ``=METHOD`` to name the
folder (default: the run's name without its ``-sSEED``). The result,

    DEST/README.md                        an index of what is there
    DEST/TASK/METHOD/adapter_config.json  the peft adapter (save_pretrained format)
    DEST/TASK/METHOD/adapter_model.safetensors
    DEST/TASK/METHOD/README.md            the card: base model, method, options, held-out accuracy, compute

loads as ``dllmrl eval TASK --model BASE --adapter DEST --adapter-subfolder TASK/METHOD``, from this
folder or from a hub repository holding it. The held-out numbers come from the run's evaluation in
``RUNS/eval/<run>`` (--eval-dir) when scripts/compare.sh made one (else the card says it was not evaluated).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _last_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    return rows[-1] if rows else {}


def card(task: str, method: str, run_dir: Path, evaluation: dict) -> str:
    """The card's markdown: what the adapter is, how it was trained, what it scores."""
    cfg = _json(run_dir / "config.json")
    train, model, sampler = cfg.get("train", {}), cfg.get("model", {}), cfg.get("sampler", {})
    last = _last_metrics(run_dir)
    base = model.get("model", "?")
    from dllmrl.methods import get_method

    name = train.get("method", method)
    own = (("select", "k_steps") if get_method(name).selects_steps else ()) + \
        (("merge_groups",) if name == "d2-stepmerge" else ())
    keys = ("method", *own, "mu", "lam", "beta", "lr", "max_steps", "num_generations", "batch_size", "grad_accum",
            "lora_r", "lora_alpha", "seed")
    options = ", ".join(f"{k} {train[k]}" for k in keys if train.get(k) is not None)
    lines = [
        f"# {task}/{method}", "",
        f"A LoRA adapter for `{base}`, trained on `{task}` with `{train.get('method', method)}` by dllmrl "
        f"(run `{run_dir.name}`).", "",
        f"Training options: {options}. Sampler: gen_len {sampler.get('gen_len')}, {sampler.get('steps')} steps, "
        f"block {sampler.get('block_len')}, temperature {sampler.get('temperature')}.", "",
    ]
    if last:
        lines += [f"Compute: {last.get('step')} optimizer steps, {last.get('forwards', '?')} forward and "
                  f"{last.get('backwards', '?')} backward passes over one sequence, "
                  f"{last.get('train_seconds', '?')} s of training.", ""]
    if evaluation:
        length = evaluation["lengths"][0]
        lines += [f"Held-out (greedy, `{evaluation['split']}` split, {length['n']} examples): "
                  f"{length['correct']}/{length['n']} correct ({length['accuracy']:.3f}); "
                  f"{evaluation['headline']} {length['metrics'].get(evaluation['headline'], length['accuracy']):.3f}.", ""]
    else:
        lines += ["Not evaluated on a held-out split yet.", ""]
    lines += ["```bash", f"dllmrl eval {task} --model {base} --adapter <this repository> --adapter-subfolder {task}/{method}",
              "```", ""]
    return "\n".join(lines)


def ship(run_dir: Path, dest: Path, task: str, method: str, evaluation: dict | None = None) -> Path:
    """Copy ``run_dir/adapter`` to ``dest/task/method`` with its card; returns the folder."""
    src = run_dir / "adapter"
    missing = [f for f in ADAPTER_FILES if not (src / f).exists()]
    if missing:
        raise SystemExit(f"{src} has no {', '.join(missing)}: is {run_dir} a finished training run?")
    out = dest / task / method
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in ADAPTER_FILES:
        shutil.copy2(src / f, out / f)
    (out / "README.md").write_text(card(task, method, run_dir, evaluation or {}))
    write_index(dest)
    return out


def write_index(dest: Path) -> None:
    rows = sorted(p.parent.relative_to(dest).as_posix() for p in dest.glob("*/*/adapter_config.json"))
    lines = ["# dllmrl adapters", "", "One LoRA adapter per task and method; load one with "
             "`--adapter <this folder or repository> --adapter-subfolder TASK/METHOD`.", ""]
    lines += [f"- [`{r}`]({r}/README.md)" for r in rows]
    (dest / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("runs_chosen", nargs="+", metavar="RUN[=METHOD]")
    ap.add_argument("--runs")
    ap.add_argument("--dest", default="checkpoints/tiny-llada-adapters")
    ap.add_argument("--eval-dir", help="where the runs' evaluations are (default RUNS/eval)")
    args = ap.parse_args()
    runs = Path(args.runs or f"runs/compare/{args.task}")
    eval_dir = Path(args.eval_dir) if args.eval_dir else runs / "eval"
    for spec in args.runs_chosen:
        name, _, method = spec.partition("=")
        run_dir = Path(name) if Path(name).is_dir() and "/" in name else runs / name
        method = method or run_dir.name.rsplit("-s", 1)[0]
        evaluation = _json(eval_dir / run_dir.name / "results.json")
        out = ship(run_dir, Path(args.dest), args.task, method, evaluation)
        print(f"{run_dir} -> {out}")


if __name__ == "__main__":
    main()
