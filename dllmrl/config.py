"""Frozen dataclass configs. Each field maps to a CLI option of the same name.

Validation lives in ``__post_init__`` and raises ``ConfigError`` with the fix.
Override with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dllmrl.errors import ConfigError

REMASKING = ("low_confidence", "random")
DECODING = ("fixed", "threshold")
CACHES = ("none", "prefix", "dual")


@dataclass(frozen=True)
class SamplerConfig:
    """How a completion is denoised (LLaDA semantics)."""

    gen_len: int = 256
    """Number of generated positions, all masked at the start."""
    steps: int = 128
    """Denoising steps in total, split evenly across blocks."""
    block_len: int = 32
    """Semi-autoregressive block length; blocks are denoised left to right."""
    temperature: float = 0.0
    """Gumbel temperature for candidate tokens; 0 is plain argmax."""
    cfg_scale: float = 0.0
    """Classifier-free guidance scale; > 0 adds a forward with the prompt masked."""
    remasking: str = "low_confidence"
    """Which masked positions to reveal: 'low_confidence' (most probable first) or 'random'."""
    decode: str = "fixed"
    """'fixed': the exact step schedule. 'threshold': also reveal every position whose
    confidence reaches --threshold, and end a block early (Fast-dLLM style)."""
    threshold: float = 0.9
    """Confidence threshold for --decode threshold."""
    cache: str = "none"
    """Fast-dLLM key/value cache (native LLaDA and Dream; sample and eval only): 'none'; 'prefix'
    (each block starts with a full forward that stores every position's keys/values; the block's
    later steps compute the block and what follows it, reusing the prefix's); 'dual' (the later
    steps compute the block alone, reusing the prefix's and the suffix's). Approximate: the cached
    keys/values are those of the block's first step."""
    cache_refresh: int = 0
    """With --cache: also refresh the cache every this many steps inside a block (0: only at block starts)."""

    def __post_init__(self) -> None:
        if self.gen_len <= 0:
            raise ConfigError(f"--gen-len must be positive, got {self.gen_len}")
        if self.block_len <= 0:
            raise ConfigError(f"--block-len must be positive, got {self.block_len}")
        if self.gen_len % self.block_len:
            raise ConfigError(
                f"--gen-len {self.gen_len} is not divisible by --block-len {self.block_len}; "
                f"pick a --gen-len that is a multiple of {self.block_len} or a --block-len that divides {self.gen_len}"
            )
        if self.steps <= 0:
            raise ConfigError(f"--steps must be positive, got {self.steps}")
        if self.steps % self.num_blocks:
            raise ConfigError(
                f"--steps {self.steps} is not divisible by the number of blocks "
                f"(--gen-len {self.gen_len} / --block-len {self.block_len} = {self.num_blocks}); "
                f"pick --steps as a multiple of {self.num_blocks}"
            )
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.cfg_scale < 0:
            raise ConfigError(f"--cfg-scale must be >= 0, got {self.cfg_scale}")
        if self.remasking not in REMASKING:
            raise ConfigError(f"--remasking must be one of {', '.join(REMASKING)}, got '{self.remasking}'")
        if self.decode not in DECODING:
            raise ConfigError(f"--decode must be one of {', '.join(DECODING)}, got '{self.decode}'")
        if self.cache not in CACHES:
            raise ConfigError(f"--cache must be one of {', '.join(CACHES)}, got '{self.cache}'")
        if self.cache_refresh < 0:
            raise ConfigError(f"--cache-refresh must be >= 0, got {self.cache_refresh}")

    @property
    def num_blocks(self) -> int:
        return self.gen_len // self.block_len

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load, and where."""

    model: str = "GSAI-ML/LLaDA-8B-Instruct"
    """Hub id or local directory of the diffusion LM."""
    adapter: str | None = None
    """peft LoRA adapter: a directory or a hub id."""
    adapter_subfolder: str | None = None
    """Subfolder of --adapter holding the adapter (e.g. 'gsm8k/egspo-sa')."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', ..."""
    dtype: str = "auto"
    """'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'bfloat16', 'float16'."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code (escape hatch for unknown architectures)."""

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype must be auto, float32, bfloat16 or float16, got '{self.dtype}'")
        if self.adapter_subfolder and not self.adapter:
            raise ConfigError("--adapter-subfolder needs --adapter")


def config_dict(*configs: Any) -> dict[str, Any]:
    """Flatten configs into one JSON-able dict (for config.json and the summary table)."""
    out: dict[str, Any] = {}
    for c in configs:
        out.update(asdict(c))
    return out


