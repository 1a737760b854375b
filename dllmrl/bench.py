"""Where the time of a rollout and of a training micro-step goes, against the forward-pass floor.

    dllmrl bench --model checkpoints/tiny-llada --batch-size 8 --prompt-len 32 --gen-len 32
    dllmrl bench --tiny-vocab 32000 --json      # a random tiny model with that vocabulary
    dllmrl bench --shape llada-8b --device cuda --cache none --cache dual --decode fixed --decode threshold

Floors are plain model calls at the same shape with no sampling or loss logic. Timings are
medians over ``repeats`` after ``warmup`` runs, synchronised on CUDA.
"""

from __future__ import annotations

import ctypes
import logging
import statistics
import sys
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


M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number for the mmap threshold."""
MMAP_THRESHOLD_BYTES = 1 << 20


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (musl and others lack them: AttributeError)
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> bool:
    """On glibc: allocate blocks of 1 MiB and more with mmap from now on, and trim the heap; False elsewhere.

    glibc raises its mmap threshold as large blocks are freed (up to 32 MB), after which 4-32 MB
    tensors come from the heap and stay in the process when freed; a CPU peak then counts that
    retained heap. A fixed threshold turns the dynamic rise off, so a freed tensor leaves at once.
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    libc.malloc_trim(0)
    return ok


def trim_heap() -> None:
    """Hand glibc's free heap pages back to the system (a no-op off glibc)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def timed_rounds(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int,
                 warmup: int, trim: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds and peak memory (MB) of each function, run round-robin (one of each per round)
    so that a drifting machine load weighs on a measure and its floor alike; ``trim``: trim the heap
    before each (see release_freed_memory)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, float] = {k: 0.0 for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if trim:
                trim_heap()
            with PhasePeak(device) as mem:
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - t0)
            peaks[name] = max(peaks[name], mem.mb)
    return {k: statistics.median(v) for k, v in times.items()}, peaks


class PhasePeak:
    """Peak memory of one phase: CUDA's allocator peak, or on CPU the resident-set high-water mark
    (Linux lets a process reset it by writing 5 to /proc/self/clear_refs; elsewhere it is the process's peak)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> "PhasePeak":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mb = _vm_hwm_mb()


def _vm_hwm_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


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
    """Measure the floors, the sampler and (when given) the training micro-step. Returns a flat dict.

    ``*_peak_mb`` is the peak memory of that measure alone (see PhasePeak); ``peak_rss_mb`` the process's.
    ``malloc_trim`` in the result: whether freed memory was returned to the system (cfg.malloc_trim on glibc).
    """
    device = model.device
    trim = cfg.malloc_trim and release_freed_memory()
    scfg = SamplerConfig(gen_len=cfg.gen_len, steps=cfg.total_steps, block_len=cfg.block_len)
    ids, attn = random_prompts(model, cfg, device)
    x = torch.cat([ids, torch.full((cfg.batch_size, cfg.gen_len), model.mask_id, device=device)], 1)
    model.model.eval()
    phase = on_phase or (lambda _name: None)
    out: dict[str, Any] = {"device": str(device), "dtype": str(model.dtype).replace("torch.", ""),
                           "vocab_size": model.vocab_size, "batch_size": cfg.batch_size,
                           "prompt_len": cfg.prompt_len, "gen_len": cfg.gen_len, "steps": cfg.total_steps,
                           "k_steps": cfg.k_steps, "threads": torch.get_num_threads(), "malloc_trim": trim}

    @torch.no_grad()
    def floor() -> None:
        for _ in range(cfg.total_steps):
            model.model(input_ids=x).logits

    gen = torch.Generator(device=device)
    rollout_cfg = SamplerConfig(gen_len=cfg.gen_len, steps=cfg.total_steps, block_len=cfg.block_len, temperature=0.9)
    traj_holder: list[Trajectory] = []

    def rollout() -> None:
        traj_holder[:] = [sample(model, ids, attn, rollout_cfg, generator=gen.manual_seed(cfg.seed),
                                 greedy_at=TopEntropySteps(cfg.k_steps))]

    phase("sampler, rollout and their forward floor, round-robin")
    secs, peaks = timed_rounds({
        "sampler": lambda: sample(model, ids, attn, scfg, generator=gen.manual_seed(cfg.seed)),
        "rollout": rollout,
        "floor": floor,
    }, device, cfg.repeats, cfg.warmup, trim)
    for name in ("sampler", "rollout", "floor"):
        out[f"{name}_s"], out[f"{name}_peak_mb"] = secs[name], peaks[name]
    out["tokens_per_s"] = cfg.batch_size * cfg.gen_len / out["sampler_s"]
    out["sampler_floor_ratio"] = out["sampler_s"] / out["floor_s"]
    out["rollout_floor_ratio"] = out["rollout_s"] / out["floor_s"]
    traj = traj_holder[0]
    out["trajectory_bytes_per_seq"] = trajectory_bytes(traj) // cfg.batch_size
    if train_step is not None:
        _time_train_step(model, cfg, traj, train_step, phase, out)
    if (cfg.caches, cfg.decodes) != (("none",), ("fixed",)):  # that one setting is the sampler and rollout above
        out["settings"] = _time_settings(model, cfg, ids, attn, phase)
    out["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        out["cuda_peak_mb"] = max(out[k] for k in out if k.endswith("_peak_mb"))
    return out


def _time_train_step(model: ModelAdapter, cfg: BenchConfig, traj: Trajectory, train_step: "TrainStepFns",
                     phase: Callable[[str], None], out: dict[str, Any]) -> None:
    device = model.device
    steps = traj.greedy_steps[:, 0].clamp(min=0)  # one selected step per row (k = 0)
    states = traj.state_before(steps, model.mask_id)
    phase("training micro-step: batched, per sample and its floor, round-robin")
    secs, peaks = timed_rounds({
        "train_batched": lambda: train_step.batched(model, traj, steps),
        "train_per_sample": lambda: train_step.per_sample(model, traj, steps),
        "train_floor": lambda: train_step.floor(model, states, traj.attention_mask),
    }, device, cfg.repeats, cfg.warmup, bool(out["malloc_trim"]))
    for name in secs:
        out[f"{name}_s"], out[f"{name}_peak_mb"] = secs[name], peaks[name]
    out["train_floor_ratio"] = out["train_batched_s"] / out["train_floor_s"]
    out["train_batched_speedup"] = out["train_per_sample_s"] / out["train_batched_s"]
    model.model.zero_grad(set_to_none=True)


def _time_settings(model: ModelAdapter, cfg: BenchConfig, ids: Tensor, attn: Tensor,
                   phase: Callable[[str], None]) -> list[dict[str, Any]]:
    """Eval (temperature 0) and rollout (0.9) generated tokens per second under each --cache x --decode."""
    device = model.device
    gen = torch.Generator(device=device)
    rows = []
    for cache in cfg.caches:
        for decode in cfg.decodes:
            if cache != "none" and not model.supports_cache:
                log.warning("--cache %s: the '%s' model has no key-value cache; skipped", cache, model.family)
                continue
            row: dict[str, Any] = {"cache": cache, "decode": decode}
            for name, temperature in (("eval", 0.0), ("rollout", 0.9)):
                phase(f"{name} sampler, --cache {cache} --decode {decode}")
                scfg = SamplerConfig(gen_len=cfg.gen_len, steps=cfg.total_steps, block_len=cfg.block_len,
                                     temperature=temperature, decode=decode, threshold=cfg.threshold, cache=cache)
                nfe: list[int] = []

                keep = TopEntropySteps(cfg.k_steps) if temperature > 0 else ()

                def run() -> None:
                    nfe[:] = [sample(model, ids, attn, scfg, generator=gen.manual_seed(cfg.seed), greedy_at=keep).nfe]

                if cfg.malloc_trim:
                    trim_heap()
                with PhasePeak(device) as mem:
                    secs = timed(run, device, cfg.repeats, cfg.warmup)
                row.update({f"{name}_s": secs, f"{name}_tokens_per_s": cfg.batch_size * cfg.gen_len / secs,
                            f"{name}_nfe": nfe[0], f"{name}_peak_mb": mem.mb})
            rows.append(row)
    return rows


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
