"""``TrainConfig``: every option of ``dllmrl train`` that is not a sampler or model option.

Defaults are the paper's (its training hyperparameters and the reference scripts' values).
Fields left as None take the method's default (``Method.defaults``: ε = 0.5 for diffu-GRPO,
λ = 1 for EGSPO-SA, μ = 12 for diffu-GRPO) when the trainer resolves the config; the sampler
settings (--gen-len, --steps, --block-len, --temperature) and --prompt-style fall back to the
model directory's dllmrl.json, then to the paper's training values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from dllmrl.config import check_finite
from dllmrl.errors import ConfigError

KL_FORMS = ("k3", "exact")
AGGREGATIONS = ("sum", "mean")
STEP_REWARDS = ("all", "correct")
DEFAULT_BETA = 0.04  # the KL coefficient of EGSPO, d1 and d2 when neither the user nor the method sets one


@dataclass(frozen=True)
class TrainConfig:
    task: str = "sudoku"
    """Registered task pack to train on (its 'train' split)."""
    method: str = "egspo-sa"
    """egspo, egspo-sa, diffu-grpo, or the baselines wd1, spg and d2-stepmerge (see `dllmrl ls methods`)."""
    select: str = "entropy"
    """Which K steps of each rollout to train on (EGSPO and EGSPO-SA): entropy (EGSPO), random or uniform (ablations),
    or entropy-mass (adaptive K per sequence, see --entropy-mass)."""
    eos_limit: bool = False
    """Select only among steps up to the last step that revealed a non-EOS token (reference: off)."""
    k_steps: int = 8
    """K: selected denoising steps per sequence, one micro-step each (with --select entropy-mass, the most a sequence
    may keep)."""
    lam: float | None = None
    """λ, the weight of the stepwise advantage r − r̂ (EGSPO-SA; default 1, the model card's value for Sudoku and Countdown)."""
    lambda_halve_every: int = 0
    """Halve λ every N optimizer steps (model card: 500 for math and code); 0 keeps λ constant."""
    normalise: bool = True
    """Divide the EGSPO-SA return by (1 + λ), so the advantage keeps the scale of the final reward."""
    step_reward: str = "all"
    """Reward of the intermediate one-shot completions: 'all' (the weighted training reward) or 'correct' (verify only)."""
    beta: float | None = None
    """KL coefficient against the base model (adapter disabled); 0 skips the reference forward (default 0.04; 0 and
    fixed for wd1 and SPG, whose published trainers have no KL term)."""
    kl: str = "k3"
    """KL form: k3 (the estimate on the step's log-probability) or exact (summed over the vocabulary at the revealed positions)."""
    epsilon: float | None = None
    """Lower clip edge ε of the ratio (EGSPO 0.2, diffu-GRPO 0.5)."""
    epsilon_high: float | None = None
    """Upper clip edge ε_high (0.5)."""
    aggregation: str = "sum"
    """How a step's token log-probabilities combine: sum (the reference; the loss is divided by gen_len / steps) or mean."""
    mu: int | None = None
    """μ: passes over each rollout (EGSPO 1; diffu-GRPO 12 inner iterations, d1 uses 8 for Countdown and Sudoku;
    wd1 12, 8 for Sudoku; SPG 4; d2-StepMerge 12, 8 for Countdown and Sudoku, each pass N micro-steps)."""
    p_mask_prompt: float = 0.15
    """diffu-GRPO, wd1, d2-StepMerge and SPG: probability of masking each prompt token in an inner iteration (SPG also
    masks its clean completion blocks with it; SPG's shipped training config uses 0.15 too)."""
    entropy_mass: float = 0.7
    """--select entropy-mass: keep, per sequence, the fewest highest-entropy steps whose entropies add up to this
    fraction of the trajectory's total, at most --k-steps of them (our own adaptive rule, not the EGSPO authors')."""
    psi: float = 1.0
    """wd1: temperature of the weights softmax_group(ψA) and softmax_group(−ψA) (wd1's code: 1)."""
    mc_samples: int = 2
    """SPG: block-wise masks per sequence and inner iteration for the ELBO / EUBO Monte Carlo estimate (SPG: 2)."""
    eubo_beta: float = 1.5
    """SPG: exponent β of the evidence upper bound (SPG: 1.5 for GSM8K and MATH, 1.0 for Sudoku, 2.0 for Countdown
    with the pure EUBO)."""
    mix_weight: float = 0.5
    """SPG: samples with A <= 0 use ω·EUBO + (1 − ω)·ELBO; 0.5 is 'SPG w/ Mixture', 1 the pure EUBO, 0 the ELBO."""
    merge_groups: int = 8
    """d2-StepMerge: N, groups of consecutive denoising steps scored with one forward each (d2: 8 for GSM8K,
    16 for Countdown and MATH; at most --steps)."""
    num_generations: int = 8
    """G: completions per prompt (a group; it stays on one process)."""
    batch_size: int = 8
    """Sequences per process per rollout (a multiple of --num-generations). Effective batch = batch × grad-accum × processes."""
    grad_accum: int = 2
    """Micro-steps per optimizer step (the reference: 2; 8 per device x 2 x 6 GPUs = the paper's 96)."""
    lr: float = 3e-5
    """AdamW learning rate, constant after the warm-up (the reference script's 3e-5)."""
    warmup_steps: int = 10
    """Optimizer steps of linear learning-rate warm-up."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW β1."""
    adam_beta2: float = 0.99
    """AdamW β2."""
    max_grad_norm: float = 0.2
    """Gradient clipping norm (0 disables)."""
    max_steps: int = 1000
    """Optimizer steps to train for (a rollout feeds k_steps × μ / grad_accum of them)."""
    lora_r: int = 128
    """LoRA rank."""
    lora_alpha: int = 64
    """LoRA alpha (scale alpha / r)."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    load_in_4bit: bool = False
    """QLoRA: load the base model in 4 bits (needs CUDA and bitsandbytes)."""
    prompt_style: str | None = None
    """Prompt format of the task (default: the model's dllmrl.json, else 'train')."""
    chat: bool = True
    """Apply the model's chat template to the prompt."""
    output: str | None = None
    """Run directory (config.json, metrics.jsonl, checkpoints/, adapter/); default runs/<task>-<method>."""
    save_every: int = 100
    """Save a checkpoint every N optimizer steps (and always at the end)."""
    keep_checkpoints: int = 0
    """Keep only the newest N checkpoints (0 keeps all)."""
    eval_every: int = 0
    """Every N optimizer steps, a quick greedy accuracy on the held-out split (0: never)."""
    eval_limit: int = 64
    """Examples in that quick evaluation."""
    eval_split: str | None = None
    """Held-out split for it (default: 'validation' when the task has one, else 'test')."""
    log_every: int = 10
    """Print a metrics table every N optimizer steps (metrics.jsonl gets every step)."""
    seed: int = 0
    """Seed for LoRA initialisation, data order, sampling and step draws."""
    resume: bool = False
    """Continue from the newest checkpoint in --output."""
    reward_workers: int = 4
    """Threads that score completions (code packs run their sandbox in them)."""
    reward_weights: tuple[tuple[str, float], ...] = ()
    """Override the pack's reward weights, NAME=WEIGHT, repeatable (e.g. correct=1 to reward solved Sudoku
    puzzles, whose givens the reference's blank-cell reward does not check)."""
    report_to: str = ""
    """Experiment trackers besides metrics.jsonl (always written), comma-separated: tensorboard, wandb, mlflow,
    comet_ml, aim, clearml, dvclive, swanlab, trackio, or all (through accelerate; TensorBoard writes to
    OUTPUT/trackers). Empty: none."""

    def __post_init__(self) -> None:
        check_finite(self, {"lam": "--lambda"})

        def pos(name: str, value: Any) -> None:
            if value is not None and value <= 0:
                raise ConfigError(f"--{name} must be positive, got {value}")

        for name in ("k_steps", "num_generations", "batch_size", "grad_accum", "max_steps", "lora_r", "lora_alpha",
                     "eval_limit", "log_every", "mu", "mc_samples", "merge_groups"):
            pos(name.replace("_", "-"), getattr(self, name))
        if self.save_every < 0 or self.eval_every < 0 or self.keep_checkpoints < 0 or self.lambda_halve_every < 0:
            raise ConfigError("--save-every, --eval-every, --keep-checkpoints and --lambda-halve-every must be >= 0")
        if self.num_generations < 2:
            raise ConfigError("--num-generations must be at least 2: the advantage compares completions within a group")
        if self.batch_size % self.num_generations:
            raise ConfigError(
                f"--batch-size {self.batch_size} is not a multiple of --num-generations {self.num_generations}; "
                f"each prompt's group stays on one process, so use --batch-size "
                f"{max(1, self.batch_size // self.num_generations) * self.num_generations}"
            )
        if self.lam is not None and self.lam < 0:
            raise ConfigError(f"--lambda must be >= 0, got {self.lam}")
        if self.beta is not None and self.beta < 0:
            raise ConfigError(f"--beta must be >= 0, got {self.beta}")
        if not 0 < self.entropy_mass <= 1:
            raise ConfigError(f"--entropy-mass must be in (0, 1], got {self.entropy_mass}")
        if self.psi <= 0 or self.eubo_beta <= 0:
            raise ConfigError(f"--psi and --eubo-beta must be positive, got {self.psi} and {self.eubo_beta}")
        if not 0 <= self.mix_weight <= 1:
            raise ConfigError(f"--mix-weight must be in [0, 1], got {self.mix_weight}")
        if self.epsilon is not None and not 0 < self.epsilon < 1:
            raise ConfigError(f"--epsilon must be in (0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            raise ConfigError(f"--epsilon-high must be positive, got {self.epsilon_high}")
        if not 0 <= self.p_mask_prompt < 1:
            raise ConfigError(f"--p-mask-prompt must be in [0, 1), got {self.p_mask_prompt}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("--lr must be positive; --warmup-steps, --weight-decay and --max-grad-norm must be >= 0")
        for name, value, choices in (("kl", self.kl, KL_FORMS), ("aggregation", self.aggregation, AGGREGATIONS),
                                     ("step-reward", self.step_reward, STEP_REWARDS)):
            if value not in choices:
                raise ConfigError(f"--{name} must be one of {', '.join(choices)}, got '{value}'")
        if self.reward_workers < 1:
            raise ConfigError(f"--reward-workers must be >= 1, got {self.reward_workers}")
        for name, weight in self.reward_weights:
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ConfigError(f"--reward-weight {name}={weight}: the weight must be a number")

    @property
    def run_dir(self) -> str:
        return self.output or f"runs/{self.task}-{self.method}"


def resolve_method(cfg: TrainConfig) -> TrainConfig:
    """Fill the fields left None from the method's defaults, refuse the ones it fixes, check names."""
    from dllmrl.methods import get_method
    from dllmrl.registry import STEP_SELECTORS

    method = get_method(cfg.method)
    STEP_SELECTORS.get(cfg.select)  # unknown name -> "did you mean"
    if not method.selects_steps and cfg.select != TrainConfig.select:
        # a selector (entropy-mass included) only acts where the method trains on selected steps
        raise ConfigError(f"--method {cfg.method} trains on no selected denoising steps, so --select {cfg.select} "
                          "would be ignored; leave the option out, or use --method egspo / egspo-sa")
    for name, value in method.fixed.items():
        given = getattr(cfg, name)
        if given is not None and given != value:
            flag = "--lambda" if name == "lam" else f"--{name.replace('_', '-')}"
            if value is None:
                raise ConfigError(f"--method {cfg.method} does not use {flag}; leave the option out")
            hint = "; for stepwise advantages use --method egspo-sa" if name == "lam" else ""
            raise ConfigError(f"--method {cfg.method} has {flag} {value}; leave the option out{hint}")
    filled = {k: v for k, v in method.defaults.items() if getattr(cfg, k) is None}
    out = replace(cfg, **filled)
    if out.beta is None:
        out = replace(out, beta=DEFAULT_BETA)
    units = method.units(out)
    if units % out.grad_accum:
        raise ConfigError(
            f"a rollout feeds {units} micro-steps (--k-steps x --mu for EGSPO, --merge-groups x --mu for d2-StepMerge, --mu otherwise), which "
            f"--grad-accum {out.grad_accum} does not divide; pick a --grad-accum that divides {units}"
        )
    return out
