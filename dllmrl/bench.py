"""Where the time of a rollout and of a training micro-step goes, against the forward-pass floor.

    dllmrl bench --model checkpoints/tiny-sudoku --batch-size 8 --gen-len 256
    dllmrl bench --tiny-vocab 32000 --json      # a random tiny model with that vocabulary

Floors are plain model calls at the same shape with no sampling or loss logic. Timings are
medians over ``repeats`` after ``warmup`` runs, synchronised on CUDA.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dllmrl.config import BenchConfig, SamplerConfig  # noqa: F401  (BenchConfig: API)
from dllmrl.sampling.keepers import TopEntropySteps
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.sampler import sample
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.training.accel import peak_rss_mb

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def trajectory_bytes(traj: Trajectory) -> int:
    return sum(v.numel() * v.element_size() for v in traj.__dict__.values() if isinstance(v, Tensor))


def random_prompts(model: ModelAdapter, cfg: BenchConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    low = 16 if model.vocab_size > 32 else 0  # keep clear of special tokens at the start of small vocabularies
    ids = torch.randint(low, model.vocab_size, (cfg.batch_size, cfg.prompt_len), generator=g)
    ids[ids == model.mask_id] = low
    return ids.to(device), torch.ones_like(ids, device=device)


def run_bench(model: ModelAdapter, cfg: BenchConfig, *, train_step: "TrainStepFns | None" = None,
              on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the floors, the sampler and (when given) the training micro-step. Returns a flat dict."""
    device = model.device
    scfg = SamplerConfig(gen_len=cfg.gen_len, steps=cfg.total_steps, block_len=cfg.block_len)
    ids, attn = random_prompts(model, cfg, device)
    x = torch.cat([ids, torch.full((cfg.batch_size, cfg.gen_len), model.mask_id, device=device)], 1)
    model.model.eval()
    phase = on_phase or (lambda _name: None)
    out: dict[str, Any] = {"device": str(device), "dtype": str(model.dtype).replace("torch.", ""),
                           "vocab_size": model.vocab_size, "batch_size": cfg.batch_size,
                           "prompt_len": cfg.prompt_len, "gen_len": cfg.gen_len, "steps": cfg.total_steps,
                           "k_steps": cfg.k_steps, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    @torch.no_grad()
    def floor() -> None:
        for _ in range(cfg.total_steps):
            model.model(input_ids=x).logits

    phase("forward floor")
    out["floor_s"] = timed(floor, device, cfg.repeats, cfg.warmup)
    phase("sampler")
    gen = torch.Generator(device=device)
    out["sampler_s"] = timed(lambda: sample(model, ids, attn, scfg, generator=gen.manual_seed(cfg.seed)),
                             device, cfg.repeats, cfg.warmup)
    out["sampler_floor_ratio"] = out["sampler_s"] / out["floor_s"]
    out["tokens_per_s"] = cfg.batch_size * cfg.gen_len / out["sampler_s"]
    phase("rollout (training sampler, top-K greedy kept)")
    rollout_cfg = SamplerConfig(gen_len=cfg.gen_len, steps=cfg.total_steps, block_len=cfg.block_len, temperature=0.9)
    traj_holder: list[Trajectory] = []

    def rollout() -> None:
        traj_holder[:] = [sample(model, ids, attn, rollout_cfg, generator=gen.manual_seed(cfg.seed),
                                 greedy_at=TopEntropySteps(cfg.k_steps))]

    out["rollout_s"] = timed(rollout, device, cfg.repeats, cfg.warmup)
    out["rollout_floor_ratio"] = out["rollout_s"] / out["floor_s"]
    traj = traj_holder[0]
    out["trajectory_bytes_per_seq"] = trajectory_bytes(traj) // cfg.batch_size

    if train_step is not None:
        steps = traj.greedy_steps[:, 0].clamp(min=0)  # one selected step per row (k = 0)
        states = traj.state_before(steps, model.mask_id)
        phase("training micro-step floor")
        out["train_floor_s"] = timed(lambda: train_step.floor(model, states, traj.attention_mask), device, cfg.repeats, cfg.warmup)
        phase("training micro-step, batched")
        out["train_batched_s"] = timed(lambda: train_step.batched(model, traj, steps), device, cfg.repeats, cfg.warmup)
        phase("training micro-step, one sample at a time")
        out["train_per_sample_s"] = timed(lambda: train_step.per_sample(model, traj, steps), device, cfg.repeats, cfg.warmup)
        out["train_floor_ratio"] = out["train_batched_s"] / out["train_floor_s"]
        out["train_batched_speedup"] = out["train_per_sample_s"] / out["train_batched_s"]
        model.model.zero_grad(set_to_none=True)
    out["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


@dataclass(frozen=True)
class TrainStepFns:
    """The three ways of doing one training micro-step that bench compares."""

    floor: Callable[[ModelAdapter, Tensor, Tensor], None]
    batched: Callable[[ModelAdapter, Trajectory, Tensor], None]
    per_sample: Callable[[ModelAdapter, Trajectory, Tensor], None]


def random_tiny_adapter(vocab_size: int, hidden: int = 64, layers: int = 2, max_len: int = 1024) -> ModelAdapter:
    """A random ModernBERT with an arbitrary vocabulary and no tokenizer (for the vocabulary-size comparison)."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    conf = ModernBertConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=max_len,
                            layer_types=["full_attention"] * layers, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2, cls_token_id=1, sep_token_id=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ModernBertForMaskedLM(conf).eval()
    return ModelAdapter(model=model, tokenizer=None, mask_id=3, eos_ids=(2,), pad_id=0,
                        family="modernbert", name=f"random-tiny-vocab{vocab_size}")


def train_step_fns() -> TrainStepFns:
    """The trainer's micro-step (forward + backward of the selected steps' log-probabilities), batched and
    per sample, and its floor (one plain forward + backward at the same states)."""
    from dllmrl.methods.logp import microstep_logp, microstep_logp_per_sample

    def floor(model: ModelAdapter, states: Tensor, attn: Tensor) -> None:
        model.logits(states, attn).float().mean().backward()

    def batched(model: ModelAdapter, traj: Trajectory, steps: Tensor) -> None:
        microstep_logp(model, traj, steps).logp.sum().backward()

    def per_sample(model: ModelAdapter, traj: Trajectory, steps: Tensor) -> None:
        microstep_logp_per_sample(model, traj, steps).logp.sum().backward()

    return TrainStepFns(floor=floor, batched=batched, per_sample=per_sample)
