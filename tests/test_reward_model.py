"""`dllmrl reward-model`: samples are labelled by the task's verifier and a usable reward model is saved."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.sampling.guidance import check_vocabularies, load_reward_model


def test_reward_model_command_labels_with_the_verifier_and_saves(tiny, tiny_model_dir, tmp_path):
    out = tmp_path / "rm"
    r = CliRunner().invoke(app, [
        "reward-model", "sudoku", "--model", tiny_model_dir, "--output", str(out), "--prompt-style", "compact",
        "--num-prompts", "8", "--samples-per-prompt", "2", "--gen-len", "16", "--steps", "8", "--block-len", "16",
        "--hidden", "16", "--layers", "1", "--epochs", "1", "--batch-size", "8", "--holdout", "0.25",
    ])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "dllmrl_reward.json").read_text())
    assert summary["samples"] == 16
    # a random tiny model never solves sudoku, so every label is 0
    assert summary["positive_rate"] == 0.0
    rm = load_reward_model(str(out), torch.device("cpu"), torch.float32)
    check_vocabularies(tiny, rm)  # shares the DLLM's tokenizer
    ids, attn = tiny.encode(["1234"])
    assert rm.score_ids(ids, attn).shape == (1,)
