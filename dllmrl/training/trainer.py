"""The RL trainer (EGSPO, EGSPO-SA, diffu-GRPO) on accelerate: rollout, reward, advantage, update.

    result = train(TrainConfig(task="sudoku", method="egspo-sa", max_steps=100), scfg, ModelConfig(model=...))

Runs unchanged on a CPU, one GPU, or under ``accelerate launch`` / ``torchrun`` (DeepSpeed ZeRO-2
through accelerate's own config). The loop follows DESIGN.md "EGSPO and EGSPO-SA":

1. each process draws batch_size / G prompts and samples G completions of each (a group never
   leaves its process), keeping the one-shot greedy completions its step selector needs;
2-4. rewards, step selection and advantages come from the method (``dllmrl.methods``);
5-7. the rollout feeds ``units`` micro-steps (K x μ for EGSPO, μ for diffu-GRPO), one batched
   forward each (plus a reference forward when β > 0); the optimizer steps every grad_accum
   micro-steps. ``--max-steps`` counts optimizer steps.

Library code only logs; ``on_step`` feeds the CLI's progress bar and tables (rank 0 only).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch

from dllmrl.training.accel import build_accelerator, rank_generator, reduce_mean
from dllmrl.training.checkpoint import capture_rng, latest_checkpoint, load_checkpoint, save_checkpoint, save_final_adapter
from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.errors import ConfigError, DataError, DllmrlError
from dllmrl.training.lora import LoraSettings, add_lora, load_model_4bit
from dllmrl.methods import get_method
from dllmrl.methods.advantages import lambda_at
from dllmrl.methods.losses import LossConfig
from dllmrl.training.metrics import MetricsWriter
from dllmrl.models import load_model
from dllmrl.training.rollout import PromptFeed, Scorer, encode_prompts, quick_eval, response_prefix
from dllmrl.sampling.sampler import sample
from dllmrl.training.train_config import TrainConfig, resolve_method

log = logging.getLogger(__name__)

# The paper's training sampler (DESIGN.md step 1); a model's dllmrl.json overrides, the command line wins.
SAMPLER_FALLBACK = {"gen_len": 256, "steps": 128, "block_len": 32, "temperature": 0.9}
# Options that may change between a run and its resumption; any other difference is refused.
RESUMABLE = {"resume", "max_steps", "save_every", "keep_checkpoints", "eval_every", "eval_limit", "log_every",
             "device", "reward_workers"}


class TrainingInterrupted(DllmrlError):
    """Ctrl-C: a checkpoint was saved; the message says how to continue."""


@dataclass(frozen=True)
class StepReport:
    step: int
    max_steps: int
    metrics: dict[str, Any]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    adapter_dir: Path | None
    last_metrics: dict[str, Any] = field(default_factory=dict)


def training_sampler_config(model: str, **given: Any) -> SamplerConfig:
    """SamplerConfig from options (None = unset): given, else the model's dllmrl.json, else the paper's.

    The temperature comes from dllmrl.json's ``train_temperature``, not its ``temperature``: that one
    is the evaluation setting (often 0), and greedy rollouts make every completion of a group the same.
    """
    from dllmrl.model_defaults import read_model_defaults, resolve

    keys = {k: v for k, v in given.items() if k in SAMPLER_FALLBACK}
    rest = {k: v for k, v in given.items() if k not in SAMPLER_FALLBACK and v is not None}
    fallback = dict(SAMPLER_FALLBACK, temperature=read_model_defaults(model).get("train_temperature", 0.9))
    keys.setdefault("temperature", None)
    if keys["temperature"] is None:
        keys["temperature"] = fallback["temperature"]
    scfg = SamplerConfig(**resolve(model, keys, fallback), **rest)
    if scfg.temperature == 0 and scfg.remasking == "low_confidence":
        raise ConfigError("--temperature 0 with low-confidence remasking makes the G completions of a prompt "
                          "identical, so every advantage is 0; train with --temperature > 0 (the paper: 0.9)")
    return scfg


def resolve_train_config(cfg: TrainConfig, model: str) -> TrainConfig:
    """Method defaults, and the prompt style from the model's dllmrl.json (else 'train')."""
    from dllmrl.model_defaults import resolve

    cfg = resolve_method(cfg)
    return replace(cfg, **resolve(model, {"prompt_style": cfg.prompt_style}, {"prompt_style": "train"}))


@dataclass
class _Cursor:
    """Where the loop is; what a checkpoint must restore besides weights and optimizer."""

    step: int = 0
    data_pos: int = 0
    rollouts: int = 0
    micro: int = 0
    buffer: Any = None
    rollout_metrics: dict[str, Any] = field(default_factory=dict)


class Trainer:
    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig, mcfg: ModelConfig, *, task: Any = None,
                 on_step: Callable[[StepReport], None] | None = None):
        from dllmrl.tasks.base import get_task

        self.cfg = cfg = resolve_train_config(cfg, mcfg.model)
        self.scfg, self.mcfg, self.on_step = scfg, mcfg, on_step
        self.method = get_method(cfg.method)
        self.objective = self.method.objective
        self.units = self.objective.units(cfg)
        self.task = task if task is not None else get_task(cfg.task)
        self.run_dir = Path(cfg.run_dir)
        self.resume_from = self._check_run_dir()
        # Data first: a wrong split or style fails before the model loads.
        self.examples = self.task.load("train", prompt_style=cfg.prompt_style)
        if len(self.examples) == 0:
            raise DataError(f"task '{self.task.name}' has an empty train split")
        self.prefill = response_prefix(self.task, cfg.prompt_style)

        # Seeds python / numpy / torch identically on every rank (LoRA's initial weights must agree).
        self.acc = acc = build_accelerator(mcfg.device, mcfg.dtype, grad_accum=cfg.grad_accum, seed=cfg.seed)
        base_cfg = replace(mcfg, device=str(acc.device), adapter=None, adapter_subfolder=None)
        adapter = load_model_4bit(base_cfg) if cfg.load_in_4bit else load_model(base_cfg)
        add_lora(adapter, LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
                 init_adapter=mcfg.adapter, init_subfolder=mcfg.adapter_subfolder)
        adapter._takes_position_ids()  # decide before DDP hides the forward's signature
        self.params = [p for p in adapter.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay)
        warm = cfg.warmup_steps
        # Not prepared: accelerate would step a prepared scheduler once per process per step.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        _configure_deepspeed(acc, cfg)
        self.model, self.optimizer = acc.prepare(adapter.model, self.optimizer)
        self.rollout_adapter = adapter  # the unwrapped peft model: sampling and the reference policy
        self.policy = replace(adapter, model=self.model)  # forwards through DDP so gradients synchronise
        self.generator = rank_generator(acc, cfg.seed)
        self.feed = PromptFeed(len(self.examples), cfg.seed)
        self.scorer = Scorer(self.task, cfg.reward_workers, dict(cfg.reward_weights))
        self.loss_cfg = LossConfig(epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta, kl=cfg.kl,
                                   aggregation=cfg.aggregation, tokens_per_step=scfg.gen_len / scfg.steps)
        self.writer = MetricsWriter(self.run_dir, enabled=acc.is_main_process)
        self.cursor = _Cursor()

    # ------------------------------------------------------------------ run directory
    def config_record(self) -> dict[str, Any]:
        n = self.acc.num_processes
        return {"command": "train", "train": asdict(self.cfg), "sampler": asdict(self.scfg), "model": asdict(self.mcfg),
                "method_summary": self.method.summary, "processes": n,
                "effective_batch": self.cfg.batch_size * self.cfg.grad_accum * n, "micro_steps_per_rollout": self.units}

    def _check_run_dir(self) -> Path | None:
        newest = latest_checkpoint(self.run_dir)
        if not self.cfg.resume:
            if newest is not None:
                raise ConfigError(f"--output {self.run_dir} already holds a run ({newest.name}); pass --resume to "
                                  "continue it or choose another --output")
            return None
        if newest is None:
            raise ConfigError(f"--resume: --output {self.run_dir} holds no checkpoint; leave out --resume to start there")
        saved = json.loads((self.run_dir / "config.json").read_text())
        before = {**saved["train"], **saved["sampler"], **saved["model"]}
        now = json.loads(json.dumps({**asdict(self.cfg), **asdict(self.scfg), **asdict(self.mcfg)}))  # as saved
        # A field newer than the saved run counts as unchanged while it keeps its default.
        defaults = json.loads(json.dumps({f.name: f.default for f in fields(self.cfg) if f.default is not MISSING}))
        diff = [k for k in now if k not in RESUMABLE and before.get(k, defaults.get(k)) != now[k]]
        if diff:
            changes = ", ".join(f"--{k.replace('_', '-')} {before.get(k)} -> {now[k]}" for k in diff)
            raise ConfigError(f"--resume: the run in {self.run_dir} was started with other settings ({changes}); "
                              "use the original options or a new --output")
        return newest

    # ------------------------------------------------------------------ rollout
    def rollout(self) -> None:
        """Steps 1-4: prompts, G completions each, rewards, step selection, advantages -> cursor.buffer."""
        cfg, acc, cur, ad = self.cfg, self.acc, self.cursor, self.rollout_adapter
        G = cfg.num_generations
        n_prompts = cfg.batch_size // G
        start = cur.data_pos + acc.process_index * n_prompts
        exs = [self.examples[i] for i in self.feed.indices(start, n_prompts)]
        cur.data_pos += n_prompts * acc.num_processes
        ids, attn = encode_prompts(ad, exs, prefill=self.prefill, chat=cfg.chat, device=acc.device)
        ids, attn = ids.repeat_interleave(G, 0), attn.repeat_interleave(G, 0)  # (B, P): group rows adjacent
        rows = [ex for ex in exs for _ in range(G)]
        group_ids = torch.arange(n_prompts, device=acc.device).repeat_interleave(G)  # (B,)
        lam = lambda_at(cur.step, cfg.lam, cfg.lambda_halve_every)

        # 1. Sample at training settings; the selector's keeper keeps the greedy completions it needs.
        plan = self.objective.plan(cfg, ids.shape[0], self.scfg.steps, self.generator, acc.device)
        ad.model.eval()
        t0 = time.perf_counter()
        traj = sample(ad, ids, attn, self.scfg, generator=self.generator,
                      greedy_at=plan.keeper if plan is not None else ())
        t_roll = time.perf_counter() - t0

        # 2. Final rewards.
        self.scorer.new_rollout()
        responses = [self.prefill + ad.decode_completion(r) for r in traj.completion_ids]
        scores = self.scorer.score(rows, responses)
        rewards = torch.tensor([s.total for s in scores], device=acc.device)  # (B,)

        def score_greedy(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
            """(B, K, G) one-shot completions -> (B, K) their rewards (NaN where no step was selected)."""
            out = torch.full(valid.shape, float("nan"), device=acc.device)
            bk = valid.nonzero().tolist()
            texts = [self.prefill + ad.decode_completion(tokens[b, k]) for b, k in bk]
            got = self.scorer.score([rows[b] for b, _ in bk], texts)
            for (b, k), s in zip(bk, got):
                out[b, k] = float(s.correct) if cfg.step_reward == "correct" else s.total
            return out

        # 3-4. Step selection (or prompt masks), advantages, old log-probabilities.
        t1, scored_before = time.perf_counter(), self.scorer.seconds
        with torch.no_grad():
            cur.buffer = self.objective.prepare(
                self.method, cfg, traj, plan, rewards, group_ids, lam, score_greedy=score_greedy, policy=ad,
                eos_ids=ad.eos_ids, generator=self.generator, cfg_scale=self.scfg.cfg_scale,
                block_len=self.scfg.block_len)
        t_prep = time.perf_counter() - t1 - (self.scorer.seconds - scored_before)  # greedy scoring counts as reward
        ad.model.train()
        cur.micro = 0
        cur.rollouts += 1

        all_rewards = acc.gather(rewards) if acc.num_processes > 1 else rewards
        m: dict[str, Any] = {
            "reward": float(all_rewards.mean()), "reward_std": float(all_rewards.std()) if all_rewards.numel() > 1 else 0.0,
            "accuracy": reduce_mean(acc, sum(s.correct for s in scores) / len(scores)),
            "lambda": lam, "rollout_s": reduce_mean(acc, t_roll), "reward_s": reduce_mean(acc, self.scorer.seconds),
            "prepare_s": reduce_mean(acc, t_prep),
            "nfe": traj.nfe, "rollout": cur.rollouts,
        }
        m["tokens_per_s"] = traj.completion_ids.numel() * acc.num_processes / max(m["rollout_s"], 1e-9)
        for name in scores[0].parts:
            m[f"reward/{name}"] = reduce_mean(acc, sum(s.parts[name] for s in scores) / len(scores))
        for k, v in cur.buffer.metrics.items():
            m[k] = reduce_mean(acc, v)
        cur.rollout_metrics = m

    # ------------------------------------------------------------------ update
    def _reference(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(adapter)`` under the reference policy: the base model, peft's adapter disabled."""
        peft_model = self.acc.unwrap_model(self.model)
        with torch.no_grad(), peft_model.disable_adapter():
            return fn(self.rollout_adapter)

    def optimizer_step(self) -> dict[str, float]:
        """Steps 5-7: grad_accum micro-steps on the buffer, then one optimizer step."""
        cfg, acc, cur = self.cfg, self.acc, self.cursor
        sums: dict[str, float] = {}
        grad_norm = float("nan")
        reference = self._reference if cfg.beta > 0 else None
        for _ in range(cfg.grad_accum):
            with acc.accumulate(self.model):
                with acc.autocast():
                    loss, m = self.objective.loss(cur.buffer, cur.micro, policy=self.policy, reference=reference,
                                                  loss_cfg=self.loss_cfg, cfg_scale=self.scfg.cfg_scale)
                acc.backward(loss)  # accelerate divides by grad_accum
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm)  # None under DeepSpeed (it clips)
                    grad_norm = float(norm) if norm is not None else float("nan")
                self.optimizer.step()  # a no-op until the last micro-step of the optimizer step
                self.optimizer.zero_grad(set_to_none=True)
            cur.micro += 1
            for k, v in {"loss": loss.detach(), **m}.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        cur.step += 1
        out = {k: reduce_mean(self.acc, v) for k, v in sums.items()}
        out.update(lr=lr, grad_norm=grad_norm)
        return out

    # ------------------------------------------------------------------ checkpoints
    def save(self, rng: dict | None = None, boundary: _Cursor | None = None) -> Path:
        cur = boundary or self.cursor
        live = cur.buffer if cur.micro < self.units else None
        return save_checkpoint(
            self.run_dir, cur.step, accelerator=self.acc, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, rng=rng, generators={"sample": self.generator},
            extra={"data_pos": cur.data_pos, "rollouts": cur.rollouts, "micro": cur.micro,
                   "lambda": lambda_at(cur.step, self.cfg.lam, self.cfg.lambda_halve_every)},
            rank_state={"buffer": live, "rollout_metrics": cur.rollout_metrics},
            keep_last=self.cfg.keep_checkpoints or None)

    def restore(self, path: Path) -> None:
        ck = load_checkpoint(path, accelerator=self.acc, model=self.model, optimizer=self.optimizer,
                             scheduler=self.scheduler, generators={"sample": self.generator})
        rs = ck.rank_state or {}
        buffer = rs.get("buffer")
        self.cursor = _Cursor(step=ck.step, data_pos=int(ck.extra["data_pos"]), rollouts=int(ck.extra["rollouts"]),
                              micro=int(ck.extra["micro"]) if buffer is not None else self.units,
                              buffer=buffer, rollout_metrics=rs.get("rollout_metrics", {}))
        self.writer.truncate_after(ck.step)

    def evaluate(self) -> float:
        """Quick held-out greedy accuracy over --eval-limit examples, shared across processes."""
        cfg, acc = self.cfg, self.acc
        splits = getattr(self.task, "splits", lambda: {})()
        split = cfg.eval_split or ("validation" if "validation" in splits else "test")
        exs = self.task.load(split, prompt_style=cfg.prompt_style)
        n = min(cfg.eval_limit, len(exs))
        mine = [exs[i] for i in range(acc.process_index, n, acc.num_processes)]
        correct, seen = quick_eval(self.rollout_adapter, self.task, mine, self.scfg, prefill=self.prefill,
                                   chat=cfg.chat, batch_size=cfg.batch_size, seed=cfg.seed)
        t = torch.tensor([correct, seen], dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            t = acc.reduce(t, reduction="sum")
        return float(t[0] / t[1].clamp(min=1))

    # ------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        cfg, acc = self.cfg, self.acc
        if self.resume_from is not None:
            self.restore(self.resume_from)
        else:
            self.cursor.micro = self.units  # no rollout yet
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.config_record(), indent=2) + "\n")
        if acc.is_main_process:
            log.info("train %s with %s on %s: %d processes, effective batch %d, %d micro-steps per rollout",
                     cfg.task, cfg.method, self.mcfg.model, acc.num_processes,
                     cfg.batch_size * cfg.grad_accum * acc.num_processes, self.units)
        self.model.train()
        boundary, rng = _snapshot(self.cursor), capture_rng({"sample": self.generator})
        last_saved = self.cursor.step if self.resume_from is not None else -1
        row: dict[str, Any] = {}
        try:
            while self.cursor.step < cfg.max_steps:
                t_roll = 0.0
                if self.cursor.micro >= self.units:
                    t0 = time.perf_counter()
                    self.rollout()
                    t_roll = time.perf_counter() - t0
                t0 = time.perf_counter()
                upd = self.optimizer_step()
                row = {**self.cursor.rollout_metrics, **upd, "update_s": time.perf_counter() - t0,
                       "step_s": time.perf_counter() - t0 + t_roll, "peak_rss_mb": peak_rss_mb()}
                if torch.cuda.is_available():
                    row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
                step = self.cursor.step
                boundary, rng = _snapshot(self.cursor), capture_rng({"sample": self.generator})
                if cfg.eval_every and step % cfg.eval_every == 0:
                    row["eval_accuracy"] = self.evaluate()
                self.writer.log(step, row)
                if cfg.save_every and step % cfg.save_every == 0:
                    self.save(rng, boundary)
                    last_saved = step
                if self.on_step is not None and acc.is_main_process:
                    self.on_step(StepReport(step, cfg.max_steps, row))
        except KeyboardInterrupt:
            # The finished optimizer steps are kept; a half-accumulated step is dropped, and the RNG
            # states are those of the last step boundary, so a resumed run replays exactly.
            self.optimizer.zero_grad(set_to_none=True)
            path = self.save(rng, boundary) if boundary.step > 0 else None
            self._close()
            where = f"saved {path} (step {boundary.step}); continue with --resume" if path else "nothing to save yet"
            raise TrainingInterrupted(f"interrupted: {where}") from None
        if last_saved != self.cursor.step:
            self.save(rng, boundary)
        adapter_dir = save_final_adapter(self.run_dir, self.model, acc)
        self._close()
        return TrainResult(self.run_dir, self.cursor.step, adapter_dir or self.run_dir / "adapter", row)

    def _close(self) -> None:
        self.writer.close()
        self.scorer.close()


def _configure_deepspeed(acc, cfg: TrainConfig) -> None:
    """Under accelerate's DeepSpeed plugin (ZeRO-2 for 8B models), fill what it cannot infer without a
    dataloader: micro-batch size, gradient accumulation and clipping come from our options."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    ds["gradient_clipping"] = cfg.max_grad_norm  # --max-grad-norm is the one source (0.2 in the paper)
    for key, value in (("train_micro_batch_size_per_gpu", cfg.batch_size), ("gradient_accumulation_steps", cfg.grad_accum)):
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif key == "gradient_accumulation_steps" and int(ds[key]) != cfg.grad_accum:
            raise ConfigError(f"the DeepSpeed config sets gradient_accumulation_steps {ds[key]} but --grad-accum is "
                              f"{cfg.grad_accum}; set it to 'auto' (or the same value) in the accelerate config")
    acc.gradient_accumulation_steps = cfg.grad_accum


def _snapshot(cur: _Cursor) -> _Cursor:
    return replace(cur, rollout_metrics=dict(cur.rollout_metrics))


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def train(cfg: TrainConfig, scfg: SamplerConfig, mcfg: ModelConfig, *, task: Any = None,
          on_step: Callable[[StepReport], None] | None = None) -> TrainResult:
    """Train ``mcfg.model`` with LoRA on ``cfg.task`` by ``cfg.method``; see the module docstring."""
    return Trainer(cfg, scfg, mcfg, task=task, on_step=on_step).run()


# ---------------------------------------------------------------------- for `dllmrl bench`
def bench_train_step_fns():
    """The training micro-step (forward + backward), batched and per sample, and its floor, for dllmrl bench."""
    from dllmrl.bench import TrainStepFns
    from dllmrl.methods.logp import microstep_logp, microstep_logp_per_sample

    def floor(model, states, attn) -> None:
        model.logits(states, attn).float().mean().backward()

    def batched(model, traj, steps) -> None:
        microstep_logp(model, traj, steps).logp.sum().backward()

    def per_sample(model, traj, steps) -> None:
        microstep_logp_per_sample(model, traj, steps).logp.sum().backward()

    return TrainStepFns(floor=floor, batched=batched, per_sample=per_sample)

