"""Errors at the edges of files end as one line, never a traceback (typer's CliRunner, table-driven).

The read-only and disk-full cases mount a small tmpfs (we are root in a container); where mounting is
not allowed they are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager

import pytest
from types import SimpleNamespace
from typer.testing import CliRunner

from dllmrl.cli import app

runner = CliRunner()


@contextmanager
def tmpfs(path, options):
    """A tmpfs mounted at ``path`` for the block, or a skip saying why it cannot be mounted here."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "none", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command on this machine")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root in a container")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def _eval(model, out, limit="2"):
    return ["eval", "countdown", "--model", model, "--prompt-style", "compact", "--limit", limit, "--gen-len", "16",
            "--block-len", "16", "--batch-size", "2", "--out", str(out), "--device", "cpu"]


def _score_line(tmp_path):
    src = tmp_path / "gen.jsonl"
    src.write_text(json.dumps({"completion": "", "answer": "1"}) + "\n")
    return src


def case_out_is_a_file(tmp_path, model):
    (tmp_path / "f").write_text("x")
    return _eval(model, tmp_path / "f"), "is a file, not a directory"


def case_out_is_read_only(tmp_path, model):
    ro = tmp_path / "ro"
    return tmpfs(ro, "ro,size=64k"), _eval(model, ro / "ev"), "cannot be created (Read-only file system)"


def case_out_fills_the_disk(tmp_path, model):
    small = tmp_path / "small"
    # 8 KiB: the lock file takes one page, the first records the other, then ENOSPC.
    return tmpfs(small, "size=8k"), _eval(model, small, limit="16"), "the disk is full; free space"


def case_score_a_binary_file(tmp_path, model):
    (tmp_path / "model.bin").write_bytes(b"\x00\x01\xff" * 10)
    return ["score", "gsm8k", str(tmp_path / "model.bin")], "is a binary file, not JSON Lines"


def case_score_not_utf8(tmp_path, model):
    (tmp_path / "latin1.jsonl").write_bytes(b'{"completion": "\xe9"}\n')
    return ["score", "gsm8k", str(tmp_path / "latin1.jsonl")], "is not UTF-8 text"


def case_score_out_is_a_directory(tmp_path, model):
    return ["score", "gsm8k", str(_score_line(tmp_path)), "--out", str(tmp_path)], "is a directory; pass a file path"


def case_score_input_is_a_directory(tmp_path, model):
    return ["score", "gsm8k", str(tmp_path)], "is a directory; pass a JSONL file"


def case_truncated_weights(tmp_path, model):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return _eval(str(broken), tmp_path / "ev"), f"{weights} cannot be read"


CASES = [case_out_is_a_file, case_out_is_read_only, case_out_fills_the_disk, case_score_a_binary_file,
         case_score_not_utf8, case_score_out_is_a_directory, case_score_input_is_a_directory, case_truncated_weights]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_file_edge_gives_one_line(case, tiny_model_dir, tmp_path):
    made = case(tmp_path, tiny_model_dir)
    mount, (args, message) = (made[0], made[1:]) if len(made) == 3 else (None, made)
    with mount or _nothing():
        r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert message in error_line(r.output), r.output


def error_line(output: str) -> str:
    """The one line ``error: ...`` of a failed command (the eval settings table may come before it)."""
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@contextmanager
def _nothing():
    yield


def test_disk_full_mid_eval_names_the_directory_and_a_rerun_resumes(tiny_model_dir, tmp_path):
    small = tmp_path / "small"
    with tmpfs(small, "size=8k"):
        r = runner.invoke(app, _eval(tiny_model_dir, small, limit="16"))
        assert r.exit_code == 1
        line = error_line(r.output)
        assert f"cannot write to {small}" in line and "rerun the same command to resume" in line
        kept = (small / "shards" / "rank0.jsonl").read_text()
        assert kept.count("\n") >= 1  # whole lines are kept...
        for line in kept.splitlines()[:-1]:
            json.loads(line)


def test_disk_full_while_logging_metrics_says_resume(tmp_path):
    from dllmrl.errors import OutputError
    from dllmrl.training.metrics import MetricsWriter

    small = tmp_path / "small"
    with tmpfs(small, "size=4k"):
        w = MetricsWriter(small, SimpleNamespace(is_main_process=True))  # no trackers: metrics.jsonl only
        with pytest.raises(OutputError, match=f"cannot write to {small}: the disk is full.*--resume"):
            for step in range(1000):
                w.log(step, {"note": "x" * 100})


def test_ctrl_c_in_eval_says_where_the_records_are(tiny_model_dir, tmp_path, monkeypatch):
    import dllmrl.sampling.guidance as guidance
    from dllmrl.evaluation.loop import read_records

    real, calls = guidance.guided_sample, []

    def stop_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(guidance, "guided_sample", stop_on_second_batch)
    out = tmp_path / "ev"
    r = runner.invoke(app, _eval(tiny_model_dir, out, limit="6"))
    assert r.exit_code == 1, r.output
    line = error_line(r.output)
    assert f"interrupted: the records so far are in {out / 'records.jsonl'}" in line
    assert "rerun the same command to resume" in line
    assert len(read_records(out / "records.jsonl")) == 2  # the first batch, folded in


def test_disk_full_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_complete_one(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from dllmrl.errors import OutputError
    from dllmrl.training.checkpoint import latest_checkpoint, save_checkpoint

    def bert(hidden):
        return BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=2 * hidden, max_position_embeddings=32))

    small = tmp_path / "small"
    with tmpfs(small, "size=512k"):
        first = save_checkpoint(small, 1, model=bert(16))
        with pytest.raises(OutputError, match=f"cannot write to {small}: the disk is full.*--resume"):
            save_checkpoint(small, 2, model=bert(256))  # about 2 MB of weights: more than the disk has left
        assert latest_checkpoint(small) == first  # the complete checkpoint survives
        assert not [p for p in small.iterdir() if p.name.startswith(".tmp-")]  # the partial one is gone
