"""Frozen dataclass configs. Each field is a CLI option of the same name (``gen_len`` -> ``--gen-len``):
its type, default and docstring are the option's type, default and help (``dllmrl.commands.options``).

Validation lives in ``__post_init__`` and raises ``ConfigError`` with the fix.
Override with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from dllmrl.adapter_spec import BASE, NamedAdapter, named_adapters
from dllmrl.errors import ConfigError

REMASKING = ("low_confidence", "random")
DECODING = ("fixed", "threshold")
CACHES = ("none", "prefix", "dual")


def default_steps(gen_len: int) -> int:
    """Denoising steps when none are given: gen_len / 2 (the reference's rule; 128 steps for 256 positions)."""
    return max(1, gen_len // 2)


def flag(name: str) -> str:
    """The option of a config field: ``k_steps`` -> ``--k-steps``."""
    return "--" + name.replace("_", "-")


def model_max_positions(model: Any) -> int | None:
    """The positions a loaded transformers model can hold (its config's max_position_embeddings or
    the family's name for it); None when its config states none."""
    conf = model.config.to_dict()
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions"):
        if isinstance(conf.get(key), int):
            return conf[key]
    return None


def check_finite(cfg: Any, flags: dict[str, str] | None = None) -> None:
    """Refuse NaN and infinity in every float field of a config dataclass (a NaN temperature samples
    nothing, an infinite learning rate saves a non-finite adapter); ``flags`` renames options."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            name = (flags or {}).get(f.name) or flag(f.name)
            raise ConfigError(f"{name} {value} is not a finite number; give a finite value")


@dataclass(frozen=True)
class SamplerConfig:
    """How a completion is denoised (LLaDA semantics)."""

    gen_len: int = 256
    """Number of generated positions, all masked at the start."""
    steps: int | None = None
    """Denoising steps in total, split evenly across blocks; at most --gen-len. Default: gen_len / 2."""
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
    """Confidence threshold for --decode threshold (>= 0; above 1 it never fires: the fixed schedule)."""
    cache: str = "none"
    """Fast-dLLM key/value cache (native LLaDA and Dream; sample and eval only): 'none'; 'prefix'
    (each block starts with a full forward that stores every position's keys/values; the block's
    later steps compute the block and what follows it, reusing the prefix's); 'dual' (the later
    steps compute the block alone, reusing the prefix's and the suffix's). Approximate: the cached
    keys/values are those of the block's first step."""
    cache_refresh: int = 0
    """With --cache: also refresh the cache every this many steps inside a block (0: only at block starts)."""

    def __post_init__(self) -> None:
        check_finite(self)
        if self.steps is None:  # frozen: fill the derived default once, here
            object.__setattr__(self, "steps", default_steps(self.gen_len))
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
        if self.steps > self.gen_len:
            raise ConfigError(f"--steps {self.steps} is more than --gen-len {self.gen_len}: each step reveals at least "
                              f"one position; pick --steps <= {self.gen_len}")
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
        if self.threshold < 0:  # above 1 is allowed: it never triggers, which is the fixed schedule
            raise ConfigError(f"--threshold is a confidence and must be >= 0, got {self.threshold}")

    def check_fits(self, max_positions: int | None, prompt_len: int = 0) -> None:
        """Refuse a --gen-len the model cannot hold (before any sampling allocates for it)."""
        if max_positions is not None and prompt_len + self.gen_len > max_positions:
            raise ConfigError(
                f"--gen-len {self.gen_len} plus the prompt ({prompt_len} tokens) exceeds the model's "
                f"{max_positions} positions (max_position_embeddings); pick --gen-len <= {max(0, max_positions - prompt_len)}"
            )

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
    adapter: str | tuple[str, ...] | None = None
    """peft LoRA adapter: a directory or a hub id; repeat as NAME=DIR[:SUBFOLDER] to load several for --blend."""
    adapter_subfolder: str | tuple[str, ...] | None = None
    """Subfolder of --adapter holding the adapter (e.g. 'gsm8k/egspo-sa'); NAME=SUB for a named adapter."""
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
        named_adapters(self.adapter, self.adapter_subfolder)  # a malformed NAME=DIR fails here, before loading


GUIDANCE_METHODS = ("none", "expectation", "aps", "entrgi", "best-of-n")


@dataclass(frozen=True)
class GuidanceConfig:
    guidance: str = "none"
    """none, expectation (soft embeddings, w=0), aps (straight-through, w=1), entrgi (w = entropy / log V), best-of-n."""
    reward_model: str | None = None
    """Hub id or local directory of a sequence-classification model returning one scalar reward."""
    guidance_steps: int = 1
    """Gradient steps on the logits per denoising step."""
    guidance_lr: float = 1.0
    """Step size eta of the logit update."""
    best_of_n: int | None = None
    """Candidates for best-of-n; default: the reward calls a guided run makes (steps x guidance-steps)."""

    def __post_init__(self) -> None:
        check_finite(self)
        if self.guidance not in GUIDANCE_METHODS:
            raise ConfigError(f"--guidance must be one of {', '.join(GUIDANCE_METHODS)}, got '{self.guidance}'")
        if self.guidance != "none" and not self.reward_model:
            raise ConfigError(f"--guidance {self.guidance} needs --reward-model (a local directory or hub id)")
        if self.guidance_steps < 1:
            raise ConfigError(f"--guidance-steps must be >= 1, got {self.guidance_steps}")
        if self.best_of_n is not None and self.best_of_n < 1:
            raise ConfigError(f"--best-of-n must be >= 1, got {self.best_of_n}")

    def candidates(self, scfg: SamplerConfig) -> int:
        return self.best_of_n if self.best_of_n is not None else scfg.steps * self.guidance_steps


@dataclass(frozen=True)
class RewardModelConfig:
    num_prompts: int = 1024
    """Training-split prompts to sample from."""
    samples_per_prompt: int = 4
    """Completions per prompt (temperature > 0 makes them differ)."""
    temperature: float = 1.0
    """Sampling temperature for the labelled completions."""
    target: str = "correct"
    """Label: 'correct' (the verifier, binary cross-entropy) or 'reward' (the task's weighted reward, MSE)."""
    hidden: int = 64
    """Reward model hidden size."""
    layers: int = 2
    """Reward model layers."""
    epochs: int = 4
    """Passes over the labelled samples."""
    lr: float = 1e-3
    """AdamW learning rate."""
    batch_size: int = 64
    """Sequences per optimizer step (and per sampling batch)."""
    holdout: float = 0.1
    """Fraction of prompts held out to report the reward model's accuracy."""
    seed: int = 0
    """Seed for sampling, the split and the initial weights."""

    def __post_init__(self) -> None:
        check_finite(self)
        if self.target not in ("correct", "reward"):
            raise ConfigError(f"--target must be 'correct' or 'reward', got '{self.target}'")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"--holdout must be in [0, 1), got {self.holdout}")
        for name in ("num_prompts", "samples_per_prompt", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")


@dataclass(frozen=True)
class BenchConfig:
    batch_size: int = 8
    """Sequences per batch."""
    prompt_len: int = 64
    """Prompt tokens per sequence (random ids)."""
    gen_len: int = 256
    """Generated positions."""
    steps: int | None = None
    """Denoising steps (default gen_len / 2)."""
    block_len: int = 32
    """Block length."""
    k_steps: int = 8
    """Selected steps per rollout for the training micro-steps."""
    repeats: int = 3
    """Timed repeats (the median is reported)."""
    warmup: int = 1
    """Untimed runs first."""
    seed: int = 0
    """Seed for prompts and sampling."""
    caches: tuple[str, ...] = ("none",)
    """Key/value cache settings to time the eval sampler and the rollout under (--cache, repeatable)."""
    decodes: tuple[str, ...] = ("fixed",)
    """Decoding rules to time them under (--decode, repeatable)."""
    threshold: float = 0.9
    """Confidence threshold for --decode threshold."""
    malloc_trim: bool = True
    """On Linux with glibc: return freed memory to the system (blocks of 1 MiB and more mmapped, the heap
    trimmed before each measure), so a CPU peak is the memory the measure uses, not glibc's retained heap."""

    def __post_init__(self) -> None:
        check_finite(self)
        for c in self.caches:
            SamplerConfig(cache=c)  # an unknown name fails here, naming the flag
        for d in self.decodes:
            SamplerConfig(decode=d)
        for name in ("batch_size", "prompt_len", "gen_len", "block_len", "k_steps", "repeats"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.k_steps > self.total_steps:
            raise ConfigError(f"--k-steps {self.k_steps} exceeds --steps {self.total_steps}; pick k <= steps")

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else default_steps(self.gen_len)


def config_dict(*configs: Any) -> dict[str, Any]:
    """Flatten configs into one JSON-able dict (for config.json and the summary table)."""
    out: dict[str, Any] = {}
    for c in configs:
        out.update(asdict(c))
    return out


def parse_gen_lens(text: Any) -> tuple[int, ...] | None:
    """'128,256' (the option), 256 or [128, 256] (a file or dllmrl.json value) -> (128, 256)."""
    if text is None:
        return None
    if isinstance(text, int):
        return (text,)
    if isinstance(text, (tuple, list)):
        text = ",".join(str(x) for x in text)
    try:
        out = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--gen-len takes one length or several separated by commas (128,256,512), got '{text}'") from None
    if not out:
        raise ConfigError("--gen-len needs at least one length, e.g. --gen-len 256")
    return out


def parse_reward_weights(items: Any) -> tuple[tuple[str, float], ...] | None:
    """['correct=1', 'format=0.5'] (the option), [['correct', 1.0]] or {'correct': 1} (a file) -> pairs."""
    if items is None:
        return None
    if isinstance(items, dict):
        items = list(items.items())
    out = []
    for item in items:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            name, value = str(item[0]), item[1]
        else:
            name, _, value = str(item).partition("=")
        try:
            weight = float(value)
        except (TypeError, ValueError):
            weight = None
        if weight is None or not name.strip():
            raise ConfigError(f"--reward-weight takes NAME=WEIGHT (e.g. correct=1), got '{item}'")
        out.append((name.strip(), weight))
    return tuple(out)


# Sections of a run's saved config.json (``{"command": "train", "train": {...}, "sampler": {...}}``).
RECORD_SECTIONS = ("train", "sft", "sampler", "model", "eval", "guidance", "bench", "reward_model", "sample")


def load_config_file(path: str, command: str, known: set[str], aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """Option values from a JSON or YAML file: flat (``{"lr": 1e-4}``) or a run's config.json, whose
    sections are merged and whose other entries (``processes``, ...) are skipped."""
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"--config {path} does not exist; pass a JSON or YAML file of option values")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError(f"--config {path} is not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: "
                          f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of option names to values")
    record = "command" in data
    if record and data["command"] != command:
        raise ConfigError(f"--config {path} is the record of a 'dllmrl {data['command']}' run, not of "
                          f"'dllmrl {command}'; pass a {data['command']} run's config to that command")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in RECORD_SECTIONS:
            out.update({k.replace("-", "_"): v for k, v in value.items()})
        else:
            out[key.replace("-", "_")] = value
    out = {(aliases or {}).get(k, k): v for k, v in out.items()}  # a flag's spelling: "lambda" for lam
    unknown = sorted(k for k in out if k not in known)
    if unknown and not record:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"--config {path}: '{unknown[0]}' is not an option of dllmrl {command}{hint}")
    return {k: v for k, v in out.items() if k in known}


# ------------------------------------------------------------------ sampling-time adapter blending
BLEND_MODES = ("sum", "random-step")
_TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*([^,=]+?)\s*$")


def parse_blend(text: str) -> tuple[tuple[str, float], ...]:
    """'sudoku=0.5,countdown=0.5' -> (('sudoku', 0.5), ('countdown', 0.5)); one ConfigError line on bad input."""
    terms: dict[str, float] = {}
    for part in text.split(","):
        m = _TERM.match(part)
        if not m:
            raise ConfigError(f"--blend '{text}': '{part.strip()}' is not NAME=WEIGHT; write e.g. "
                              "--blend sudoku=0.5,countdown=0.5 (NAME an --adapter name or 'base')")
        name, raw = m.groups()
        try:
            w = float(raw)
        except ValueError:
            raise ConfigError(f"--blend '{text}': the weight of '{name}' is '{raw}', not a number") from None
        if not math.isfinite(w):
            raise ConfigError(f"--blend '{text}': the weight of '{name}' must be finite")
        if name in terms:
            raise ConfigError(f"--blend '{text}': '{name}' is given twice; give each name once")
        terms[name] = w
    return tuple(terms.items())


@dataclass(frozen=True)
class BlendConfig:
    """How the named --adapter's are blended at every denoising step."""

    blend: str | None = None
    """Per-step logit blend of the named --adapter's, 'sudoku=0.5,countdown=0.5': logits = sum_i w_i * logits_i at every denoising step; 'base' names the model with the adapters off; weights may be negative or above 1."""
    blend_base_scale: float | None = None
    """DB-KLA with one --adapter: logits = (1 - LAMBDA) * base + LAMBDA * adapter at every step; 0 is the base, 1 the adapter, above 1 extrapolates."""
    blend_mode: str = "sum"
    """'sum' (the weighted sum of logits) or 'random-step' (each step uses one term, drawn with probability w_i from the sampler's seeded generator; weights >= 0 summing to 1)."""
    blend_batched: bool = True
    """Run the blended terms' forwards as one batched call (peft's mixed-adapter batch); --no-blend-batched runs them one after another (less memory, same logits)."""
    blend_kl: bool = False
    """Also measure the blend's mean KL to the base: KL(softmax(blend) || softmax(base)) at every position the sampler decodes from, averaged over positions and steps (one more forward per step when the base is not a term); eval writes it to OUT/kl_to_base.json."""

    def __post_init__(self) -> None:
        if self.blend_mode not in BLEND_MODES:
            raise ConfigError(f"--blend-mode must be one of {', '.join(BLEND_MODES)}, got '{self.blend_mode}'")
        if self.blend is not None and self.blend_base_scale is not None:
            raise ConfigError("--blend and --blend-base-scale are two ways to give the weights; pass one of them")
        if self.blend_base_scale is not None and not math.isfinite(self.blend_base_scale):
            raise ConfigError("--blend-base-scale must be a finite number")
        if self.blend is not None:
            if not isinstance(self.blend, str):
                raise ConfigError(f"--blend takes one string NAME=W,NAME=W (e.g. 'sudoku=0.5,countdown=0.5'), "
                                  f"got {self.blend!r}")
            parse_blend(self.blend)
        if self.blend_kl and not self.active:
            raise ConfigError("--blend-kl measures a blend against the base: pass --blend or --blend-base-scale "
                              "(--blend-base-scale 1 measures one adapter on its own)")
        if self.blend_mode == "random-step":
            if not self.active:
                raise ConfigError("--blend-mode random-step needs --blend NAME=P,... (probabilities summing to 1)")
            w = [v for _, v in self.raw_terms()]
            if min(w) < 0 or abs(sum(w) - 1) > 1e-6:
                raise ConfigError(f"--blend-mode random-step draws term i with probability w_i: the weights "
                                  f"must be >= 0 and sum to 1, got {', '.join(map(str, w))} (sum {sum(w):g})")

    @property
    def active(self) -> bool:
        return self.blend is not None or self.blend_base_scale is not None

    def raw_terms(self, adapter: str = "adapter") -> tuple[tuple[str, float], ...]:
        if self.blend_base_scale is not None:
            lam = self.blend_base_scale
            return ((BASE, 1.0 - lam), (adapter, lam))
        return parse_blend(self.blend) if self.blend is not None else ()

    def terms(self, adapters: Sequence[NamedAdapter]) -> tuple[tuple[str, float], ...]:
        """(name, weight) per term, checked against the loaded adapters (BASE for the model without them)."""
        names = [a.name for a in adapters]
        if not names:
            raise ConfigError("--blend / --blend-base-scale need at least one --adapter (e.g. --adapter sudoku=DIR)")
        if self.blend_base_scale is not None:
            if len(names) != 1:
                raise ConfigError(f"--blend-base-scale blends the base with ONE adapter, got {len(names)} "
                                  f"({', '.join(names)}); use --blend {names[0]}=W,{names[1]}=W,... instead")
            return self.raw_terms(names[0])
        terms = self.raw_terms()
        unknown = [n for n, _ in terms if n != BASE and n not in names]
        if unknown:
            raise ConfigError(f"--blend names {', '.join(unknown)}, which no --adapter NAME=DIR gives; "
                              f"the adapters are {', '.join(names)} (and 'base')")
        return terms

    def record(self, adapters: Sequence[NamedAdapter], seed: int) -> dict[str, Any]:
        """What an eval record keeps of the blend (part of its resume key)."""
        out: dict[str, Any] = {"mode": self.blend_mode, "weights": dict(self.terms(adapters)),
                               "base_scale": self.blend_base_scale,
                               "adapters": {a.name: a.describe() for a in adapters}}
        if self.blend_mode == "random-step":
            out["seed"] = seed  # the draws come from the sampler's generator
        return out
