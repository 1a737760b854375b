"""``SftConfig``: the options of ``dllmrl sft`` (masked-diffusion supervised fine-tuning).

Each field maps to a CLI option of the same name (``--max-steps`` for ``max_steps``); the model
itself (``--model``, ``--device``, ``--dtype``) lives in ``ModelConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dllmrl.config import check_finite
from dllmrl.errors import ConfigError

LORA_MODES = ("auto", "on", "off")
LORA_AUTO_PARAMS = 300_000_000
"""``--lora auto`` uses LoRA at or above this many parameters (LLaDA-8B, Dream-7B) and full
fine-tuning below it (the tiny models, ModernBERT/BERT-sized stand-ins)."""


@dataclass(frozen=True)
class SftConfig:
    """Masked-diffusion SFT: prompt kept, answer masked with probability t ~ U(min_t, 1), CE on masked answer tokens / t."""

    task: str = "sudoku"
    """Task pack whose examples and gold completions (``task.sft_target``) are the training data."""
    output: Optional[str] = None
    """Run directory: config.json, metrics.jsonl, checkpoints/ and, at the end, model/ (an ordinary HF
    directory for --model) or adapter/ (LoRA, for --adapter). Default: runs/sft-<task>."""
    split: str = "train"
    """Split of the task pack to train on. Never the split you report accuracy on."""
    prompt_style: Optional[str] = None
    """Prompt format of the pack ('compact' for the tiny character-level models). Default: the model's
    dllmrl.json, else 'train'. Evaluate with the same style."""
    gen_len: Optional[int] = None
    """Completion width: the target text followed by EOS tokens up to gen_len, all of it trained on (as
    LLaDA's SFT does, which teaches the model to stop). Default: the model's dllmrl.json, else 256.
    Sample with the same --gen-len. Examples whose target does not fit are dropped (and counted)."""
    chat: bool = True
    """Apply the model's chat template to the prompt (as eval and train do by default)."""
    limit: Optional[int] = None
    """Use only the first N training examples (after the pack's own order)."""
    max_steps: int = 1000
    """Optimizer steps to train for (the run stops there; a resumed run continues up to it)."""
    batch_size: int = 16
    """Sequences per micro-batch (per process)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; the effective batch is batch_size x grad_accum x processes."""
    lr: float = 1e-4
    """Peak learning rate of AdamW (linear warm-up, then constant). Tiny models from scratch like 1e-3;
    LoRA on LLaDA/Dream ~1e-4; full fine-tuning of an 8B model ~1e-5."""
    warmup_steps: int = 50
    """Optimizer steps of linear learning-rate warm-up from 0."""
    weight_decay: float = 0.1
    """AdamW weight decay (LLaDA's SFT recipe uses 0.1)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip per optimizer step; 0 turns clipping off. The 1/t weight makes rare
    nearly-clean samples heavy, which the clip keeps in check."""
    min_t: float = 1e-3
    """Smallest masking probability: t = (1 - min_t) u + min_t with u ~ U(0, 1), so 1/t stays finite."""
    lora: str = "auto"
    """'on' trains a peft LoRA adapter (adapter.lora_targets), 'off' trains every weight, 'auto' picks
    LoRA for models of 300M parameters or more (LLaDA, Dream) and full fine-tuning below (tiny models)."""
    lora_r: int = 128
    """LoRA rank (the paper's setting)."""
    lora_alpha: int = 64
    """LoRA alpha (scale alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    save_every: int = 500
    """Write a resumable checkpoint every N optimizer steps (0: only at the end and on Ctrl-C)."""
    eval_every: int = 0
    """Every N optimizer steps, a quick greedy accuracy (verify) on the held-out split, logged as eval_accuracy
    (0: never). The sampler settings are the model's dllmrl.json ones at this run's gen_len."""
    eval_limit: int = 64
    """Examples in that quick evaluation."""
    eval_split: Optional[str] = None
    """Held-out split for it (default: 'validation' when the task has one, else 'test')."""
    keep_checkpoints: int = 0
    """Keep only the newest N checkpoints (0 keeps all)."""
    log_every: int = 10
    """Append a metrics.jsonl row every N optimizer steps: the means over those steps (the 1/t-weighted
    loss of a single step is noisy)."""
    seed: int = 0
    """Seed for the weights of LoRA, the data order and the masking; a resumed run replays the same draws."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir (same config) instead of starting over."""
    report_to: str = ""
    """Experiment trackers besides metrics.jsonl (always written), comma-separated: tensorboard, wandb, mlflow,
    comet_ml, aim, clearml, dvclive, swanlab, trackio, or all (through accelerate; TensorBoard writes to
    OUTPUT/trackers). Empty: none."""

    def __post_init__(self) -> None:
        check_finite(self)
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "lora_r", "lora_alpha", "eval_limit"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "eval_every", "keep_checkpoints", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if not 0 < self.min_t < 1:
            raise ConfigError(f"--min-t must lie in (0, 1) so that the 1/t weight stays finite, got {self.min_t}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must lie in [0, 1), got {self.lora_dropout}")
        if self.gen_len is not None and self.gen_len <= 0:
            raise ConfigError(f"--gen-len must be positive, got {self.gen_len}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"--limit must be positive, got {self.limit}; leave it out to use the whole split")
        if self.lora not in LORA_MODES:
            raise ConfigError(f"--lora must be one of {', '.join(LORA_MODES)}, got '{self.lora}'")
        if self.warmup_steps >= self.max_steps and self.warmup_steps > 0:
            raise ConfigError(
                f"--warmup-steps {self.warmup_steps} is not below --max-steps {self.max_steps}; the learning rate "
                f"would never reach --lr. Lower --warmup-steps (e.g. {max(self.max_steps // 10, 0)})"
            )


    @property
    def run_dir(self) -> str:
        return self.output or f"runs/sft-{self.task}"


def _flag(name: str) -> str:
    return name.replace("_", "-")
