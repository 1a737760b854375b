"""`dllmrl bench` measures what it says; speed itself is not asserted (benchmarks, not timed tests)."""

from __future__ import annotations

import dataclasses
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


def test_bench_shape_builds_the_published_architecture_small_and_times_each_setting():
    r = CliRunner().invoke(app, ["bench", "--shape", "llada-8b", "--layers", "2", "--hidden", "64", "--heads", "4",
                                 "--batch-size", "2", "--prompt-len", "8", "--gen-len", "16", "--steps", "8",
                                 "--block-len", "8", "--k-steps", "2", "--repeats", "1", "--warmup", "0",
                                 "--cache", "none", "--cache", "dual", "--decode", "fixed", "--decode", "threshold",
                                 "--no-train", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["vocab_size"] == 126464 and res["model"] == "random-llada-8b"
    assert [(s["cache"], s["decode"]) for s in res["settings"]] == [
        ("none", "fixed"), ("none", "threshold"), ("dual", "fixed"), ("dual", "threshold")]
    for s in res["settings"]:
        assert s["eval_tokens_per_s"] > 0 and s["rollout_tokens_per_s"] > 0 and 0 < s["eval_nfe"] <= 8
    for key in ("sampler_peak_mb", "rollout_peak_mb", "floor_peak_mb"):
        assert res[key] > 0, key


def test_shapes_restate_the_published_configs():
    from dllmrl.models.shapes import shape_config

    _, llada = shape_config("llada-8b")
    assert (llada.d_model, llada.n_layers, llada.n_heads, llada.mlp_hidden_size, llada.vocab_size, llada.mask_token_id) == (
        4096, 32, 32, 12288, 126464, 126336)
    _, dream = shape_config("dream-7b", layers=3)
    assert (dream.hidden_size, dream.num_hidden_layers, dream.num_attention_heads, dream.num_key_value_heads,
            dream.intermediate_size, dream.vocab_size) == (3584, 3, 28, 4, 18944, 152064)


def test_no_malloc_trim_is_reported_and_leaves_the_allocator_alone():
    off = run_bench(random_tiny_adapter(100, hidden=16), dataclasses.replace(SMALL, malloc_trim=False))
    assert off["malloc_trim"] is False
