"""scripts/ship_adapters.py: a run's adapter lands in the hub layout DEST/TASK/METHOD with a card, and
`dllmrl eval --adapter DEST --adapter-subfolder TASK/METHOD` loads it from the local folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.config import ModelConfig
from dllmrl.models import load_model
from dllmrl.training.lora import LoraSettings, add_lora

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _ship_module():
    spec = importlib.util.spec_from_file_location("ship_adapters", ROOT / "scripts" / "ship_adapters.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_run(model_dir: str, run_dir: Path) -> None:
    """A finished run as the trainer leaves it: adapter/, config.json, metrics.jsonl."""
    torch.manual_seed(0)
    a = add_lora(load_model(ModelConfig(model=model_dir, device="cpu", dtype="float32")), LoraSettings(4, 8, 0.0))
    a.model.save_pretrained(run_dir / "adapter")
    (run_dir / "config.json").write_text(json.dumps({
        "train": {"method": "egspo-sa", "lr": 1e-3, "max_steps": 2, "seed": 1, "k_steps": 2},
        "model": {"model": model_dir}, "sampler": {"gen_len": 32, "steps": 16, "block_len": 32, "temperature": 1.0}}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 2, "forwards": 96, "backwards": 32,
                                                       "train_seconds": 1.5}) + "\n")


def test_shipped_adapter_loads_from_a_subfolder_of_a_local_folder(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "runs" / "egspo-sa-s1"
    _fake_run(tiny_model_dir, run)
    dest = tmp_path / "tiny-llada-adapters"
    out = _ship_module().ship(run, dest, "sudoku", "egspo-sa")
    assert out == dest / "sudoku" / "egspo-sa"
    assert (out / "adapter_model.safetensors").read_bytes() == (run / "adapter" / "adapter_model.safetensors").read_bytes()
    card = (out / "README.md").read_text()
    assert "egspo-sa" in card and "96 forward and 32 backward" in card and "--adapter-subfolder sudoku/egspo-sa" in card
    assert "sudoku/egspo-sa" in (dest / "README.md").read_text()

    args = ["eval", "sudoku", "--model", tiny_model_dir, "--adapter", str(dest), "--limit", "2", "--gen-len", "32",
            "--device", "cpu"]
    r = runner.invoke(app, args + ["--adapter-subfolder", "sudoku/egspo-sa", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    settings = json.loads((tmp_path / "ev" / "results.json").read_text())["settings"]
    assert settings["adapter"] == str(dest) and settings["adapter_subfolder"] == "sudoku/egspo-sa"
    # The subfolder is really read: a method that was not shipped is one clear error.
    r = runner.invoke(app, args + ["--adapter-subfolder", "sudoku/wd1", "--out", str(tmp_path / "ev2")])
    assert r.exit_code != 0 and "sudoku/wd1" in r.output
