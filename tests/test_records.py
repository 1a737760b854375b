"""Records that survive crashes: torn JSONL lines, one writer per directory, duplicate ids in `score`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from contextlib import contextmanager

import pytest
from types import SimpleNamespace
from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.errors import DataError
from dllmrl.evaluation.loop import EvalConfig, evaluate, read_records
from dllmrl.training.metrics import MetricsWriter, read_metrics

runner = CliRunner()


def _countdown_cfg(out, limit):
    return EvalConfig(task="countdown", gen_lens=(16,), block_len=16, prompt_style="compact", limit=limit,
                      batch_size=2, out=str(out))


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line whole JSON


# ---------------------------------------------------------------- torn lines
def test_eval_appends_after_a_torn_line_without_corrupting_a_record(tiny, tmp_path, caplog):
    from dllmrl.tasks.base import get_task

    task = get_task("countdown")
    evaluate(task, tiny, _countdown_cfg(tmp_path, 2))
    path = tmp_path / "records.jsonl"
    first, second = path.read_text().splitlines()
    path.write_text(first + "\n" + second[: len(second) // 2])  # the disk filled up mid-line
    with caplog.at_level(logging.WARNING):
        res = evaluate(task, tiny, _countdown_cfg(tmp_path, 3))
    assert res.lengths[0].generated == 2  # the torn record and the new one
    assert [r["id"] for r in _lines(path)] == [r["id"] for r in read_records(path)]
    assert sorted(r["id"] for r in _lines(path)) == sorted({r["id"] for r in _lines(path)}) and len(_lines(path)) == 3
    assert "partly written last line" in caplog.text


def test_training_resume_survives_a_torn_metrics_line(tmp_path):
    w = MetricsWriter(tmp_path, SimpleNamespace(is_main_process=True))
    w.log(1, {"loss": 1.0})
    w.log(2, {"loss": 0.5})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # killed mid-write
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    w.truncate_after(2)  # what --resume does
    w.log(3, {"loss": 0.25})
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_appending_after_a_torn_metrics_line_keeps_the_new_line_whole(tmp_path):
    w = MetricsWriter(tmp_path, SimpleNamespace(is_main_process=True))
    w.log(1, {"loss": 1.0})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "lo')
    w.log(2, {"loss": 0.5})
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [1, 2]


def test_a_corrupt_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2 is not valid JSON"):
        read_metrics(tmp_path)
    # A bad last line that does end in a newline was written whole: it is corrupt, not torn.
    (tmp_path / "records.jsonl").write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(DataError, match=r"records.jsonl:2"):
        read_records(tmp_path / "records.jsonl")


def test_score_skips_a_torn_last_line(tmp_path, caplog):
    rows = [{"completion": "<answer>\n\\boxed{7}\n</answer>", "answer": "7"}]
    src = tmp_path / "gen.jsonl"
    src.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0])[:20])
    with caplog.at_level(logging.WARNING):
        r = runner.invoke(app, ["score", "gsm8k", str(src)])
    assert r.exit_code == 0, r.output
    assert "partly written last line" in caplog.text


def test_score_counts_a_duplicated_id_once(tmp_path, caplog):
    ok = {"id": "a", "completion": "<answer>\n\\boxed{7}\n</answer>", "answer": "7"}
    bad = {"id": "b", "completion": "", "answer": "3"}
    other_len = {**ok, "settings": {"gen_len": 64}}  # the same id at another setting is another record
    src = tmp_path / "records.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [ok, ok, bad, other_len]))
    out = tmp_path / "scored.jsonl"
    with caplog.at_level(logging.WARNING):
        r = runner.invoke(app, ["score", "gsm8k", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert [s["id"] for s in _lines(out)] == ["a", "b", "a"]  # 2 of 3 correct, not 3 of 4
    assert "counted once" in caplog.text


# ---------------------------------------------------------------- one writer per directory
HOLDER = """
import fcntl, json, os, socket, sys
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.seek(0); f.truncate(); f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": "x"}))
f.flush()
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def held(lock_file):
    """Another process holding ``lock_file`` (written without dllmrl, as any earlier run would hold it)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield p.pid
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def test_a_second_eval_into_one_out_is_refused(tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    with held(out / ".dllmrl.lock") as pid:
        r = runner.invoke(app, ["eval", "countdown", "--model", tiny_model_dir, "--prompt-style", "compact", "--limit",
                                "2", "--gen-len", "16", "--block-len", "16", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 1, r.output
    assert f"is in use by pid {pid}" in r.output and "another --out" in r.output and "Traceback" not in r.output
    assert not (out / "records.jsonl").exists()


@pytest.mark.parametrize("command", [
    ["train", "sudoku", "--max-steps", "1", "--device", "cpu"],
    ["sft", "sudoku", "--max-steps", "1", "--limit", "4", "--warmup-steps", "0", "--device", "cpu"],
])
def test_a_second_training_into_one_output_is_refused(tiny_model_dir, tmp_path, command):
    out = tmp_path / "run"
    with held(out / ".dllmrl.lock") as pid:
        r = runner.invoke(app, [*command, "--model", tiny_model_dir, "-o", str(out)])
    assert r.exit_code == 1, r.output
    assert f"is in use by pid {pid}" in r.output and "another --output" in r.output
    assert not (out / "metrics.jsonl").exists() and not (out / "config.json").exists()


def test_score_out_held_by_another_process_is_refused(tmp_path):
    src = tmp_path / "gen.jsonl"
    src.write_text(json.dumps({"completion": "", "answer": "1"}) + "\n")
    out = tmp_path / "scored.jsonl"
    with held(tmp_path / ".scored.jsonl.lock") as pid:
        r = runner.invoke(app, ["score", "gsm8k", str(src), "--out", str(out)])
    assert r.exit_code == 1 and f"in use by pid {pid}" in r.output, r.output
    assert not out.exists()


def test_the_stale_lock_of_a_dead_process_is_taken_over(tiny, tmp_path, caplog):
    from dllmrl.tasks.base import get_task

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".dllmrl.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": "h", "command": "dllmrl eval"}))
    with caplog.at_level(logging.WARNING):
        res = evaluate(get_task("countdown"), tiny, _countdown_cfg(tmp_path, 2))
    assert res.lengths[0].n == 2
    assert f"stale lock of pid {dead.pid}" in caplog.text and "no longer running" in caplog.text
    assert lock.read_text() == ""  # released


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path):
    from dllmrl.io.jsonl import append_jsonl, read_jsonl

    p = tmp_path / "rows.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}')  # written by another tool that left out the final newline
    append_jsonl(p, [{"id": "c"}])
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "c"]
    p.write_text('{"id": "a"}')  # one torn-looking but whole line, nothing before it
    append_jsonl(p, [{"id": "c"}])
    assert p.read_text() == '{"id": "a"}\n{"id": "c"}\n'
    p.write_text('{"id": "a')  # one torn line and nothing else: the file starts again
    append_jsonl(p, [{"id": "c"}])
    assert p.read_text() == '{"id": "c"}\n'
