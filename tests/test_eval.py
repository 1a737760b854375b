"""`dllmrl eval` and `dllmrl score`: records, resume, results, and one-line errors (tiny model, offline)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.evaluation.loop import EvalConfig, evaluate, read_records

runner = CliRunner()




def test_eval_sudoku_writes_records_then_resumes(tiny_model_dir, tmp_path, count_sampling, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "ev"
    args = ["eval", "sudoku", "--model", tiny_model_dir, "--limit", "8", "--gen-len", "32", "--out", str(out),
            "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = read_records(out / "records.jsonl")
    assert len(recs) == 8 and sum(count_sampling) == 8
    rec = recs[0]
    for key in ("id", "prompt", "completion", "extracted", "reward", "correct", "settings", "cells_correct",
                "cells_empty", "puzzle", "solution"):
        assert key in rec
    assert rec["settings"]["gen_len"] == 32 and rec["settings"]["steps"] == 16  # gen_len / 2
    assert rec["settings"]["split"] == "test256" and rec["prompt"].endswith("<reasoning>")  # eval style, prefilled
    results = json.loads((out / "results.json").read_text())
    assert results["lengths"][0]["n"] == 8 and results["headline"] == "cell_acc"
    assert "cell_acc" in r.stdout and "best" in r.stdout
    # Second run: nothing is generated again.
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sum(count_sampling) == 8 and len(read_records(out / "records.jsonl")) == 8
    # A larger --limit generates only the new examples.
    r = runner.invoke(app, [("10" if a == "8" else a) for a in args])
    assert r.exit_code == 0, r.output
    assert sum(count_sampling) == 10 and len(read_records(out / "records.jsonl")) == 10


def test_library_loop_several_lengths_and_settings_key(tiny, tmp_path, count_sampling):
    from dllmrl.tasks.base import get_task

    task = get_task("countdown")
    cfg = EvalConfig(task="countdown", gen_lens=(16, 32), block_len=16, prompt_style="compact", limit=3,
                     batch_size=2, out=str(tmp_path))
    seen = []
    res = evaluate(task, tiny, cfg, on_progress=seen.append)
    assert [r.gen_len for r in res.lengths] == [16, 32] and [r.steps for r in res.lengths] == [8, 16]
    assert all(r.n == 3 and r.generated == 3 for r in res.lengths)
    assert res.best in res.lengths and seen[-1].done == 3 and seen[-1].total == 3
    assert len(read_records(tmp_path / "records.jsonl")) == 6
    # Other settings (temperature) are other records, not a resume.
    res = evaluate(task, tiny, dataclasses.replace(cfg, gen_lens=(16,), temperature=0.5), model_info={"model": "m"})
    assert res.lengths[0].generated == 3
    # The same settings again: resumed, nothing generated.
    before = sum(count_sampling)
    res = evaluate(task, tiny, dataclasses.replace(cfg, gen_lens=(16,), temperature=0.5), model_info={"model": "m"})
    assert res.lengths[0].generated == 0 and sum(count_sampling) == before


def test_a_torn_last_line_is_skipped(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"')
    assert [r["id"] for r in read_records(p)] == ["a"]
    p.write_text('{"id": "a"\n{"id": "b"}\n')
    with pytest.raises(Exception, match="records.jsonl:1"):
        read_records(p)


@pytest.mark.parametrize(
    "args,message",
    [
        (["eval", "sudok"], "did you mean 'sudoku'"),
        (["eval", "sudoku", "--gen-len", "12x"], "--gen-len takes one length"),
        (["eval", "sudoku", "--gen-len", "48"], "--gen-len 48 is not divisible by --block-len 32"),
        (["eval", "sudoku", "--split", "tset"], "did you mean 'test'"),
        (["eval", "gsm8k", "--prompt-style", "compact"], "--prompt-style 'compact'"),
        (["eval", "sudoku", "--batch-size", "0"], "--batch-size must be positive"),
    ],
)
def test_bad_eval_options_give_one_line(tiny_model_dir, args, message):
    r = runner.invoke(app, args + ["--model", tiny_model_dir])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output


def test_score_command(tmp_path):
    rows = [
        {"completion": "<answer>\n\\boxed{1,000}\n</answer>", "answer": "1000"},
        {"completion": "<answer>\n\\boxed{7}\n</answer>", "answer": 8},
        {"completion": "", "answer": "-3"},
    ]
    src = tmp_path / "gen.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    r = runner.invoke(app, ["score", "gsm8k", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert re.search(r"accuracy\s*│\s*0.3333", r.stdout), r.stdout
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["correct"] for s in scored] == [True, False, False]
    assert [s["extracted"] for s in scored] == ["1000", "7", None]
    assert scored[0]["answer"] == "1000"  # the input line is kept


def test_score_sudoku_countdown_and_code(tmp_path):
    cases = {
        "sudoku": [{"completion": "<answer>3142243142131324</answer>", "puzzle": "3102200002100320",
                    "solution": "3142243142131324"}],
        "countdown": [{"completion": "\\boxed{30+93-100}", "numbers": [30, 100, 93], "target": 23}],
        "mbpp": [{"completion": "```python\ndef remove_Occ(s, ch):\n    i = s.find(ch)\n    j = s.rfind(ch)\n"
                                "    if i < 0:\n        return s\n    if i == j:\n        return s[:i] + s[i+1:]\n"
                                "    return s[:i] + s[i+1:j] + s[j+1:]\n```", "task_id": 11}],
    }
    for task, rows in cases.items():
        src = tmp_path / f"{task}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        r = runner.invoke(app, ["score", task, str(src)])
        assert r.exit_code == 0, (task, r.output)
        assert re.search(r"accuracy\s*│\s*1\s*│", r.stdout), (task, r.stdout)


@pytest.mark.parametrize(
    "lines,message",
    [
        (['{"answer": "1"}'], "no 'completion'"),
        (["not json"], ":1 is not valid JSON"),
        (['{"completion": "x"}'], "needs 'answer'"),
    ],
)
def test_bad_score_input_gives_one_line(tmp_path, lines, message):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["score", "gsm8k", str(src)])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output


def test_every_eval_config_field_has_an_option():
    import typer.main

    cmd = typer.main.get_command(app).commands["eval"]
    names = {p.name for p in cmd.params}
    fields = {f.name for f in dataclasses.fields(EvalConfig)} - {"gen_lens"}
    assert fields <= names and "gen_len" in names


def test_a_new_pack_version_regenerates_instead_of_resuming(tiny_model_dir, tmp_path, count_sampling, monkeypatch):
    """Records made with an older prompt or parser (another pack version) are never silently reused."""
    from dllmrl.tasks.sudoku import Sudoku

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "ev"
    args = ["eval", "sudoku", "--model", tiny_model_dir, "--limit", "2", "--gen-len", "16", "--block-len", "16",
            "--prompt-style", "compact", "--out", str(out), "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    assert sum(count_sampling) == 2
    assert {r["settings"]["task_version"] for r in read_records(out / "records.jsonl")} == {Sudoku.version}
    assert runner.invoke(app, args).exit_code == 0 and sum(count_sampling) == 2  # same version: resumed
    monkeypatch.setattr(Sudoku, "version", Sudoku.version + "-changed-parser")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sum(count_sampling) == 4  # regenerated
    assert json.loads((out / "results.json").read_text())["settings"]["task_version"] == "1-changed-parser"
