"""Options generated from the configs, the one resolver, --config files, short model names and the
one-line errors for bad input (tiny model, offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.commands.options import Resolved, config_options

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _flat(output: str) -> str:
    return " ".join(output.split())


# ---------------------------------------------------------------------------------------------- bad input
SAMPLE = ["sample", "x", "--gen-len", "16", "--steps", "4", "--block-len", "8", "--device", "cpu"]
TRAIN = ["train", "sudoku", "--prompt-style", "compact", "--gen-len", "8", "--steps", "4", "--block-len", "8",
         "--k-steps", "2", "--num-generations", "2", "--batch-size", "2", "--max-steps", "1", "--device", "cpu"]
EVAL = ["eval", "sudoku", "--prompt-style", "compact", "--gen-len", "16", "--block-len", "16", "--limit", "1",
        "--device", "cpu"]
SFT = ["sft", "sudoku", "--prompt-style", "compact", "--gen-len", "8", "--max-steps", "1", "--device", "cpu"]


@pytest.mark.parametrize("base,args,message", [
    # non-finite numbers: accepted before (NaN temperature gave empty completions, --lr inf a NaN adapter)
    (SAMPLE, ["--temperature", "nan"], "--temperature nan is not a finite number"),
    (SAMPLE, ["--temperature", "inf"], "--temperature inf is not a finite number"),
    (SAMPLE, ["--cfg-scale", "nan"], "--cfg-scale nan is not a finite number"),
    (SAMPLE, ["--guidance-lr", "inf"], "--guidance-lr inf is not a finite number"),
    (EVAL, ["--temperature", "nan"], "--temperature nan is not a finite number"),
    (TRAIN, ["--lr", "inf"], "--lr inf is not a finite number"),
    (TRAIN, ["--lr", "nan"], "--lr nan is not a finite number"),
    (TRAIN, ["--beta", "nan"], "--beta nan is not a finite number"),
    (TRAIN, ["--lambda", "inf"], "--lambda inf is not a finite number"),
    (TRAIN, ["--max-grad-norm", "nan"], "--max-grad-norm nan is not a finite number"),
    (SFT, ["--lr", "nan"], "--lr nan is not a finite number"),
    (SFT, ["--weight-decay", "inf"], "--weight-decay inf is not a finite number"),
    # silent nonsense
    (SAMPLE, ["--steps", "32", "--gen-len", "16", "--block-len", "16"], "--steps 32 is more than --gen-len 16"),
    (EVAL, ["--steps", "32", "--block-len", "16"], "--steps 32 is more than --gen-len 16"),
    (TRAIN, ["--k-steps", "8"], "--k-steps 8 is more than --steps 4"),
    (SAMPLE, ["--threshold", "-0.5", "--decode", "threshold"], "--threshold is a confidence and must be >= 0"),
    (EVAL, ["--threshold", "-1"], "--threshold is a confidence"),
    (SAMPLE, ["--gen-len", "4096", "--steps", "4", "--block-len", "4096"], "exceeds the model's 1024 positions"),
    (EVAL, ["--gen-len", "2048", "--block-len", "2048"], "exceeds the model's 1024 positions"),
])
def test_bad_input_is_one_line_naming_the_option(tiny_model_dir, base, args, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(Path(tiny_model_dir).parent)  # runs/ of eval and train land in the tmp dir
    r = runner.invoke(app, base + ["--model", tiny_model_dir] + args, env={"COLUMNS": "300"})
    assert r.exit_code == 1, r.output
    assert message in _flat(r.output) and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: ")  # one red line, the last


def test_adapter_for_another_base_model_is_refused(tiny_model_dir, tmp_path):
    adapter = str(REPO / "checkpoints" / "tiny-llada-adapters")
    # names differ: refused before the model loads
    r = runner.invoke(app, ["sample", "x", "--model", tiny_model_dir, "--adapter", adapter,
                            "--adapter-subfolder", "sudoku/egspo-sa", "--no-live"])
    assert r.exit_code == 1 and "was made for base model" in _flat(r.output) and "Traceback" not in r.output
    # same name and family, other shapes (a hidden-32 LLaDA under the base's name): one line, no traceback
    from dllmrl.models.tiny_llada import TinyLladaConfig, build_tiny_llada

    fake = build_tiny_llada(tmp_path / "tiny-llada", TinyLladaConfig(hidden=32, layers=1, heads=2, intermediate=64))
    r = runner.invoke(app, ["sample", "x", "--model", str(fake), "--adapter", adapter,
                            "--adapter-subfolder", "sudoku/egspo-sa", "--no-live"])
    assert r.exit_code == 1 and "does not fit --model" in _flat(r.output) and "Traceback" not in r.output


def test_config_checks():
    from dllmrl.config import SamplerConfig
    from dllmrl.errors import ConfigError

    assert SamplerConfig(gen_len=64, block_len=32).steps == 32  # gen_len / 2 when not given
    assert SamplerConfig(gen_len=256).steps == 128
    with pytest.raises(ConfigError, match="--steps 65 is more than --gen-len 64"):
        SamplerConfig(gen_len=64, steps=65, block_len=64)
    with pytest.raises(ConfigError, match="exceeds the model's 100 positions"):
        SamplerConfig(gen_len=64, block_len=32).check_fits(100, prompt_len=40)


# ---------------------------------------------------------------------------------------------- resolver
def test_sources_are_ordered_command_line_file_model_protocol(tmp_path):
    from dllmrl.commands.options import Resolved, collect_fields
    from dllmrl.config import ModelConfig, SamplerConfig

    model = tmp_path / "m"
    model.mkdir()
    (model / "dllmrl.json").write_text(json.dumps({"gen_len": 32, "steps": 8, "block_len": 32, "temperature": 0.5}))
    fields = collect_fields((SamplerConfig, ModelConfig))
    f = tmp_path / "opts.yaml"
    f.write_text("temperature: 0.25\nblock_len: 16\n")

    def resolve(given, config=None, command="sample"):
        return Resolved(command, fields, {"model": str(model), **given}, config)

    r = resolve({})
    assert (r["gen_len"], r["steps"], r["block_len"], r["temperature"]) == (32, 8, 32, 0.5)  # the model's
    r = resolve({}, str(f))
    assert (r["block_len"], r["temperature"], r.sources["temperature"]) == (16, 0.25, "file")
    r = resolve({"temperature": 1.0}, str(f))
    assert r["temperature"] == 1.0 and r.sources["temperature"] == "command line"
    # the model's steps belong to its gen_len: at another length, gen_len / 2
    other = resolve({"gen_len": 64})
    assert other["steps"] is None and other.build(SamplerConfig).steps == 32
    # training reads the model's train_temperature, never its (greedy) evaluation temperature
    assert resolve({}, command="train")["temperature"] == 0.9
    # no model defaults: the protocol (sample: 128 positions), then the dataclass default
    r = Resolved("sample", fields, {"model": str(tmp_path)}, None)
    assert (r["gen_len"], r["block_len"], r.sources["gen_len"]) == (128, 32, "protocol")


def test_config_file_errors_are_one_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"temprature": 1}))
    r = runner.invoke(app, ["sample", "x", "--model", tiny_model_dir, "--config", str(bad)])
    assert r.exit_code == 1 and "'temprature' is not an option of dllmrl sample; did you mean 'temperature'" in _flat(r.output)
    sft_record = tmp_path / "config.json"
    sft_record.write_text(json.dumps({"command": "sft", "sft": {"lr": 1e-3}}))
    r = runner.invoke(app, ["train", "--config", str(sft_record)])
    assert r.exit_code == 1 and "record of a 'dllmrl sft' run" in _flat(r.output)
    r = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_train_config_json_repeats_the_run(tiny_model_dir, tmp_path, monkeypatch):
    """`dllmrl train --config RUN/config.json` reproduces the run's first two steps exactly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = tmp_path / "first"
    r = runner.invoke(app, TRAIN[:2] + ["--model", tiny_model_dir, "--prompt-style", "compact", "--gen-len", "8",
                                        "--steps", "4", "--block-len", "8", "--k-steps", "2", "--num-generations", "2",
                                        "--batch-size", "2", "--grad-accum", "1", "--max-steps", "2", "--lr", "1e-2",
                                        "--warmup-steps", "0", "--lora-r", "4", "--lora-alpha", "8", "--temperature",
                                        "1.0", "--save-every", "0", "--reward-workers", "1", "--reward-weight",
                                        "correct=1", "--device", "cpu", "-o", str(first)])
    assert r.exit_code == 0, r.output
    again = tmp_path / "again"
    r = runner.invoke(app, ["train", "--config", str(first / "config.json"), "-o", str(again)])
    assert r.exit_code == 0, r.output
    saved = json.loads((again / "config.json").read_text())
    assert saved["train"]["reward_weights"] == [["correct", 1.0]] and saved["sampler"]["gen_len"] == 8

    def rows(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = rows(first), rows(again)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for key in ("loss", "reward"):
        assert [r[key] for r in a] == [r[key] for r in b], key


def test_every_command_keeps_help_and_examples():
    for name in ("sample", "eval", "train", "sft", "bench", "reward-model", "score"):
        r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "Example" in r.output, name
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert "(default: 3e-05)" in r.output and "--config" in r.output and "--lambda" in r.output


# ---------------------------------------------------------------------------------------------- install hygiene
def test_shipped_checkpoints_have_short_names(tmp_path, monkeypatch):
    from dllmrl.model_defaults import find_model, read_model_defaults, shipped_models

    monkeypatch.chdir(tmp_path)  # away from the repository: the relative checkpoints/ path is gone
    assert {"tiny-llada", "tiny-llada-adapters"} <= set(shipped_models())
    path = Path(find_model("tiny-llada"))
    assert path.is_absolute() and (path / "config.json").is_file() and path.name == "tiny-llada"
    assert find_model("checkpoints/tiny-llada") == str(path)  # the README's spelling works from anywhere
    assert read_model_defaults("tiny-llada")["prompt_style"] == "compact"
    assert find_model("no-such-model") == "no-such-model"
    sub = ["--adapter-subfolder", "sudoku/egspo-sa"]
    r = runner.invoke(app, ["sample", "x", "--model", "tiny-llada", "--adapter", "tiny-llada-adapters", *sub,
                            "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["config"]["gen_len"] == 16  # tiny-llada's dllmrl.json
    r = runner.invoke(app, ["eval", "sudoku", "--model", "tiny-llada", "--adapter", "tiny-llada-adapters", *sub,
                            "--limit", "2", "--device", "cpu", "--out", "ev"])
    assert r.exit_code == 0, r.output
    settings = json.loads(Path(tmp_path, "ev", "results.json").read_text())["settings"]
    assert (settings["gen_lens"], settings["steps"], settings["prompt_style"]) == ([16], 16, "compact")


def test_a_tasks_py_in_the_working_directory_does_not_change_ls(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "dllmrl.cli", "ls", "tasks"]
    clean = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    (tmp_path / "tasks.py").write_text("raise SystemExit('the local tasks.py was imported')\n")
    (tmp_path / "dllmrl_tasks.py").write_text("raise SystemExit('imported')\n")
    shadowed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert shadowed.returncode == 0, shadowed.stderr
    assert shadowed.stdout == clean.stdout and "sudoku" in clean.stdout and "gsm8k" in clean.stdout


def test_train_refuses_a_gen_len_beyond_the_models_positions(tiny_model_dir, tmp_path):
    r = runner.invoke(app, TRAIN + ["--model", tiny_model_dir, "--gen-len", "2048", "--block-len", "2048",
                                    "--steps", "4", "-o", str(tmp_path / "run")])
    assert r.exit_code == 1 and "exceeds the model's 1024 positions" in _flat(r.output) and "Traceback" not in r.output


@pytest.mark.parametrize("command,classes,left_out", [
    ("sample", ("SamplerConfig", "ModelConfig", "GuidanceConfig"), set()),
    ("eval", ("EvalConfig", "ModelConfig", "GuidanceConfig"), {"task", "gen_lens"}),
    ("train", ("TrainConfig", "SamplerConfig", "ModelConfig"), {"task"}),
    ("sft", ("SftConfig",), {"task"}),
    ("bench", ("BenchConfig",), set()),
    ("reward-model", ("RewardModelConfig",), set()),
])
def test_every_config_field_of_every_command_has_an_option(command, classes, left_out):
    """The drift guard for all commands: a field added to a config (e.g. a new TrainConfig option) is an option."""
    import dataclasses

    import typer.main

    import dllmrl.config
    import dllmrl.evaluation.loop
    import dllmrl.training.sft_config
    import dllmrl.training.train_config
    from dllmrl.commands.options import option_flag

    where = {**vars(dllmrl.config), **vars(dllmrl.evaluation.loop), **vars(dllmrl.training.sft_config),
             **vars(dllmrl.training.train_config)}
    cmd = typer.main.get_command(app).commands[command]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    for cls in classes:
        for f in dataclasses.fields(where[cls]):
            if f.name not in left_out:
                assert option_flag(f.name) in opts, f"{cls}.{f.name} has no option in dllmrl {command}"
    assert "--gen-len" in opts or command in ("reward-model",)


def test_a_new_config_field_becomes_an_option_without_touching_the_command(tmp_path):
    """What happens when a field such as ``report_to`` is added to a config: option, default, help, file."""
    from dataclasses import dataclass

    import typer


    @dataclass(frozen=True)
    class Extra:
        report_to: tuple[str, ...] = ()
        """Where to report metrics, repeatable."""
        rate: float = 0.5
        """A rate."""

    seen = []
    sub = typer.Typer()

    @sub.command()
    @config_options("x", Extra)
    def go(opts: Resolved = None) -> None:  # type: ignore[assignment]
        seen.append(opts.build(Extra))

    sub.command("other")(lambda: None)
    assert runner.invoke(sub, ["go", "--report-to", "tensorboard", "--report-to", "wandb"]).exit_code == 0
    assert seen[-1] == Extra(report_to=("tensorboard", "wandb"), rate=0.5)
    (tmp_path / "c.yaml").write_text("report_to: [tensorboard]\nrate: 1\n")
    assert runner.invoke(sub, ["go", "--config", str(tmp_path / "c.yaml")]).exit_code == 0
    assert seen[-1] == Extra(report_to=("tensorboard",), rate=1.0)
    help_text = _flat(runner.invoke(sub, ["go", "--help"], env={"COLUMNS": "200"}).output)
    assert "Where to report metrics, repeatable." in help_text and "(default: 0.5)" in help_text


def test_a_pack_that_does_not_declare_the_contract_is_refused(monkeypatch):
    from dllmrl.errors import DllmrlError
    from dllmrl.registry import TASKS
    from dllmrl.tasks.base import get_task

    class Loose:  # the hooks probed for before the contract was declared
        name = "loose"

    monkeypatch.setitem(TASKS._entries, "loose", Loose)
    with pytest.raises(DllmrlError, match="does not subclass dllmrl.tasks.base.TaskBase"):
        get_task("loose")


def test_sft_refuses_a_gen_len_beyond_the_models_positions(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["sft", "sudoku", "--model", tiny_model_dir, "--gen-len", "2048", "--max-steps", "1", "--warmup-steps", "0",
                            "--device", "cpu", "--output", str(tmp_path / "run")])
    assert r.exit_code == 1 and "in the model's 1024 positions" in _flat(r.output) and "Traceback" not in r.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_every_package_of_the_source_tree_is_installed():
    """pyproject lists the packages explicitly (tasks/ and checkpoints/ are mapped under dllmrl): a new
    subpackage missing from that list imports from a checkout but not from a non-editable install."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(root).parts) for p in (root / "dllmrl").rglob("__init__.py")}
    on_disk |= {"dllmrl.tasks." + ".".join(p.parent.relative_to(root / "tasks").parts) if p.parent != root / "tasks"
                else "dllmrl.tasks" for p in (root / "tasks").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
