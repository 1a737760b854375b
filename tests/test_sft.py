"""`dllmrl sft`: a short run learns and writes its run directory, resume replays exactly, Ctrl-C saves, LoRA, CLI errors."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dllmrl.training.checkpoint import list_checkpoints
from dllmrl.cli import app
from dllmrl.config import ModelConfig
from dllmrl.training.metrics import read_metrics
from dllmrl.registry import TASKS
from dllmrl.training.sft import run_sft
from dllmrl.training.sft_config import SftConfig
from dllmrl.tasks.base import Example, TaskBase

runner = CliRunner()


class ToyReverse(TaskBase):
    """Reverse a 4-letter word over 'abcd': a tiny model makes visible progress in a few dozen steps."""

    name = "toy-reverse"
    prompt_styles = ("compact",)
    prefill = ""
    split_sizes = {"train": 256, "test": 16}

    def _load(self, split):
        rng = random.Random(split)
        words = ["".join(rng.choice("abcd") for _ in range(4)) for _ in range(self.split_sizes[split])]
        return [Example(f"{split}-{i}", "", w) for i, w in enumerate(words)]

    def build_prompt(self, ex, prompt_style):
        return ex.target

    def sft_target(self, ex, prompt_style):
        return ex.target[::-1]

    def extract(self, completion):
        return completion.strip() or None

    def verify(self, ex, completion):
        return self.extract(completion) == ex.target[::-1]

    def rewards(self):
        return {"correct": (self.correct_reward, 1.0)}


if "toy-reverse" not in TASKS:
    TASKS.register("toy-reverse", ToyReverse)

FAST = dict(task="toy-reverse", prompt_style="compact", gen_len=8, batch_size=16, lr=3e-3, warmup_steps=2, log_every=5)


def _run(tiny_model_dir, out, **kw):
    return run_sft(SftConfig(output=str(out), **{**FAST, **kw}), ModelConfig(model=tiny_model_dir, device="cpu"))


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_short_run_learns_and_writes_metrics_checkpoints_and_a_loadable_model(tiny_model_dir, tmp_path):
    res = _run(tiny_model_dir, tmp_path / "run", max_steps=40, save_every=20)
    assert res.step == 40 and not res.lora and res.model_dir == tmp_path / "run" / "model"
    rows = read_metrics(res.run_dir)
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert rows[-1]["ce"] < 0.6 * rows[0]["ce"]  # the masked-token CE falls well below its start
    assert {"loss", "ce", "acc", "grad_norm", "lr", "epoch"} <= set(rows[0])
    assert [p.name for p in list_checkpoints(res.run_dir)] == ["step-0000020", "step-0000040"]
    # Every weight of the full fine-tuning moved (TRL's test_train idea).
    base, trained = _weights(Path(tiny_model_dir)), _weights(res.model_dir)
    assert all(not torch.equal(base[k], trained[k]) for k in trained if k in base)
    # The exported model is an ordinary HF directory that remembers how it was trained.
    assert json.loads((res.model_dir / "dllmrl.json").read_text()) == {"prompt_style": "compact", "gen_len": 8}
    from dllmrl.models import load_model

    adapter = load_model(ModelConfig(model=str(res.model_dir), device="cpu"))
    assert adapter.tokenizer.decode([adapter.tokenizer.eos_token_id]) == "<eos>"
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["sft"]["gen_len"] == 8 and cfg["lora_used"] is False


@pytest.mark.parametrize("where", ["between steps", "mid-accumulation"])
def test_ctrl_c_saves_and_resume_replays_the_same_run(tiny_model_dir, tmp_path, monkeypatch, where):
    straight = _run(tiny_model_dir, tmp_path / "straight", max_steps=14, grad_accum=2, save_every=0)

    def interrupt(p):
        if p.step == 6:
            raise KeyboardInterrupt

    if where == "mid-accumulation":  # the 14th forward is step 7's second micro-batch: its first is dropped
        import dllmrl.training.sft as sft_mod

        calls, real_forward = [], sft_mod.sft_forward

        def forward(*args, **kwargs):
            calls.append(1)
            if len(calls) == 14:
                raise KeyboardInterrupt
            return real_forward(*args, **kwargs)

        monkeypatch.setattr(sft_mod, "sft_forward", forward)
    cut = run_sft(SftConfig(output=str(tmp_path / "cut"), max_steps=14, grad_accum=2, save_every=0, **FAST),
                  ModelConfig(model=tiny_model_dir, device="cpu"),
                  on_progress=interrupt if where == "between steps" else None)
    monkeypatch.undo()
    assert cut.interrupted and cut.step == 6 and cut.model_dir is None
    assert cut.checkpoint.name == "step-0000006" and (cut.checkpoint / "state.json").exists()
    resumed = _run(tiny_model_dir, tmp_path / "cut", max_steps=14, grad_accum=2, save_every=0, resume=True)
    assert resumed.step == 14
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same data order, same masks, same optimizer state
    assert [r["step"] for r in read_metrics(resumed.run_dir)] == [5, 10, 14]


def test_lora_trains_only_the_adapter(tiny_model_dir, tmp_path):
    res = _run(tiny_model_dir, tmp_path / "lora", max_steps=3, lora="on", lora_r=4, lora_alpha=8, save_every=0)
    assert res.lora and res.model_dir.name == "adapter" and (res.model_dir / "adapter_config.json").exists()
    from dllmrl.models import load_model

    base = load_model(ModelConfig(model=tiny_model_dir, device="cpu"))
    tuned = load_model(ModelConfig(model=tiny_model_dir, adapter=str(res.model_dir), device="cpu"))
    lora = {n: p for n, p in tuned.model.named_parameters() if "lora_B" in n}
    assert lora and all(p.abs().sum() > 0 for p in lora.values())  # lora_B starts at zero: every one moved
    x = torch.tensor([[5, 6, 7, 2, 2]])
    assert not torch.allclose(base.logits(x), tuned.logits(x))


def test_every_config_field_has_an_option():
    r = runner.invoke(app, ["sft", "--help"], env={"COLUMNS": "200"})
    for f in dataclasses.fields(SftConfig):
        if f.name != "task":  # the argument
            assert f"--{f.name.replace('_', '-')}" in r.stdout, f.name


def test_cli_trains_and_says_how_to_evaluate(tiny_model_dir, tmp_path):
    out = tmp_path / "cli"
    r = runner.invoke(app, ["sft", "toy-reverse", "--model", tiny_model_dir, "-o", str(out), "--prompt-style", "compact",
                            "--gen-len", "8", "--max-steps", "2", "--warmup-steps", "0", "--batch-size", "4",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "dllmrl eval toy-reverse --model" in r.output and (out / "model" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--min-t", "0"], "--min-t must lie in (0, 1)"),
        (["--lora", "maybe"], "--lora must be one of auto, on, off"),
        (["--gen-len", "2"], "fits in --gen-len 2 tokens"),
        (["--prompt-style", "compat"], "did you mean 'compact'"),
        (["--split", "valid"], "is not a split of task 'toy-reverse'"),
        (["--resume"], "holds no checkpoint; leave out --resume"),
    ],
)
def test_bad_options_give_one_clear_line(tiny_model_dir, tmp_path, args, message):
    base = ["sft", "toy-reverse", "--model", tiny_model_dir, "-o", str(tmp_path / "r"), "--prompt-style", "compact",
            "--gen-len", "8", "--max-steps", "2", "--warmup-steps", "0", "--batch-size", "4", "--device", "cpu"]
    r = runner.invoke(app, base + args)
    assert r.exit_code == 1, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output


def test_unknown_task_and_a_second_run_in_one_directory_are_refused(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["sft", "sudok", "--model", tiny_model_dir, "--device", "cpu", "-o", str(tmp_path / "x")])
    assert r.exit_code == 1 and "did you mean 'sudoku'" in r.output
    _run(tiny_model_dir, tmp_path / "once", max_steps=1, warmup_steps=0, save_every=0)
    with pytest.raises(Exception, match="already holds a run"):
        _run(tiny_model_dir, tmp_path / "once", max_steps=1, warmup_steps=0, save_every=0)
    with pytest.raises(Exception, match="started with other settings.*--lr"):
        _run(tiny_model_dir, tmp_path / "once", max_steps=2, warmup_steps=0, save_every=0, lr=1e-2, resume=True)


def test_quick_eval_during_training_is_logged(tiny_model_dir, tmp_path):
    res = _run(tiny_model_dir, tmp_path / "ev", max_steps=4, warmup_steps=0, save_every=0, log_every=2,
               eval_every=2, eval_limit=4, eval_split="test")
    rows = read_metrics(res.run_dir)
    assert [r["step"] for r in rows] == [2, 4] and all(0 <= r["eval_accuracy"] <= 1 for r in rows)
    plain = _run(tiny_model_dir, tmp_path / "plain", max_steps=4, warmup_steps=0, save_every=0, log_every=2)
    a, b = _weights(res.model_dir), _weights(plain.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)  # evaluating does not change what is learnt


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_process_worker(model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    from accelerate.state import AcceleratorState, GradientState

    # The forked child inherits the parent's single-process accelerate singletons from earlier tests.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert torch.distributed.get_world_size() == 2  # the debug launcher has initialised the gloo group
    run_sft(SftConfig(output=out, **{**FAST, "batch_size": 4, "log_every": 2}, max_steps=4, grad_accum=2, save_every=2),
            ModelConfig(model=model_dir, device="cpu"))


@pytest.mark.slow
def test_two_cpu_processes_share_the_batch_and_stay_in_sync(tiny_model_dir, tmp_path, monkeypatch):
    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    import dllmrl.training.sft as sft_mod

    real_save = sft_mod.save_final_adapter

    def keep_final(run_dir, model, accelerator=None, tokenizer=None):  # every rank keeps its own copy
        state = {n: p.detach().clone() for n, p in accelerator.unwrap_model(model).named_parameters()}
        torch.save(state, Path(run_dir) / f"params-{accelerator.process_index}.pt")
        return real_save(run_dir, model, accelerator, tokenizer)

    monkeypatch.setattr(sft_mod, "save_final_adapter", keep_final)
    out = tmp_path / "ddp"
    with patch_environment(world_size=2, master_addr="127.0.0.1", master_port=str(_free_port()),
                           accelerate_mixed_precision="no", accelerate_use_cpu="yes", gloo_socket_ifname="lo",
                           accelerate_debug_rdv_file=str(tmp_path / "rdv")):
        start_processes(PrepareForLaunch(_two_process_worker, debug=True), args=(tiny_model_dir, str(out)),
                        nprocs=2, start_method="fork")
    p0, p1 = torch.load(out / "params-0.pt"), torch.load(out / "params-1.pt")
    assert all(torch.equal(p0[n], p1[n]) for n in p0)
    rows = read_metrics(out)  # rank 0 only writes
    assert [r["step"] for r in rows] == [2, 4]
    assert rows[-1]["epoch"] == 4 * 2 * 4 * 2 / 256  # steps x grad_accum x batch x processes rows of the 256
    assert sorted(p.name for p in (out / "checkpoints" / "step-0000004").glob("rank-*.pt")) == ["rank-0.pt", "rank-1.pt"]
