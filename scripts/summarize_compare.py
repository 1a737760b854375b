#!/usr/bin/env python3
"""Summarise scripts/compare.sh: held-out accuracy per method against the base, and the compute each spent.

    python3 scripts/summarize_compare.py TASK [--runs runs/compare/TASK] [--out results/compare/TASK] [--limit N]
        [--checkpoint-limit N] [--boot 10000]
    python3 scripts/summarize_compare.py TASK --grid [--lr-file results/compare/TASK/lr.json]

Reads ``<runs>/eval/<method>-s<seed>/results.json`` (``eval-limitN`` with --limit) and the base's
``eval/base``; per method: the fraction of test examples correct (Sudoku: solved; Countdown: correct),
mean and standard deviation over seeds, the seed-averaged paired difference to the base with a paired
bootstrap 95 % interval over test examples (``dllmrl.evaluation.stats``), and from each run's
metrics.jsonl the forward and backward passes (in sequences; see ``dllmrl.training.compute``) and wall
seconds spent training. Writes ``<out>/results.md``, ``<out>/results.json`` and ``<out>/compute.png``:
held-out accuracy against training compute, from the checkpoint evaluations
(``eval-ckpt-limitN/<run>/step-N``, with --checkpoint-limit) or else from the base to each final adapter.

Each run's metrics.jsonl and config.json and its test evaluation's results.json are copied to
``<out>/runs/<method>-s<seed>/`` (metrics.jsonl, config.json, eval.json), so the numbers stay with the repository.

--grid reads ``<runs>/grid/eval/<method>-lr<lr>`` (validation) and writes the best learning rate per
method, with the whole grid, to --lr-file, and the grid table to ``<out>/grid.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from dllmrl.evaluation.stats import paired_bootstrap, paired_by_id

ORDER = ["diffu-grpo", "wd1", "spg", "d2-stepmerge", "egspo", "egspo-sa", "egspo-sa-random", "egspo-sa-mass"]
LABELS = {
    "diffu-grpo": "diffu-GRPO", "wd1": "wd1", "spg": "SPG", "d2-stepmerge": "d2-StepMerge", "egspo": "EGSPO (λ = 0)",
    "egspo-sa": "EGSPO-SA", "egspo-sa-random": "EGSPO-SA, random steps", "egspo-sa-mass": "EGSPO-SA, entropy mass 0.7",
}
HEADLINE = {"sudoku": "solved", "countdown": "correct"}


def read_eval(folder: Path) -> dict:
    """An eval's accuracy (fraction correct), the task's own headline metric and correct by example id."""
    res = json.loads((folder / "results.json").read_text())
    length = res["lengths"][0]
    records = folder / "records.jsonl"
    by_id = {}
    for line in records.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_id[str(rec["id"])] = float(bool(rec["correct"]))
    return {"accuracy": length["accuracy"], "n": length["n"], "split": res["split"], "headline": res["headline"],
            "headline_value": length["metrics"].get(res["headline"], length["accuracy"]), "by_id": by_id,
            "settings": {k: res["settings"][k] for k in ("steps", "block_len", "temperature", "prompt_style")}
            | {"gen_len": length["gen_len"]}}


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def name_of(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*)-s(\d+)$", name)
    if not m:
        raise SystemExit(f"unexpected run name {name!r} (want METHOD-sSEED)")
    return m.group(1), int(m.group(2))


def order_key(label: str) -> tuple[int, str]:
    return (ORDER.index(label) if label in ORDER else len(ORDER), label)


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def compute_of(rows: list[dict]) -> dict:
    last = rows[-1] if rows else {}
    return {k: last.get(k) for k in ("step", "forwards", "backwards", "forwards_rollout", "train_seconds")}


def summarise(runs: Path, eval_dir: Path, boot: int, reference: str = "egspo-sa") -> dict:
    if not (eval_dir / "base" / "results.json").exists():
        raise SystemExit(f"{eval_dir}/base/results.json is missing: run scripts/compare.sh first")
    base = read_eval(eval_dir / "base")
    per: dict[str, list[dict]] = defaultdict(list)
    for res in sorted(eval_dir.glob("*-s*/results.json")):
        label, seed = name_of(res.parent.name)
        ev = read_eval(res.parent)
        cfg = runs / res.parent.name / "config.json"
        lr = json.loads(cfg.read_text())["train"]["lr"] if cfg.is_file() else None
        per[label].append({"seed": seed, **ev, "lr": lr, "compute": compute_of(read_metrics(runs / res.parent.name))})
    out = {"base": {k: v for k, v in base.items() if k != "by_id"}, "methods": {}, "reference": reference}
    ref = per.get(reference, [])
    ref_mean = ({i: statistics.fmean(x["by_id"][i] for x in ref) for i in ref[0]["by_id"]} if ref else None)
    for label in sorted(per, key=order_key):
        rows = sorted(per[label], key=lambda r: r["seed"])
        b, r = paired_by_id(base["by_id"], [x["by_id"] for x in rows])
        ci = paired_bootstrap(b, r, n=boot, seed=0)
        vs_ref = None
        if ref_mean is not None and label != reference:
            a, c = paired_by_id(ref_mean, [x["by_id"] for x in rows])
            r_ci = paired_bootstrap(a, c, n=boot, seed=0)
            vs_ref = {"diff": r_ci.diff, "low": r_ci.low, "high": r_ci.high, "level": r_ci.level}
        comp = [x["compute"] for x in rows]
        mean_of = lambda key: statistics.fmean(c[key] for c in comp) if all(c[key] is not None for c in comp) else None
        out["methods"][label] = {
            "label": LABELS.get(label, label), "seeds": [x["seed"] for x in rows],
            "lr": sorted({x["lr"] for x in rows if x["lr"] is not None}),
            "accuracy": spread([x["accuracy"] for x in rows]), "accuracy_per_seed": [x["accuracy"] for x in rows],
            "headline": rows[0]["headline"], "headline_per_seed": [x["headline_value"] for x in rows],
            "diff_vs_base": {"diff": ci.diff, "low": ci.low, "high": ci.high, "level": ci.level,
                             "n_examples": ci.n_examples, "resamples": boot},
            "diff_vs_reference": vs_ref,
            "steps": mean_of("step"), "forwards": mean_of("forwards"), "backwards": mean_of("backwards"),
            "forwards_rollout": mean_of("forwards_rollout"), "train_seconds": mean_of("train_seconds"),
            "runs": [{"seed": x["seed"], "accuracy": x["accuracy"], "n": x["n"], **x["compute"]} for x in rows],
        }
    return out


def curves(runs: Path, ckpt_dir: Path | None, summary: dict) -> dict[str, list[tuple[float, float]]]:
    """label -> [(forward-equivalents, accuracy)], seeds averaged at each checkpoint step; the base at 0."""
    base_acc = summary["base"]["accuracy"]
    if ckpt_dir is not None and (ckpt_dir / "base" / "results.json").exists():
        base_acc = read_eval(ckpt_dir / "base")["accuracy"]
    out: dict[str, list[tuple[float, float]]] = {}
    for label, s in summary["methods"].items():
        points: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for seed in s["seeds"]:
            name = f"{label}-s{seed}"
            by_step = {r["step"]: r for r in read_metrics(runs / name)}
            evals = sorted((ckpt_dir / name).glob("step-*/results.json")) if ckpt_dir is not None else []
            for res in evals:
                step = int(res.parent.name.split("-")[1])
                row = by_step.get(step)
                if row is not None and "forwards" in row:
                    points[step].append((row["forwards"] + 2 * row["backwards"], read_eval(res.parent)["accuracy"]))
        if points:
            xs = [(statistics.fmean(p[0] for p in v), statistics.fmean(p[1] for p in v)) for _, v in sorted(points.items())]
        elif s["forwards"] is not None:
            xs = [(s["forwards"] + 2 * s["backwards"], s["accuracy"]["mean"])]
        else:
            xs = []
        out[label] = [(0.0, base_acc)] + xs
    return out


def plot(path: Path, task: str, lines: dict[str, list[tuple[float, float]]], where: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, pts in lines.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS.get(label, label))
    ax.set_xlabel("training compute: forward + 2 × backward passes (sequences)")
    ax.set_ylabel(f"held-out {HEADLINE.get(task, 'correct')}\n({where})", fontsize=9)
    ax.set_title(f"{task}: accuracy against training compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def interval(d: dict | None) -> str:
    return "–" if d is None else f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def write_markdown(path: Path, task: str, summary: dict, eval_dir: Path, made_by: str | None = None) -> str:
    base = summary["base"]
    ref = summary.get("reference", "egspo-sa")
    head = HEADLINE.get(task, "correct")
    lines = [
        f"# {task}: every method against the base model, equal budget", "",
        f"Held-out: the `{base['split']}` split ({base['n']} examples), greedy at the model's settings "
        f"({', '.join(f'{k} {v}' for k, v in base['settings'].items())}). `{head}` is the fraction of examples correct, mean ± standard deviation over seeds; "
        f"Δ vs base is the seed-averaged paired difference with a paired bootstrap 95 % interval over test examples; "
        f"Δ vs the reference method is the same against that method's seed-averaged correctness per example. "
        "Forwards and backwards count passes over one sequence (a rollout of B sequences and T denoising steps is "
        "B × T forwards); the train time is wall seconds on the machine that ran it (not comparable across "
        "machines). Base model: " f"{base['accuracy']:.3f}.", "",
        f"| method | lr | seeds | {head} | per seed | Δ vs base [95 % CI] | Δ vs {LABELS.get(ref, ref)} [95 % CI] | "
        f"{base['headline']} (per seed) | steps | forwards | backwards | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "–" if v is None else f"{v:,.0f}"
    for label, s in summary["methods"].items():
        acc, d = s["accuracy"], s["diff_vs_base"]
        pm = f"{acc['mean']:.3f} ± {acc['std']:.3f}" if len(s["seeds"]) > 1 else f"{acc['mean']:.3f}"
        lines.append(
            f"| {s['label']} | {', '.join(f'{x:g}' for x in s['lr'])} | {', '.join(map(str, s['seeds']))} | {pm} | "
            f"{', '.join(f'{x:.3f}' for x in s['accuracy_per_seed'])} | {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | "
            f"{interval(s.get('diff_vs_reference'))} | "
            f"{', '.join(f'{x:.3f}' for x in s['headline_per_seed'])} | {fmt(s['steps'])} | {fmt(s['forwards'])} | "
            f"{fmt(s['backwards'])} | {fmt(s['train_seconds'])} |")
    lines += ["", f"Made by `{made_by or f'bash scripts/compare.sh {task}'}` (evaluations in `{eval_dir}`), then "
              f"`python3 scripts/summarize_compare.py {task}`. Plot: `compute.png`. Per-run metrics, configs and test "
              "results: `runs/`.", ""]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def grid(task: str, runs: Path, out: Path, lr_file: Path) -> None:
    evals = runs / "grid" / "eval"
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for res in sorted(evals.glob("*-lr*/results.json")):
        label, lr = res.parent.name.rsplit("-lr", 1)
        table[label][lr] = read_eval(res.parent)["accuracy"]
    if not table:
        raise SystemExit(f"no grid evaluations under {evals}: run GRID=1 bash scripts/compare.sh {task}")
    base = read_eval(evals / "base") if (evals / "base" / "results.json").exists() else None
    best = {label: max(sorted(lrs, key=float), key=lambda lr: lrs[lr]) for label, lrs in table.items()}  # ties: lower lr
    record = {"task": task, "split": "validation", "n": base["n"] if base else None,
              "base_accuracy": base["accuracy"] if base else None,
              "lr": {label: float(lr) for label, lr in best.items()}, "grid": dict(table)}
    lr_file.parent.mkdir(parents=True, exist_ok=True)
    lr_file.write_text(json.dumps(record, indent=2) + "\n")
    rates = sorted({lr for lrs in table.values() for lr in lrs}, key=float)
    lines = [f"# {task}: learning-rate grid (validation, fraction correct)", "",
             f"Base model: {record['base_accuracy']}. Chosen rates (bold) go to `{lr_file}`.", "",
             "| method | " + " | ".join(rates) + " |", "|---|" + "---|" * len(rates)]
    for label in sorted(table, key=order_key):
        cells = [("**{:.3f}**" if lr == best[label] else "{:.3f}").format(table[label][lr]) if lr in table[label]
                 else "–" for lr in rates]
        lines.append(f"| {LABELS.get(label, label)} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def archive(runs: Path, eval_dir: Path, out: Path) -> None:
    """Per-run metrics, config and test results under out/runs/, beside the tables made from them."""
    import shutil

    for res in sorted(eval_dir.glob("*-s*/results.json")):
        name = res.parent.name
        dest = out / "runs" / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(res, dest / "eval.json")
        for f in ("metrics.jsonl", "config.json"):
            if (runs / name / f).is_file():
                shutil.copyfile(runs / name / f, dest / f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("--runs")
    ap.add_argument("--out")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--checkpoint-limit", type=int)
    ap.add_argument("--boot", type=int, default=10_000)
    ap.add_argument("--grid", action="store_true")
    ap.add_argument("--lr-file")
    ap.add_argument("--made-by", help="the command that made the runs, for the table's footer")
    args = ap.parse_args()
    runs = Path(args.runs or f"runs/compare/{args.task}")
    out = Path(args.out or f"results/compare/{args.task}")
    if args.grid:
        grid(args.task, runs, out, Path(args.lr_file or out / "lr.json"))
        return
    eval_dir = runs / (f"eval-limit{args.limit}" if args.limit else "eval")
    ckpt_dir = runs / f"eval-ckpt-limit{args.checkpoint_limit}" if args.checkpoint_limit else None
    summary = summarise(runs, eval_dir, args.boot)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    archive(runs, eval_dir, out)
    print(write_markdown(out / "results.md", args.task, summary, eval_dir, args.made_by))
    lines = curves(runs, ckpt_dir, summary)
    if ckpt_dir is not None:
        where = f"first {args.checkpoint_limit} test examples, at each checkpoint"
    else:
        where = f"{summary['base']['split']}, {summary['base']['n']} examples, final adapters"
    if lines:
        plot(out / "compute.png", args.task, lines, where)


if __name__ == "__main__":
    main()
