"""Tables and pictures of scripts/blend_experiments.sh: the two-task front and the strength dial.

    python3 scripts/summarize_blend.py [--runs runs/blend] [--out results/blend]

front: for every scheme (logit, random-step, linear, ties) and weight w on the Sudoku adapter, the Sudoku test
puzzles solved and the Countdown test problems correct; the base and the multi-task adapter are single points;
then logit blending minus each other scheme at the same w (and minus the multi-task adapter at w = 0.5), paired
over the test examples with a bootstrap 95 % interval.
dial: for every lambda (--blend-base-scale) and every beta-trained adapter, Sudoku solved and the mean KL to the
base per decoded position and step (--blend-kl). Writes OUT/front.{md,json,png} and OUT/dial.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SCHEMES = ("logit", "random-step", "linear", "ties")
LABELS = {"logit": "logit blend (DB-MPA)", "random-step": "random-step (DB-MPA-LS)",
          "linear": "linear merge (cat)", "ties": "TIES merge"}


def accuracy(folder: Path) -> dict | None:
    path = folder / "results.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())["lengths"][0]
    return {"accuracy": r["accuracy"], "correct": r["correct"], "n": r["n"], "seconds": r.get("seconds")}


def front(runs: Path) -> dict:
    points: dict[str, list[dict]] = {}
    for d in sorted((runs / "front").glob("*")):
        m = re.fullmatch(r"(.+)-w([0-9.]+)", d.name)
        scheme, w = (m.group(1), float(m.group(2))) if m else (d.name, None)
        s, c = accuracy(d / "sudoku"), accuracy(d / "countdown")
        if s and c:
            points.setdefault(scheme, []).append({"w": w, "sudoku": s, "countdown": c})
    for v in points.values():
        v.sort(key=lambda p: -1 if p["w"] is None else p["w"])
    return points


def dial(runs: Path) -> dict:
    rows = []
    for d in sorted((runs / "dial").glob("sudoku-*")):
        acc, kl_path = accuracy(d), d / "kl_to_base.json"
        if not acc or not d.is_dir():
            continue
        m = re.fullmatch(r"sudoku-(lam|beta)([0-9.]+)", d.name)
        kl = json.loads(kl_path.read_text())["kl_to_base"] if kl_path.is_file() else None
        rows.append({"kind": "lambda" if m.group(1) == "lam" else "beta", "value": float(m.group(2)),
                     "sudoku": acc, "kl_to_base": kl})
    rows.sort(key=lambda r: (r["kind"], r["value"]))
    return {"rows": rows}


def correct_by_id(folder: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in (folder / "records.jsonl").read_text().splitlines() if x.strip()]
    return {str(r["id"]): float(bool(r["correct"])) for r in rows}


def paired(runs: Path, points: dict, boot: int = 5000) -> list[dict]:
    """Logit blending minus each other scheme at the same w, and minus the multi-task adapter at w = 0.5:
    paired differences over the test examples with a bootstrap 95 % interval."""
    from dllmrl.evaluation.stats import paired_bootstrap, paired_by_id

    pairs = [(f"logit-w{p['w']:g}", f"{scheme}-w{p['w']:g}") for scheme in SCHEMES[1:] for p in points.get(scheme, [])
             if p["w"] not in (0, 1)]
    if "multi-task" in points:
        pairs.append(("logit-w0.5", "multi-task"))
    out = []
    for a, b in pairs:
        for task in ("sudoku", "countdown"):
            da, db = runs / "front" / a / task, runs / "front" / b / task
            if not (da / "records.jsonl").is_file() or not (db / "records.jsonl").is_file():
                continue
            base, [run] = paired_by_id(correct_by_id(db), [correct_by_id(da)])
            ci = paired_bootstrap(base, [run], n=boot, seed=0)
            out.append({"a": a, "b": b, "task": task, "diff": ci.diff, "low": ci.low, "high": ci.high})
    return out


def paired_md(rows: list[dict]) -> str:
    lines = ["| logit blend | minus | task | difference, points [95 % CI] |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['a']} | {r['b']} | {r['task']} | {100 * r['diff']:+.1f} [{100 * r['low']:+.1f}, "
                     f"{100 * r['high']:+.1f}] |")
    return "\n".join(lines) + "\n"


def pct(a: dict) -> str:
    return f"{100 * a['accuracy']:.1f} ({a['correct']}/{a['n']})"


def front_md(points: dict) -> str:
    lines = ["| scheme | w (Sudoku) | Sudoku solved % | Countdown correct % |", "|---|---|---|---|"]
    for scheme, pts in points.items():
        for p in pts:
            w = "" if p["w"] is None else f"{p['w']:g}"
            lines.append(f"| {LABELS.get(scheme, scheme)} | {w} | {pct(p['sudoku'])} | {pct(p['countdown'])} |")
    return "\n".join(lines) + "\n"


def dial_md(d: dict) -> str:
    lines = ["| adapter | lambda / beta | Sudoku solved % | KL to base (nats / position / step) |", "|---|---|---|---|"]
    for r in d["rows"]:
        what = "lambda-blend of the beta 0 adapter" if r["kind"] == "lambda" else "trained with beta, lambda 1"
        kl = "" if r["kl_to_base"] is None else f"{r['kl_to_base']:.4f}"
        lines.append(f"| {what} | {r['value']:g} | {pct(r['sudoku'])} | {kl} |")
    return "\n".join(lines) + "\n"


def new_axes(height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, height))


def finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_front(path: Path, points: dict) -> None:
    fig, ax = new_axes(5)
    for scheme, pts in points.items():
        xs = [100 * p["sudoku"]["accuracy"] for p in pts]
        ys = [100 * p["countdown"]["accuracy"] for p in pts]
        if scheme in SCHEMES:
            ax.plot(xs, ys, marker="o", label=LABELS[scheme])
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(f"{p['w']:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        else:
            ax.plot(xs, ys, marker="*" if scheme == "multi-task" else "s", markersize=11, linestyle="none",
                    label="multi-task RL adapter" if scheme == "multi-task" else scheme)
    finish(fig, ax, path, "Sudoku test puzzles solved (%)", "Countdown test problems correct (%)",
           "tiny-llada: two adapters combined (labels: weight on Sudoku)")


def plot_dial(path: Path, d: dict) -> None:
    fig, ax = new_axes(4.6)
    for kind, marker in (("lambda", "o"), ("beta", "^")):
        rows = [r for r in d["rows"] if r["kind"] == kind and r["kl_to_base"] is not None]
        if not rows:
            continue
        xs, ys = [r["kl_to_base"] for r in rows], [100 * r["sudoku"]["accuracy"] for r in rows]
        ax.plot(xs, ys, marker=marker, linestyle="-" if kind == "lambda" else "none",
                label="lambda-blend with the base" if kind == "lambda" else "adapter trained with KL weight beta")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{'λ' if kind == 'lambda' else 'β'}={r['value']:g}", (x, y), textcoords="offset points",
                        xytext=(3, 3), fontsize=7)
    finish(fig, ax, path, "mean KL(policy || base) per decoded position and step (nats)",
           "Sudoku test puzzles solved (%)", "strength dial on tiny-llada (Sudoku)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs/blend"))
    ap.add_argument("--out", type=Path, default=Path("results/blend"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pts, dl = front(args.runs), dial(args.runs)
    if pts:
        pair = paired(args.runs, pts)
        (args.out / "front.json").write_text(json.dumps({"points": pts, "paired": pair}, indent=1) + "\n")
        (args.out / "front.md").write_text(front_md(pts) + "\nPaired differences (same test examples):\n\n"
                                           + paired_md(pair))
        plot_front(args.out / "front.png", pts)
        print(front_md(pts))
        print(paired_md(pair))
    if dl["rows"]:
        (args.out / "dial.json").write_text(json.dumps(dl, indent=1) + "\n")
        (args.out / "dial.md").write_text(dial_md(dl))
        plot_dial(args.out / "dial.png", dl)
        print(dial_md(dl))


if __name__ == "__main__":
    main()
