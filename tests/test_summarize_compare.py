"""scripts/summarize_compare.py on hand-made evaluation folders: pairing with the base by id, compute from
metrics.jsonl, and the grid's choice (best validation accuracy, ties to the lower learning rate)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("summarize_compare", ROOT / "scripts" / "summarize_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _eval(folder: Path, correct: list[int], split: str = "test") -> None:
    folder.mkdir(parents=True)
    recs = [{"id": f"{split}-{i}", "correct": bool(c)} for i, c in enumerate(correct)]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(recs)))  # order must not matter
    n = len(correct)
    (folder / "results.json").write_text(json.dumps({
        "split": split, "headline": "cell_acc",
        "lengths": [{"n": n, "correct": sum(correct), "accuracy": sum(correct) / n, "gen_len": 32,
                     "metrics": {"cell_acc": 0.5}}],
        "settings": {"steps": 16, "block_len": 32, "temperature": 0.0, "prompt_style": "compact"}}))


def test_summary_pairs_with_the_base_and_reads_compute(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _eval(runs / "eval" / "base", [0, 0, 1, 1])
    _eval(runs / "eval" / "egspo-sa-s1", [1, 0, 1, 1])
    _eval(runs / "eval" / "egspo-sa-s2", [0, 1, 1, 1])
    for seed, fwd in ((1, 100), (2, 300)):
        (runs / f"egspo-sa-s{seed}").mkdir()
        (runs / f"egspo-sa-s{seed}" / "metrics.jsonl").write_text(
            json.dumps({"step": 2, "forwards": fwd, "backwards": 10, "forwards_rollout": 50, "train_seconds": 4.0}) + "\n")
    monkeypatch.setattr(sys, "argv", ["x", "sudoku", "--runs", str(runs), "--out", str(out), "--boot", "500"])
    _module().main()
    s = json.loads((out / "results.json").read_text())["methods"]["egspo-sa"]
    # Each seed gains one example of four; averaged per example: (0.5, 0.5, 0, 0) -> mean 0.25.
    assert s["accuracy"]["mean"] == 0.75 and s["diff_vs_base"]["diff"] == 0.25
    assert 0 <= s["diff_vs_base"]["low"] <= 0.25 <= s["diff_vs_base"]["high"] <= 0.5
    assert s["forwards"] == 200 and s["backwards"] == 10 and s["steps"] == 2
    assert "EGSPO-SA" in (out / "results.md").read_text() and (out / "compute.png").exists()


def test_grid_picks_the_best_rate_and_the_lower_on_ties(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    grid = runs / "grid" / "eval"
    _eval(grid / "base", [0, 0], "validation")
    _eval(grid / "wd1-lr1e-3", [1, 0], "validation")
    _eval(grid / "wd1-lr3e-4", [1, 0], "validation")
    _eval(grid / "egspo-sa-lr3e-3", [1, 1], "validation")
    _eval(grid / "egspo-sa-lr1e-3", [1, 0], "validation")
    monkeypatch.setattr(sys, "argv", ["x", "sudoku", "--runs", str(runs), "--out", str(out), "--grid"])
    _module().main()
    record = json.loads((out / "lr.json").read_text())
    assert record["lr"] == {"wd1": 3e-4, "egspo-sa": 3e-3}
    assert record["grid"]["wd1"] == {"1e-3": 0.5, "3e-4": 0.5} and record["base_accuracy"] == 0.0
