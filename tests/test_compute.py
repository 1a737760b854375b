"""Compute accounting: every metrics row carries cumulative forward and backward passes (in sequences),
hand-counted here for tiny two-step runs, and kept over a resume.

The toy run: batch 8 (2 prompts x G 4), a sampler of 4 denoising steps over one block (fixed schedule:
4 forwards per rollout), grad-accum 2, so each optimizer step is one rollout and two micro-steps.
"""

from __future__ import annotations

import pytest
import torch

from dllmrl.training.compute import ForwardCounter
from dllmrl.training.metrics import read_metrics
from dllmrl.training.trainer import train
from test_trainer import SCFG, mcfg, toy_config
from toy_tasks import ToyLowercase

B, T = 8, 4


def _run(tmp_path, toy_model_dir, **kw):
    cfg = toy_config(tmp_path, grad_accum=2, max_steps=2, **kw)
    train(cfg, SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    return read_metrics(tmp_path)


def _counts(rows, key):
    return [r[key] for r in rows]


def test_egspo_two_steps_hand_counted(toy_model_dir, tmp_path):
    # Per step: rollout B x T = 32 (no grad); old log-probs come from the rollout (no pass);
    # K = 2 micro-steps, one forward over the batch each, with gradients: 16 forwards, 16 backwards.
    rows = _run(tmp_path, toy_model_dir, method="egspo", k_steps=2, beta=0.0)
    assert _counts(rows, "forwards_rollout") == [32, 64]
    assert _counts(rows, "forwards") == [48, 96]
    assert _counts(rows, "backwards") == [16, 32]
    assert _counts(rows, "eval_forwards") == [0, 0]
    assert rows[0]["train_seconds"] > 0 and rows[1]["train_seconds"] > rows[0]["train_seconds"]


def test_egspo_reference_forwards_count_when_beta_positive(toy_model_dir, tmp_path):
    # β > 0 adds one no-grad reference forward over the batch per micro-step: 16 more per step.
    rows = _run(tmp_path, toy_model_dir, method="egspo-sa", k_steps=2, beta=0.04)
    assert _counts(rows, "forwards") == [64, 128]
    assert _counts(rows, "backwards") == [16, 32]


def test_diffu_grpo_two_steps_hand_counted(toy_model_dir, tmp_path):
    # Per step: rollout 32; μ = 2 no-grad "old" forwards over the batch (16); μ = 2 micro-steps with
    # gradients (16 forwards, 16 backwards).
    rows = _run(tmp_path, toy_model_dir, method="diffu-grpo", mu=2, beta=0.0)
    assert _counts(rows, "forwards_rollout") == [32, 64]
    assert _counts(rows, "forwards") == [64, 128]
    assert _counts(rows, "backwards") == [16, 32]


def test_counts_survive_a_resume(toy_model_dir, tmp_path):
    cfg = dict(method="egspo", k_steps=2, beta=0.0, grad_accum=2)
    train(toy_config(tmp_path, max_steps=1, save_every=1, **cfg), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    train(toy_config(tmp_path, max_steps=2, resume=True, **cfg), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    rows = read_metrics(tmp_path)
    assert _counts(rows, "forwards") == [48, 96]
    assert rows[1]["train_seconds"] > rows[0]["train_seconds"]


def test_counter_units_and_phases():
    lin = torch.nn.Linear(3, 2)
    counter = ForwardCounter(lin)
    with torch.no_grad(), counter.phase("rollout"):
        lin(torch.zeros(5, 3))
    lin(torch.zeros(2, 3))  # with gradients: a backward will follow
    with counter.excluded():
        lin(torch.zeros(7, 3))
    assert counter.totals.as_dict() == {"forwards": 7, "backwards": 2, "forwards_rollout": 5, "eval_forwards": 7}
    counter.remove()
    lin(torch.zeros(1, 3))
    assert counter.totals.forwards == 7
