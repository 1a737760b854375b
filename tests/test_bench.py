"""`dllmrl bench` measures what it says; speed itself is not asserted (benchmarks, not timed tests)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dllmrl.bench import BenchConfig, random_tiny_adapter, run_bench
from dllmrl.cli import app

SMALL = BenchConfig(batch_size=2, prompt_len=8, gen_len=16, steps=8, block_len=8, k_steps=2, repeats=1, warmup=0)


def test_trajectory_memory_does_not_depend_on_vocabulary():
    small = run_bench(random_tiny_adapter(100, hidden=16), SMALL)
    large = run_bench(random_tiny_adapter(5000, hidden=16), SMALL)
    assert small["trajectory_bytes_per_seq"] == large["trajectory_bytes_per_seq"] > 0


def test_trajectory_memory_does_not_depend_on_steps():
    a = run_bench(random_tiny_adapter(100, hidden=16), SMALL)
    # 4x the steps: only the (B, T) per-step scalars grow, 4 tensors x 8 bytes max per extra step
    b = run_bench(random_tiny_adapter(100, hidden=16), BenchConfig(**{**SMALL.__dict__, "steps": 16}))
    assert b["trajectory_bytes_per_seq"] - a["trajectory_bytes_per_seq"] <= 8 * 4 * 8


def test_bench_json_has_the_documented_keys(tiny_model_dir):
    r = CliRunner().invoke(app, ["bench", "--model", tiny_model_dir, "--batch-size", "2", "--prompt-len", "8",
                                 "--gen-len", "16", "--steps", "8", "--block-len", "8", "--k-steps", "2",
                                 "--repeats", "1", "--warmup", "0", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    for key in ("floor_s", "sampler_s", "sampler_floor_ratio", "tokens_per_s", "train_floor_s", "train_batched_s",
                "train_floor_ratio", "train_per_sample_s", "train_batched_speedup", "peak_rss_mb"):
        assert res[key] > 0, key
    assert res["tokens_per_s"] == 2 * 16 / res["sampler_s"]


def test_batched_and_per_sample_micro_steps_give_the_same_gradients(tiny):
    """What bench compares must be the same computation done two ways."""
    import torch

    from dllmrl.bench import train_step_fns
    from dllmrl.config import SamplerConfig
    from dllmrl.sampling.keepers import TopEntropySteps
    from dllmrl.sampling.sampler import sample

    fns = train_step_fns()
    ids, attn = tiny.encode([tiny.render_prompt(t) for t in ("a", "bb", "ccc")])
    traj = sample(tiny, ids, attn, SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=1.0),
                  generator=torch.Generator().manual_seed(0), greedy_at=TopEntropySteps(2))
    steps = traj.greedy_steps[:, 0]
    grads = []
    for fn in (fns.batched, fns.per_sample):
        tiny.model.zero_grad(set_to_none=True)
        fn(tiny, traj, steps)
        grads.append([p.grad.clone() for p in tiny.model.parameters() if p.grad is not None])
    tiny.model.zero_grad(set_to_none=True)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
