"""CLI behaviour of `dllmrl sample` and `dllmrl ls`, and the clear one-line errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.sampling.guidance import GuidanceConfig

runner = CliRunner()


def test_sample_json_is_one_object_with_the_trajectory(tiny_model_dir):
    r = runner.invoke(app, ["sample", "hello", "--model", tiny_model_dir, "--gen-len", "16", "--steps", "4",
                            "--block-len", "8", "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    P = out["prompt_len"]
    assert len(out["tokens"]) == P + 16 and len(out["unmask_step"]) == P + 16
    assert out["unmask_step"][:P] == [-1] * P and sorted(set(out["unmask_step"][P:])) == [0, 1, 2, 3]
    assert len(out["step_entropy"]) == 4 and isinstance(out["text"], str)


def test_sample_live_view_shows_steps_and_text(tiny_model_dir):
    r = runner.invoke(app, ["sample", "hi", "--model", tiny_model_dir, "--gen-len", "8", "--steps", "2",
                            "--block-len", "8", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "step 2/2" in r.stdout and "completion" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "checkpoints/no-such-model"], "does not exist"),
        (["--model", "./nowhere"], "does not exist"),
        (["--model", "GSAI-ML/LLaDA-8B-Instruct"], "hub cannot be reached"),
        (["--gen-len", "30", "--block-len", "32"], "--gen-len 30 is not divisible by --block-len 32"),
        (["--steps", "3", "--gen-len", "64", "--block-len", "32"], "--steps 3 is not divisible"),
        (["--dtype", "float8"], "--dtype"),
        (["--device", "cuda:0"], "no GPU"),
    ],
)
def test_bad_input_gives_one_clear_line(tiny_model_dir, args, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    full = ["sample", "x", "--model", tiny_model_dir, "--gen-len", "16", "--steps", "4", "--block-len", "8"]
    if "cuda" in args[-1]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU, so --device cuda is valid here")
    r = runner.invoke(app, full + args)
    assert r.exit_code == 1
    assert message in r.output
    assert "Traceback" not in r.output


def test_unknown_architecture_and_non_model_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neo_x"}))
    r = runner.invoke(app, ["sample", "x", "--model", str(tmp_path)])
    assert r.exit_code == 1 and "architecture 'gpt_neo_x'" in r.output and "--trust-remote-code" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["sample", "x", "--model", str(empty)])
    assert r.exit_code == 1 and "holds no config.json" in r.output


def test_missing_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["sample", "x", "--model", tiny_model_dir, "--adapter", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "--adapter" in r.output and "does not exist" in r.output


def test_every_config_field_has_a_sample_option():
    import typer.main

    cmd = typer.main.get_command(app).commands["sample"]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    for cfg in (SamplerConfig, ModelConfig, GuidanceConfig):
        for f in dataclasses.fields(cfg):
            assert "--" + f.name.replace("_", "-") in opts, f"{cfg.__name__}.{f.name} has no option"


def test_ls_models_lists_families():
    r = runner.invoke(app, ["ls", "models"])
    assert r.exit_code == 0 and "modernbert" in r.stdout and "llada" in r.stdout
    r = runner.invoke(app, ["ls", "nothing"])
    assert r.exit_code == 1 and "dllmrl ls takes one of" in r.output
