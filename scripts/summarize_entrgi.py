#!/usr/bin/env python3
"""Summarize the EntRGi demonstration (scripts/entrgi_demo.sh): runs/entrgi-llada/*/results.json -> results/entrgi-llada/.

    python3 scripts/summarize_entrgi.py                     # writes results/entrgi-llada/results.{md,json}
    (results/entrgi/ holds the first round, on the ModernBERT tiny-sudoku with tiny-sudoku-reward: that pair
    is retired, its results are kept)
    python3 scripts/summarize_entrgi.py --pick entrgi       # prints the validation-best guidance-lr of a method
    python3 scripts/summarize_entrgi.py --pick best-of-n    # prints the validation-best temperature of best-of-n

Every run directory holds an eval's results.json and records.jsonl; the guidance settings and the
reward-model calls per prompt are read from the records (eval writes them there). Run directories
are named <split>-<method>[-<knob>] (val-entrgi-lr3, test-best-of-n-t1.0, ...); those named x-* are
extra runs (other guidance steps, other seeds), listed apart and never picked.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "entrgi-llada"
OUT = ROOT / "results" / "entrgi-llada"
METHODS = ("none", "expectation", "aps", "entrgi", "best-of-n")


def load_run(d: Path) -> dict | None:
    res, recs = d / "results.json", d / "records.jsonl"
    if not res.exists() or not recs.exists():
        return None
    r = json.loads(res.read_text())
    length = r["lengths"][0]
    rows = [json.loads(line) for line in recs.read_text().splitlines() if line.strip()]
    # the records of this results.json: the last settings written (a reused directory may hold other rows)
    s = rows[-1]["settings"] if rows else {}
    by_id = {x["id"]: x for x in rows if x["settings"] == s}
    calls = [x.get("reward_calls", 0) for x in by_id.values()]
    return {
        "run": d.name,
        "split": r["split"],
        "n": length["n"],
        "method": s.get("guidance", "none"),
        "guidance_lr": s.get("guidance_lr"),
        "guidance_steps": s.get("guidance_steps"),
        "best_of_n": s.get("best_of_n"),
        "temperature": s.get("temperature"),
        "seed": s.get("seed"),
        "reward_model": s.get("reward_model"),
        "correct": length["correct"],
        "accuracy": length["accuracy"],
        "cell_acc": length["metrics"].get("cell_acc"),
        "reward_calls_per_prompt": sum(calls) / len(calls) if calls else 0,
        "dllm_forwards_per_prompt": rows[-1].get("nfe") if rows else None,  # nfe of a batch = forwards per prompt
        # generation time summed over the records (results.json's seconds count only what a resumed run made)
        "seconds": sum(x.get("gen_seconds", 0.0) for x in by_id.values()),
        "_solved": {i: bool(x.get("correct")) for i, x in by_id.items()},
    }


def all_runs(root: Path = RUNS) -> list[dict]:
    return [r for d in sorted(root.iterdir()) if d.is_dir() and (r := load_run(d))]


def sign_test(a: int, b: int) -> float:
    """Two-sided exact binomial p-value of a vs b discordant pairs under p = 1/2."""
    n = a + b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a, b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(r: dict, base: dict | None) -> str:
    """Puzzles this run solves that the unguided run does not (+), and the reverse (-), with the sign test."""
    if base is None or r is base:
        return "-"
    common = r["_solved"].keys() & base["_solved"].keys()
    gained = sum(r["_solved"][i] and not base["_solved"][i] for i in common)
    lost = sum(base["_solved"][i] and not r["_solved"][i] for i in common)
    return f"+{gained} / -{lost} (p={sign_test(gained, lost):.2f})"


def key(r: dict) -> tuple:
    return (r["accuracy"], r["cell_acc"] or 0.0)


def pick(runs: list[dict], method: str) -> dict:
    """The validation run of a method with the best solved fraction (ties: cell accuracy)."""
    cands = [r for r in runs if r["split"] == "validation" and r["method"] == method and not r["run"].startswith("x-")]
    if not cands:
        sys.exit(f"no validation runs for {method} under {RUNS}")
    return max(cands, key=key)


def fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def knob(r: dict) -> str:
    seed = f", seed {r['seed']}" if r["seed"] is not None else ""
    if r["method"] == "best-of-n":
        return f"N={r['best_of_n']}, T={r['temperature']}{seed}"
    if r["method"] == "none":
        return f"T={r['temperature']}{seed}"
    return f"eta={r['guidance_lr']:g}, k={r['guidance_steps']}{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pick", choices=METHODS[1:], help="print the validation-best knob of a method and exit")
    ap.add_argument("--runs", type=Path, default=RUNS, help="the demo's run directories")
    ap.add_argument("--out", type=Path, default=OUT, help="where results.{md,json} go")
    ap.add_argument("--model", default="checkpoints/tiny-llada", help="the frozen DLLM (for the title)")
    ap.add_argument("--reward-model", default="checkpoints/tiny-llada-reward", help="the reward model (for the text)")
    a = ap.parse_args()
    runs = all_runs(a.runs)
    if a.pick:
        best = pick(runs, a.pick)
        print(best["temperature"] if a.pick == "best-of-n" else f"{best['guidance_lr']:g}")
        return

    main_runs = [r for r in runs if not r["run"].startswith("x-")]
    extra = [r for r in runs if r["run"].startswith("x-")]
    val = [r for r in main_runs if r["split"] == "validation"]
    test = [r for r in main_runs if r["split"] != "validation"]
    order = {m: i for i, m in enumerate(METHODS)}
    splits = {"test": 0, "test256": 1, "validation": 2}
    val.sort(key=lambda r: (order[r["method"]], r["guidance_lr"] or 0, r["temperature"] or 0))
    test.sort(key=lambda r: (splits.get(r["split"], 3), order[r["method"]]))
    extra.sort(key=lambda r: (splits.get(r["split"], 3), order[r["method"]], r["guidance_steps"] or 0,
                              r["guidance_lr"] or 0, r["best_of_n"] or 0, r["seed"] or 0))
    base = {r["split"]: r for r in runs if r["method"] == "none"}
    chosen = {m: pick(runs, m)["run"] for m in METHODS[1:] if any(r["method"] == m for r in val)}

    settings = json.loads((ROOT / a.model / "dllmrl.json").read_text()) if (ROOT / a.model / "dllmrl.json").is_file() else {}
    shape = ", ".join(f"{k} {settings[k]}" for k in ("gen_len", "steps", "block_len") if k in settings)
    lines = [f"# EntRGi demonstration: reward-guided sampling of {a.model}", "",
             f"Generated by `scripts/summarize_entrgi.py` from `{a.runs}/*/` (commands: `scripts/entrgi_demo.sh`).",
             f"Frozen DLLM `{a.model}` ({shape}); reward model "
             f"`{a.reward_model}`. Solved = fraction of puzzles fully correct; cell acc = fraction of "
             "empty cells filled correctly.", ""]
    for split_name, rows, title in (("test", test, "Test (held out; settings chosen on validation)"),
                                    ("validation", val, "Validation sweep (tuning only)"),
                                    ("extra", extra, "Extra runs (not used for the choice above)")):
        if not rows:
            continue
        lines += [f"## {title}", "", "| run | split | n | method | setting | reward calls / prompt | DLLM forwards / prompt | solved | cell acc | "
                  "vs none: solved +/- (sign test) | generation seconds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mark = " **(chosen)**" if split_name == "validation" and chosen.get(r["method"]) == r["run"] else ""
            lines.append(f"| {r['run']}{mark} | {r['split']} | {r['n']} | {r['method']} | {knob(r)} | "
                         f"{r['reward_calls_per_prompt']:g} | {r['dllm_forwards_per_prompt']} | "
                         f"{fmt(r['accuracy'])} ({r['correct']}/{r['n']}) | {fmt(r['cell_acc'])} | "
                         f"{paired(r, base.get(r['split']))} | {r['seconds']:.0f} |")
        lines.append("")
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines))
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]  # noqa: E731
    (out / "results.json").write_text(json.dumps({"test": strip(test), "validation": strip(val), "extra": strip(extra),
                                                  "chosen_on_validation": chosen}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
