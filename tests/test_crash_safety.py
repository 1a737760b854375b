"""Crash safety of training runs: interrupted checkpoint replacement, restarts, config.json, SIGTERM,
non-finite losses, and a kill -9 harness whose resumed run must equal the uninterrupted one bit for bit.

The runs are the tiny LoRA SFT of tests/crash_worker.py (the skeleton is shared with the RL trainer).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crash_worker import ToyEcho, config
from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.errors import ConfigError, DllmrlError
from dllmrl.training.checkpoint import list_checkpoints
from dllmrl.training.metrics import read_metrics
from dllmrl.training.sft import run_sft

WORKER = Path(__file__).parent / "crash_worker.py"


def sft(model_dir, out, max_steps, resume=False, on_progress=None, **kw):
    cfg = replace(config(str(out), max_steps, resume), **kw)
    return run_sft(cfg, ModelConfig(model=model_dir, device="cpu"), on_progress=on_progress)


def adapter(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


# ---------------------------------------------------------------------------------------------- 5a
def test_resume_recovers_a_checkpoint_whose_replacement_was_killed(tiny_model_dir, tmp_path):
    """A kill while step 2 was being replaced: the old copy aside (.old-step-N), the new complete one not yet
    renamed in (.tmp-step-N); a stale incomplete temp dir beside them. Resume continues from step 2, exactly."""
    straight = sft(tiny_model_dir, tmp_path / "straight", 3)
    run = tmp_path / "cut"
    sft(tiny_model_dir, run, 2)
    ck = run / "checkpoints"
    (ck / "step-0000002").rename(ck / ".old-step-0000002")
    shutil.copytree(ck / ".old-step-0000002", ck / ".tmp-step-0000002")
    (ck / ".tmp-step-0000003").mkdir()  # a save killed before it was complete
    (ck / ".tmp-step-0000003" / "trainer_state.pt").write_bytes(b"torn")
    res = sft(tiny_model_dir, run, 3, resume=True)
    assert res.resumed_from == 2 and res.step == 3
    assert sorted(p.name for p in ck.iterdir()) == ["step-0000001", "step-0000002", "step-0000003"]
    assert_same(adapter(straight.run_dir), adapter(run))


def test_a_kill_between_the_renames_of_a_replacement_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    """replace_dir moves the old copy aside before the new one comes in; a kill between the two renames
    (here: the second rename raises) loses nothing that recover_checkpoints cannot put back."""
    from dllmrl.training import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    old, new = root / "step-0000004", root / ".tmp-step-0000004"
    for d, tag in ((old, "old"), (new, "new")):
        d.mkdir(parents=True)
        (d / "state.json").write_text(json.dumps({"step": 4, "extra": {"tag": tag}}))

    class Killed(BaseException):
        pass

    real_rename, calls = Path.rename, []

    def rename(self, target):
        calls.append(self.name)
        if len(calls) == 2:
            raise Killed
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(Killed):
        ckpt.replace_dir(new, old)
    monkeypatch.undo()
    assert not old.exists()  # the window the old code had too, but with a complete copy on each side
    ckpt.recover_checkpoints(tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000004"]
    assert json.loads((old / "state.json").read_text())["extra"]["tag"] == "new"
    assert sorted(p.name for p in root.iterdir()) == ["step-0000004"]


# ---------------------------------------------------------------------------------------------- 5b
def test_a_fresh_start_refuses_a_directory_with_metrics_but_no_checkpoint(tiny_model_dir, tmp_path):
    sft(tiny_model_dir, tmp_path, 2)
    shutil.rmtree(tmp_path / "checkpoints")  # a run killed before its first checkpoint
    rows = read_metrics(tmp_path)
    with pytest.raises(ConfigError, match="metrics.jsonl of an earlier run .* delete that directory or choose another"):
        sft(tiny_model_dir, tmp_path, 2)
    assert read_metrics(tmp_path) == rows  # nothing appended


# ---------------------------------------------------------------------------------------------- 5c
def test_config_json_is_replaced_not_rewritten_in_place(tiny_model_dir, tmp_path):
    """A reader of the old config.json (or a kill mid-write) never sees a partly written file: the new
    one is written aside and renamed over it, so an open handle still reads the old content."""
    sft(tiny_model_dir, tmp_path, 2)
    with open(tmp_path / "config.json") as before:
        original = json.loads(before.read())
        before.seek(0)
        sft(tiny_model_dir, tmp_path, 3, resume=True)
        assert json.loads(before.read()) == original
    assert json.loads((tmp_path / "config.json").read_text())["sft"]["max_steps"] == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_copied_run_directory_resumes(tiny_model_dir, tmp_path):
    """The output path is where the run lives, not a setting: a copy of the directory resumes (RL trainer)."""
    from dllmrl.training.train_config import TrainConfig
    from dllmrl.training.trainer import train
    from toy_tasks import TOY_GEN_LEN, ToyLowercase

    def cfg(out, steps, resume=False):
        return TrainConfig(task="toy", k_steps=2, num_generations=4, batch_size=8, grad_accum=1, warmup_steps=0,
                           max_steps=steps, lora_r=4, lora_alpha=8, output=str(out), save_every=0,
                           reward_workers=1, resume=resume)

    scfg = SamplerConfig(gen_len=TOY_GEN_LEN, steps=4, block_len=TOY_GEN_LEN, temperature=1.0)
    mcfg = ModelConfig(model=tiny_model_dir, device="cpu", dtype="float32")
    train(cfg(tmp_path / "a", 1), scfg, mcfg, task=ToyLowercase())
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    res = train(cfg(tmp_path / "b", 2, resume=True), scfg, mcfg, task=ToyLowercase())
    assert res.step == 2 and res.resumed_from == 1
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["output"] == str(tmp_path / "b")


# ---------------------------------------------------------------------------------------------- 5d
class _StrayTerm(Exception):
    """Raised by the test's own SIGTERM handler: the code under test did not handle the signal."""


@pytest.fixture
def sigterm_guard():
    """Without the trainer's handler a SIGTERM would end pytest; this one turns it into a test failure."""
    def handler(signum, frame):
        raise _StrayTerm

    old = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, old)


def test_sigterm_saves_at_the_step_boundary_like_ctrl_c(tiny_model_dir, tmp_path, sigterm_guard):
    guard = signal.getsignal(signal.SIGTERM)

    def progress(p):
        if p.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    res = sft(tiny_model_dir, tmp_path, 5, on_progress=progress, save_every=0)
    assert res.interrupted and res.step == 2 and res.checkpoint.name == "step-0000002"
    assert (res.checkpoint / "trainer_state.pt").exists() and not (tmp_path / "adapter").exists()
    assert signal.getsignal(signal.SIGTERM) is guard  # the previous handler is back after the run
    done = sft(tiny_model_dir, tmp_path, 3, resume=True, save_every=0)
    assert done.step == 3 and done.resumed_from == 2


def test_signals_during_a_save_let_the_save_finish(tiny_model_dir, tmp_path, monkeypatch, sigterm_guard):
    """Two SIGTERMs arrive while step 1 is being saved: the checkpoint is completed, then the run stops."""
    from dllmrl.training import checkpoint as ckpt

    real = ckpt.save_model_weights

    def save_weights(model, out, tokenizer=None):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(model, out, tokenizer)

    monkeypatch.setattr(ckpt, "save_model_weights", save_weights)
    res = sft(tiny_model_dir, tmp_path, 5)
    monkeypatch.undo()
    assert res.interrupted and res.step == 1 and res.checkpoint.name == "step-0000001"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000001"]
    assert {"trainer_state.pt", "rank-0.pt", "adapter", "state.json"} <= {p.name for p in res.checkpoint.iterdir()}
    assert not list((tmp_path / "checkpoints").glob(".*"))
    assert sft(tiny_model_dir, tmp_path, 2, resume=True).step == 2


def test_the_command_says_which_step_it_resumed_from(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from dllmrl.cli import app

    args = ["sft", ToyEcho.name, "--model", tiny_model_dir, "-o", str(tmp_path), "--prompt-style", "compact",
            "--gen-len", "8", "--warmup-steps", "0", "--batch-size", "4", "--device", "cpu", "--save-every", "1"]
    assert CliRunner().invoke(app, [*args, "--max-steps", "2"]).exit_code == 0
    r = CliRunner().invoke(app, [*args, "--max-steps", "3", "--resume"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "resumed from the checkpoint of step 2" in r.output and "(resumed from step 2)" in r.output


# ---------------------------------------------------------------------------------------------- 5e
@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_non_finite_loss_or_gradient_stops_without_saving(tiny_model_dir, tmp_path, monkeypatch, poison):
    import dllmrl.training.sft as sft_mod

    real, calls = sft_mod.sft_forward, []

    def forward(ad, batch, min_t, generator=None):
        out = real(ad, batch, min_t, generator)
        calls.append(1)
        if len(calls) == 3:  # step 3
            if poison == "loss":
                return sft_mod.SftLoss(loss=out.loss * float("nan"), ce=out.ce, acc=out.acc, masked=out.masked)
            p = next(p for p in ad.model.parameters() if p.requires_grad)
            p.register_hook(lambda g: g * float("inf"))
        return out

    monkeypatch.setattr(sft_mod, "sft_forward", forward)
    with pytest.raises(DllmrlError, match="loss is nan at step 3" if poison == "loss" else "gradient norm is (nan|inf) at step 3"):
        sft(tiny_model_dir, tmp_path, 5)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000001", "step-0000002"]
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "model").exists()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


# ---------------------------------------------------------------------------------------------- 5f
def _start(model_dir: str, out: Path, steps: int, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DLLMRL_SAVE_PAUSE_S": "0.2",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(WORKER), model_dir, str(out), str(steps), *(["--resume"] if resume else [])]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _has_checkpoint(out: Path) -> bool:
    """A complete checkpoint, in place or left by an interrupted save (the resumed run recovers it)."""
    return any((p / "state.json").exists() for p in (out / "checkpoints").glob("*step-*"))


def _wait(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while proc.poll() is None and not ready() and time.monotonic() - t0 < timeout:
        time.sleep(0.01)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_same_adapter(tiny_model_dir, tmp_path):
    steps = 8
    straight = sft(tiny_model_dir, tmp_path / "straight", steps)
    run, rng = tmp_path / "killed", random.Random(0)
    for attempt in range(3):
        resume = _has_checkpoint(run)
        if not resume:
            shutil.rmtree(run, ignore_errors=True)  # killed before any checkpoint: start again
        proc = _start(tiny_model_dir, run, steps, resume)
        if attempt == 0:  # inside a save: its temporary directory exists
            _wait(proc, lambda: any((run / "checkpoints").glob(".tmp-step-*")))
        else:  # at a random moment once training runs
            seen = len(list((run / "checkpoints").glob("step-*")))
            _wait(proc, lambda: len(list((run / "checkpoints").glob("step-*"))) > seen)
            time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()[-2000:]
        if attempt == 0:  # the save was cut short: only its temporary directory is there
            assert proc.returncode == -signal.SIGKILL and any((run / "checkpoints").glob(".tmp-step-*"))
    res = sft(tiny_model_dir, run, steps, resume=_has_checkpoint(run))
    assert res.step == steps
    assert_same(adapter(straight.run_dir), adapter(run))
    assert [r["step"] for r in read_metrics(run)] == list(range(1, steps + 1))
    assert not list((run / "checkpoints").glob(".*"))


# ---------------------------------------------------------------------------------------------- trackers
def test_report_to_tensorboard_writes_event_files(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    res = sft(tiny_model_dir, tmp_path, 2, report_to="tensorboard")
    assert res.step == 2 and [r["step"] for r in read_metrics(tmp_path)] == [1, 2]  # metrics.jsonl as always
    events = list((tmp_path / "trackers").rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"loss", "ce", "lr"} <= tags


def test_report_to_an_unknown_or_missing_tracker_is_one_line(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="--report-to tensorbored: unknown tracker"):
        sft(tiny_model_dir, tmp_path, 1, report_to="tensorbored")
