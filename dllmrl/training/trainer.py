"""The RL trainer (EGSPO, EGSPO-SA, diffu-GRPO, wd1, SPG, d2-StepMerge): rollouts and the method's losses on the
shared skeleton.

    result = train(TrainConfig(task="sudoku", method="egspo-sa", max_steps=100), scfg, ModelConfig(model=...))

Runs unchanged on a CPU, one GPU, or under ``accelerate launch`` / ``torchrun`` (DeepSpeed ZeRO-2
through accelerate's own config). Per rollout:

1. each process draws batch_size / G prompts and samples G completions of each (a group never
   leaves its process), keeping the one-shot greedy completions the method's ``Plan`` asks for;
2. the task's rewards score the completions (and, when asked, the greedy completions of the
   selected steps); the ``Rollout`` goes to the method's ``Objective.prepare``;
3. the prepared rollout feeds ``units`` micro-steps (K x μ for EGSPO, N x μ for d2, μ otherwise), one
   ``Objective.loss`` each, under ``dllmrl.training.loop`` (accumulation, clipping, checkpoints,
   metrics, Ctrl-C / SIGTERM). ``--max-steps`` counts optimizer steps.

Every metrics row also carries the compute spent so far (cumulative over resumes): ``forwards`` and
``backwards`` in passes over one sequence, ``forwards_rollout``, ``eval_forwards`` and ``train_seconds``
(``dllmrl.training.compute``), counted at the policy's forward whatever the method runs.

The trainer never looks at the method's name: everything method-specific is in ``dllmrl.methods``.
Library code only logs; ``on_step`` feeds the CLI's progress bar and tables (rank 0 only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from dllmrl.adapter_spec import single_adapter
from dllmrl.config import ModelConfig, SamplerConfig, model_max_positions
from dllmrl.errors import ConfigError, DataError, DllmrlError
from dllmrl.methods import Rollout, get_method
from dllmrl.models import load_model
from dllmrl.sampling.sampler import sample
from dllmrl.training.accel import build_accelerator, rank_generator, reduce_mean, seed_everything
from dllmrl.training.checkpoint import Checkpoint, from_plain, save_final_adapter
from dllmrl.training.compute import ComputeTotals, ForwardCounter
from dllmrl.training.lora import LoraSettings, add_lora, load_model_4bit
from dllmrl.training.loop import (
    Loop, LoopParts, LoopSettings, OptimSettings, Progress, Snapshot, build_optimizer, open_run, write_config,
)
from dllmrl.training.metrics import MetricsWriter, parse_report_to
from dllmrl.training.rollout import PromptFeed, Scorer, encode_prompts, quick_accuracy, response_prefix
from dllmrl.training.train_config import TrainConfig, resolve_method

log = logging.getLogger(__name__)

# The paper's training sampler (gen_len 256, 128 steps, block 32, temperature 0.9); a model's dllmrl.json overrides, the command line wins.
SAMPLER_FALLBACK = {"gen_len": 256, "steps": 128, "block_len": 32, "temperature": 0.9}

StepReport = Progress
"""What ``on_step`` receives after each optimizer step."""


class TrainingInterrupted(DllmrlError):
    """Ctrl-C or SIGTERM: a checkpoint was saved; the message says how to continue."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    adapter_dir: Path | None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None
    """The checkpoint step this run continued from (None: a fresh start)."""


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
    """Where the rollouts are; what a checkpoint must restore besides weights, optimizer and step."""

    data_pos: int = 0
    rollouts: int = 0
    micro: int = 0
    buffer: Any = None
    rollout_metrics: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """The RL ``Work`` of the skeleton: a micro-step is one ``Objective.loss`` on the current rollout."""

    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig, mcfg: ModelConfig, *, task: Any = None,
                 on_step: Callable[[StepReport], None] | None = None):
        from dllmrl.tasks.base import get_task

        self.cfg = cfg = resolve_train_config(cfg, mcfg.model)
        self.scfg, self.mcfg, self.on_step = scfg, mcfg, on_step
        self.method = get_method(cfg.method)
        self.objective = self.method.build(cfg, scfg)
        self.units = self.method.units(cfg)
        self.task = task if task is not None else get_task(cfg.task)
        self.run_dir = Path(cfg.run_dir)
        self.report_to = parse_report_to(cfg.report_to)
        self.acc = acc = build_accelerator(mcfg.device, mcfg.dtype, grad_accum=cfg.grad_accum,
                                           report_to=self.report_to, project_dir=str(self.run_dir))
        self.resume_from = open_run(acc, self.run_dir, resume=cfg.resume, configs=self.configs())
        # Data first: a wrong split or style fails before the model loads.
        self.examples = self.task.load("train", prompt_style=cfg.prompt_style)
        if len(self.examples) == 0:
            raise DataError(f"task '{self.task.name}' has an empty train split")
        self.prefill = response_prefix(self.task, cfg.prompt_style)
        seed_everything(cfg.seed)  # identically on every rank: LoRA's initial weights must agree
        init, init_sub = single_adapter(mcfg.adapter, mcfg.adapter_subfolder, "train")
        base_cfg = replace(mcfg, device=str(acc.device), adapter=None, adapter_subfolder=None)
        adapter = load_model_4bit(base_cfg) if cfg.load_in_4bit else load_model(base_cfg)
        scfg.check_fits(model_max_positions(adapter.model))  # before a rollout allocates for a --gen-len too long
        add_lora(adapter, LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
                 init_adapter=init, init_subfolder=init_sub)
        adapter._takes_position_ids()  # decide before DDP hides the forward's signature
        # Every pass of the policy embeds its ids first (the whole forward, the hidden-states trunk the
        # sampler and micro-steps run, the reference model under disable_adapter): count there.
        self.compute = ForwardCounter(adapter.model.get_input_embeddings())
        self.train_seconds = 0.0
        self._mark = time.perf_counter()
        self.params = [p for p in adapter.model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = build_optimizer(self.params, OptimSettings(
            lr=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
            betas=(cfg.adam_beta1, cfg.adam_beta2)))
        _configure_deepspeed(acc, cfg)
        self.model, self.optimizer = acc.prepare(adapter.model, self.optimizer)
        self.rollout_adapter = adapter  # the unwrapped peft model: sampling and the reference policy
        self.policy = replace(adapter, model=self.model)  # forwards through DDP so gradients synchronise
        self.generator = rank_generator(acc, cfg.seed)
        self.generators = {"sample": self.generator}
        self.feed = PromptFeed(len(self.examples), cfg.seed)
        self.scorer = Scorer(self.task, cfg.reward_workers, dict(cfg.reward_weights))
        self.writer = MetricsWriter(self.run_dir, acc, report_to=self.report_to)
        self.cursor = _Cursor(micro=self.units)  # no rollout yet
        self._rollout_s = 0.0

    # ------------------------------------------------------------------ run directory
    def configs(self) -> dict[str, Any]:
        return {"train": self.cfg, "sampler": self.scfg, "model": self.mcfg}

    def config_record(self) -> dict[str, Any]:
        n = self.acc.num_processes
        return {"command": "train", **{k: asdict(v) for k, v in self.configs().items()},
                "method_summary": self.method.summary, "processes": n,
                "effective_batch": self.cfg.batch_size * self.cfg.grad_accum * n, "micro_steps_per_rollout": self.units}

    # ------------------------------------------------------------------ rollout
    def rollout(self, step: int) -> None:
        """Prompts, G completions each, rewards, the method's preparation -> cursor.buffer."""
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

        # 1. Sample at training settings; the plan's keeper keeps the greedy completions it needs.
        plan = self.objective.plan(step, ids.shape[0], self.generator, acc.device)
        ad.model.eval()
        t0 = time.perf_counter()
        with self.compute.phase("rollout"):
            traj = sample(ad, ids, attn, self.scfg, generator=self.generator,
                          greedy_at=plan.keeper if plan.keeper is not None else ())
        t_roll = time.perf_counter() - t0

        # 2. Final rewards; the selected steps and, when the method asks, their greedy completions' rewards.
        self.scorer.new_rollout()
        scores = self.scorer.score(rows, [self.prefill + ad.decode_completion(r) for r in traj.completion_ids])
        rewards = torch.tensor([s.total for s in scores], device=acc.device)  # (B,)
        steps = plan.select(traj) if plan.select is not None else None  # (B, K)
        greedy = self._score_greedy(rows, traj.greedy_for(steps), steps >= 0) if plan.greedy_rewards else None

        # 3. The method's preparation: advantages, old log-probabilities, masks.
        t1 = time.perf_counter()
        with torch.no_grad():
            cur.buffer = self.objective.prepare(
                Rollout(traj=traj, rewards=rewards, group_ids=group_ids, step=step, eos_ids=ad.eos_ids, steps=steps,
                        greedy_rewards=greedy), ad, self.generator)
        t_prep = time.perf_counter() - t1
        ad.model.train()
        cur.micro = 0
        cur.rollouts += 1
        cur.rollout_metrics = self._rollout_metrics(rewards, scores, traj, t_roll, t_prep)

    def _score_greedy(self, rows: list[Any], tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, K, G) one-shot completions -> (B, K) their rewards (NaN where no step was selected)."""
        out = torch.full(valid.shape, float("nan"), device=self.acc.device)
        bk = valid.nonzero().tolist()
        texts = [self.prefill + self.rollout_adapter.decode_completion(tokens[b, k]) for b, k in bk]
        got = self.scorer.score([rows[b] for b, _ in bk], texts)
        for (b, k), s in zip(bk, got):
            out[b, k] = float(s.correct) if self.cfg.step_reward == "correct" else s.total
        return out

    def _rollout_metrics(self, rewards: torch.Tensor, scores: list[Any], traj: Any, t_roll: float,
                         t_prep: float) -> dict[str, Any]:
        acc = self.acc
        all_rewards = acc.gather(rewards) if acc.num_processes > 1 else rewards
        m: dict[str, Any] = {
            "reward": float(all_rewards.mean()), "reward_std": float(all_rewards.std()) if all_rewards.numel() > 1 else 0.0,
            "accuracy": reduce_mean(acc, sum(s.correct for s in scores) / len(scores)),
            "rollout_s": reduce_mean(acc, t_roll), "reward_s": reduce_mean(acc, self.scorer.seconds),
            "prepare_s": reduce_mean(acc, t_prep), "nfe": traj.nfe, "rollout": self.cursor.rollouts,
        }
        m["tokens_per_s"] = traj.completion_ids.numel() * acc.num_processes / max(m["rollout_s"], 1e-9)
        for name in scores[0].parts:
            m[f"reward/{name}"] = reduce_mean(acc, sum(s.parts[name] for s in scores) / len(scores))
        for k, v in self.cursor.buffer.metrics.items():
            m[k] = reduce_mean(acc, v)
        return m

    # ------------------------------------------------------------------ the skeleton's Work
    def _reference(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(adapter)`` under the reference policy: the base model, peft's adapter disabled."""
        peft_model = self.acc.unwrap_model(self.model)
        with torch.no_grad(), peft_model.disable_adapter():
            return fn(self.rollout_adapter)

    def micro_loss(self, step: int, micro: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cur = self.cursor
        if cur.micro >= self.units:
            t0 = time.perf_counter()
            self.rollout(step)
            self._rollout_s += time.perf_counter() - t0
        with self.acc.autocast():
            loss, metrics = self.objective.loss(cur.buffer, cur.micro, self.policy,
                                                self._reference if self.cfg.beta > 0 else None)
        cur.micro += 1
        return loss, dict(metrics)

    def step_metrics(self, step_s: float) -> dict[str, float]:
        out = {**self.cursor.rollout_metrics, "update_s": step_s - self._rollout_s}
        self._rollout_s = 0.0
        # Cumulative compute, summed over processes (see dllmrl.training.compute for the units).
        n = self.acc.num_processes
        for k, v in self.compute.totals.as_dict().items():
            out[k] = round(reduce_mean(self.acc, float(v)) * n)
        out["train_seconds"] = round(self.train_seconds, 3)
        return out

    def snapshot(self) -> Snapshot:
        # Called once per step boundary: the wall time since the last one is training time (quick
        # evaluations are taken out in ``evaluate``; model loading is before the first mark).
        now = time.perf_counter()
        self.train_seconds += now - self._mark
        self._mark = now
        cur = self.cursor
        live = cur.buffer if cur.micro < self.units else None  # a finished rollout need not be kept
        return Snapshot(extra={"data_pos": cur.data_pos, "rollouts": cur.rollouts, "micro": cur.micro,
                               "train_seconds": self.train_seconds},
                        rank_state={"buffer": live, "rollout_metrics": dict(cur.rollout_metrics),
                                    "compute": self.compute.totals.as_dict()})

    def restore(self, ckpt: Checkpoint) -> None:
        rs = ckpt.rank_state or {}
        saved = rs.get("buffer")
        buffer = from_plain(self.objective.buffer_type, saved, self.acc.device) if saved is not None else None
        self.cursor = _Cursor(data_pos=int(ckpt.extra["data_pos"]), rollouts=int(ckpt.extra["rollouts"]),
                              micro=int(ckpt.extra["micro"]) if buffer is not None else self.units,
                              buffer=buffer, rollout_metrics=dict(rs.get("rollout_metrics", {})))
        # Checkpoints from before compute accounting carry none: count from zero then.
        self.compute.totals = ComputeTotals.from_dict(rs.get("compute", {}))
        self.train_seconds = float(ckpt.extra.get("train_seconds", 0.0))
        self._mark = time.perf_counter()

    def evaluate(self) -> float:
        """Quick held-out greedy accuracy over --eval-limit examples, shared across processes."""
        cfg = self.cfg
        t0 = time.perf_counter()
        with self.compute.excluded():
            out = quick_accuracy(self.acc, self.rollout_adapter, self.task, split=cfg.eval_split,
                                 limit=cfg.eval_limit, prompt_style=cfg.prompt_style, scfg=self.scfg, chat=cfg.chat,
                                 batch_size=cfg.batch_size, seed=cfg.seed)
        self._mark += time.perf_counter() - t0  # not training time
        return out

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        cfg, acc = self.cfg, self.acc
        write_config(acc, self.run_dir, self.config_record())
        self.writer.start({k: v for c in self.configs().values() for k, v in asdict(c).items()})
        if acc.is_main_process:
            log.info("train %s with %s on %s: %d processes, effective batch %d, %d micro-steps per rollout",
                     cfg.task, cfg.method, self.mcfg.model, acc.num_processes,
                     cfg.batch_size * cfg.grad_accum * acc.num_processes, self.units)
        self._mark = time.perf_counter()
        parts = LoopParts(acc, self.model, self.optimizer, self.scheduler, self.params, self.run_dir, self.writer)
        settings = LoopSettings(max_steps=cfg.max_steps, grad_accum=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm,
                                save_every=cfg.save_every, keep_checkpoints=cfg.keep_checkpoints,
                                eval_every=cfg.eval_every, log_every=1)  # a row per step; --log-every paces the CLI
        try:
            out = Loop(parts, settings, self, self.on_step).run(self.resume_from)
        finally:
            self.scorer.close()
            self.writer.close()
        if out.interrupted:
            where = f"saved {out.checkpoint} (step {out.step}); continue with --resume" if out.checkpoint else \
                "nothing to save yet"
            raise TrainingInterrupted(f"interrupted: {where}")
        adapter_dir = save_final_adapter(self.run_dir, self.model, acc)
        return TrainResult(self.run_dir, out.step, adapter_dir or self.run_dir / "adapter", out.last_metrics,
                           out.resumed_from)


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


def train(cfg: TrainConfig, scfg: SamplerConfig, mcfg: ModelConfig, *, task: Any = None,
          on_step: Callable[[StepReport], None] | None = None) -> TrainResult:
    """Train ``mcfg.model`` with LoRA on ``cfg.task`` by ``cfg.method``; see the module docstring."""
    from dllmrl.io.lock import RunDirLock

    check_no_cache(scfg)  # before any model work
    check_k_steps(cfg, scfg)

    with RunDirLock(cfg.run_dir, "dllmrl train", option="--output"):  # one training per run directory
        return Trainer(cfg, scfg, mcfg, task=task, on_step=on_step).run()


def check_k_steps(cfg: TrainConfig, scfg: SamplerConfig) -> None:
    """A method that selects steps (EGSPO, EGSPO-SA) trains on K of the rollout's denoising steps: there must be at
    least K of them. With ``--select entropy-mass`` K is the cap of the adaptive count and fixes the micro-steps per
    rollout, so the same bound holds (slots past the rollout's steps could never be filled)."""
    if get_method(cfg.method).selects_steps and cfg.k_steps > scfg.steps:
        raise ConfigError(f"--k-steps {cfg.k_steps} is more than --steps {scfg.steps}: a rollout has only "
                          f"{scfg.steps} steps to select from; pick --k-steps <= {scfg.steps}")


def check_no_cache(scfg: SamplerConfig) -> None:
    """Training scores the exact states its rollouts visited; a cached (approximate) rollout has other ones."""
    if scfg.cache != "none" or scfg.cache_refresh:
        flag = f"--cache {scfg.cache}" if scfg.cache != "none" else "--cache-refresh"
        raise ConfigError(f"{flag} is for sample and eval only: training scores the exact states its rollouts "
                          "visited, which a cached (approximate) rollout does not; drop it")
