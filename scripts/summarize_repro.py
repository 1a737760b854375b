#!/usr/bin/env python3
"""Summarise the Sudoku reproduction: held-out accuracy per method, mean and spread over seeds.

The record of that round (results/sudoku/); new rounds use scripts/summarize_compare.py.

    python3 scripts/summarize_repro.py [--runs runs/repro] [--out results/sudoku]

Reads every ``<runs>/eval/<name>/results.json`` written by ``dllmrl eval`` (``<name>`` is
``base`` for the shipped model, else ``<method>-s<seed>``, the training run's name) and writes
``<out>/results.md`` and ``<out>/results.json``. It also copies each training run's
``metrics.jsonl`` and ``config.json`` into ``<out>/runs/<name>/`` so that the reward plot can be
redrawn from the repository (``dllmrl plot results/sudoku/runs/* --metric reward``).

Accuracy is the fraction of puzzles solved (the ``correct`` field of the eval records); cell
accuracy (the paper's Sudoku number and the training reward) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

ORDER = ["base", "diffu-grpo", "diffu-grpo-lr1e-4", "egspo", "egspo-sa-random", "egspo-sa", "egspo-sa-kl"]
LABELS = {
    "base": "base model (checkpoints/tiny-sudoku)",
    "diffu-grpo": "diffu-GRPO",
    "diffu-grpo-lr1e-4": "diffu-GRPO, lr 1e-4 (extra runs, its own learning rate)",
    "egspo": "EGSPO (λ = 0)",
    "egspo-sa-random": "EGSPO-SA, random step selection",
    "egspo-sa": "EGSPO-SA",
    "egspo-sa-kl": "EGSPO-SA, β = 0.04 (extra run, not in the equal-budget set)",
}


def method_of(name: str) -> tuple[str, int | None]:
    m = re.match(r"^(.*)-s(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def spread(xs: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": min(xs),
        "max": max(xs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/repro")
    ap.add_argument("--out", default="results/sudoku")
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    per_method: dict[str, list[dict]] = defaultdict(list)
    for res_path in sorted((runs / "eval").glob("*/results.json")):
        name = res_path.parent.name
        res = json.loads(res_path.read_text())
        length = res["lengths"][0]
        method, seed = method_of(name)
        recs = [json.loads(x) for x in Path(res["records"]).read_text().splitlines() if x.strip()] \
            if Path(res.get("records") or "").exists() else []
        overwritten = sum(1 for r in recs if len(r.get("grid") or "") == 16
                          and any(p != "0" and p != g for p, g in zip(r["puzzle"], r["grid"])))
        row = {
            "run": name,
            "givens_overwritten": overwritten / len(recs) if recs else None,
            "seed": seed,
            "n": length["n"],
            "correct": length["correct"],
            "accuracy": length["accuracy"],
            "cell_acc": length["metrics"]["cell_acc"],
            "split": res["split"],
            "settings": {k: res["settings"][k] for k in ("steps", "block_len", "temperature", "remasking", "prompt_style")}
            | {"gen_len": length["gen_len"]},
        }
        train_dir = runs / name
        if (train_dir / "metrics.jsonl").exists():
            cfg = json.loads((train_dir / "config.json").read_text()) if (train_dir / "config.json").exists() else {}
            rows = [json.loads(x) for x in (train_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
            row["train_steps"] = rows[-1]["step"] if rows else 0
            row["train_seconds"] = round(sum(r.get("step_s", 0.0) for r in rows), 1)
            row["final_reward_last10"] = statistics.fmean(r["reward"] for r in rows[-10:]) if rows else None
            dst = out / "runs" / name
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy(train_dir / "metrics.jsonl", dst / "metrics.jsonl")
            if cfg:
                shutil.copy(train_dir / "config.json", dst / "config.json")
        per_method[method].append(row)

    summary = {}
    for method in sorted(per_method, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m)):
        rows = sorted(per_method[method], key=lambda r: (r["seed"] is None, r["seed"]))
        summary[method] = {
            "label": LABELS.get(method, method),
            "seeds": [r["seed"] for r in rows],
            "accuracy": spread([r["accuracy"] for r in rows]),
            "cell_acc": spread([r["cell_acc"] for r in rows]),
            "runs": rows,
        }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")

    n_set = sorted({r["n"] for m in summary.values() for r in m["runs"]})
    lines = [
        "# Sudoku 4x4: tiny-sudoku after RL, per method",
        "",
        f"Held-out: the `test` split ({', '.join(map(str, n_set))} puzzles), greedy at the model's dllmrl.json sampler "
        "settings (compact prompt, gen_len 32, 16 steps, block 32, temperature 0). `solved` is the fraction of puzzles "
        "solved (the `correct` field of the eval records); `cell acc` is the fraction of blank cells filled as in the "
        "given solution (the reference's reward, which scores blank cells only); `givens overwritten` is the share of "
        "completions that change a given digit. Every run is rewarded with cell accuracy plus 1 for a solved puzzle "
        "(`--reward-weight correct=1`), so overwriting a given costs reward. Mean ± standard deviation over seeds, "
        "each seed beside. Choices made on the validation split: `tuning.md`.",
        "",
        "| method | seeds | solved | solved per seed | cell acc | cell acc per seed | givens overwritten | train steps | train s (sum of step_s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        acc, cell = s["accuracy"], s["cell_acc"]
        per_acc = ", ".join(f"{r['accuracy']:.3f}" for r in s["runs"])
        per_cell = ", ".join(f"{r['cell_acc']:.3f}" for r in s["runs"])
        seeds = ", ".join(str(x) for x in s["seeds"]) if s["seeds"][0] is not None else "–"
        pm = lambda d: f"{d['mean']:.3f} ± {d['std']:.3f}" if len(s["runs"]) > 1 else f"{d['mean']:.3f}"
        steps = ", ".join(str(r.get("train_steps", "–")) for r in s["runs"])
        secs = ", ".join(f"{r['train_seconds']:.0f}" if "train_seconds" in r else "–" for r in s["runs"])
        over = ", ".join(f"{r['givens_overwritten']:.1%}" if r.get("givens_overwritten") is not None else "–"
                         for r in s["runs"])
        lines.append(f"| {s['label']} | {seeds} | {pm(acc)} | {per_acc} | {pm(cell)} | {per_cell} | {over} | {steps} | {secs} |")
    lines += ["", "Made by `bash scripts/reproduce_sudoku.sh` then `python3 scripts/summarize_repro.py`.", ""]
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
