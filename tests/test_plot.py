"""`dllmrl plot` groups seeds by run name and writes a PNG."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.plot import run_label, series


def _run(path, values):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "reward": v}) + "\n" for i, v in enumerate(values)))
    return str(path)


def test_run_label_strips_the_seed():
    assert run_label("runs/sudoku-egspo-sa-s1") == "sudoku-egspo-sa"
    assert run_label("x_seed12") == "x"


def test_smoothing_is_a_trailing_mean(tmp_path):
    d = _run(tmp_path / "a-s0", [0.0, 1.0, 2.0, 3.0])
    assert series(d, "reward", smooth=2) == ([1, 2, 3, 4], [0.0, 0.5, 1.5, 2.5])


def test_plot_writes_a_png_and_names_missing_metrics(tmp_path):
    a, b = _run(tmp_path / "m-s0", [0.1, 0.2]), _run(tmp_path / "m-s1", [0.2, 0.4])
    out = tmp_path / "p.png"
    r = CliRunner().invoke(app, ["plot", a, b, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(app, ["plot", a, "--metric", "nope", "--out", str(out)])
    assert r.exit_code == 1 and "no metric 'nope'" in r.output
