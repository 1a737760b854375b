"""The evaluation loop behind ``dllmrl eval``: generate, score, write records, resume.

    from dllmrl.evaluation.loop import EvalConfig, evaluate
    results = evaluate(task, adapter, EvalConfig(task="sudoku", gen_lens=(32,), out="runs/eval/x"))

For each generation length: the split's prompts are batched (similar prompt lengths together) through
``dllmrl.sampling.sampler.sample``, each completion is decoded, scored by the task pack (a thread pool for
code packs, whose checks are sandbox subprocesses) and appended to this process's shard as soon as its
batch is done; at the end of the length the shards are folded into ``records.jsonl`` in example order.
A record carries its generation settings; a rerun skips every example that already has a record with
the same settings (model and adapter included), so an interrupted run resumes where it stopped.
``results.json`` holds the accuracy per generation length (plus the task's own set-level metrics,
such as Sudoku's cell accuracy) and the best length by the task's headline metric.

Under ``torchrun`` / ``accelerate launch`` the batches are split over the processes (see
``dllmrl.evaluation.shards``). The output directory is locked for the whole run: a second eval into
the same ``--out`` stops at once with the holder's pid.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dllmrl.config import REMASKING, SamplerConfig, check_finite
from dllmrl.errors import ConfigError, DataError, DllmrlError
from dllmrl.evaluation.records import RECORDS, RESULTS, read_records, settings_for
from dllmrl.evaluation.scoring import score_file, score_one
from dllmrl.evaluation.shards import Ranks, fold_shards, plan_batches, shard_path

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "EvalInterrupted", "EvalResults", "LengthResult", "Progress", "RECORDS", "RESULTS",
           "evaluate", "read_records", "score_file", "score_one", "settings_for"]


class EvalInterrupted(DllmrlError):
    """Ctrl-C during an evaluation; the message says where the records are and that a rerun resumes."""


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how to generate. Every field is a ``dllmrl eval`` option."""

    task: str
    """Registered task pack name (see ``dllmrl ls tasks``)."""
    split: str = "test"
    """Split to evaluate; the paper's numbers are on 'test' (Sudoku: 'test256')."""
    gen_lens: tuple[int, ...] = (256,)
    """Generation lengths; the paper reports 128, 256 and 512 and the best of them."""
    steps: int | None = None
    """Denoising steps; None means gen_len / 2 for each length (the reference's rule)."""
    block_len: int = 32
    """Semi-autoregressive block length; must divide every generation length."""
    temperature: float = 0.0
    """Gumbel temperature; 0 (greedy) is the published protocol."""
    remasking: str = "low_confidence"
    """Which masked positions to reveal first: 'low_confidence' (the protocol) or 'random'."""
    cfg_scale: float = 0.0
    """Classifier-free guidance scale (the protocol uses none)."""
    decode: str = "fixed"
    """'fixed' step schedule or 'threshold' (Fast-dLLM style early reveal)."""
    threshold: float = 0.9
    """Confidence threshold for --decode threshold."""
    cache: str = "none"
    """Fast-dLLM key/value cache for native LLaDA and Dream: 'none', 'prefix' or 'dual' (see SamplerConfig.cache)."""
    prompt_style: str = "eval"
    """The pack's prompt format: 'eval' (published protocol), 'train' or 'compact' (tiny models)."""
    raw: bool = False
    """Send the prompt without the model's chat template."""
    batch_size: int = 8
    """Prompts generated together."""
    limit: int | None = None
    """Evaluate only the first N examples of the split."""
    seed: int = 0
    """Seed of the sampler's generator (matters only at temperature > 0)."""
    out: str = "runs/eval"
    """Directory for records.jsonl and results.json."""
    bucket: bool = True
    """Batch prompts of similar token length together (less padding, faster); the records do not change."""

    def __post_init__(self) -> None:
        check_finite(self)
        if not self.gen_lens:
            raise ConfigError("--gen-len needs at least one length, e.g. --gen-len 128,256,512")
        if self.batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"--limit must be positive, got {self.limit}")
        if self.remasking not in REMASKING:
            raise ConfigError(f"--remasking must be one of {', '.join(REMASKING)}, got '{self.remasking}'")
        for g in self.gen_lens:  # surface a bad combination before any model is loaded
            self.sampler_config(g)

    def sampler_config(self, gen_len: int) -> SamplerConfig:
        return SamplerConfig(
            gen_len=gen_len, steps=self.steps,
            block_len=self.block_len, temperature=self.temperature, cfg_scale=self.cfg_scale,
            remasking=self.remasking, decode=self.decode, threshold=self.threshold, cache=self.cache,
        )


@dataclass(frozen=True)
class Progress:
    """What the loop reports after each batch (feeds the progress bar).

    Under a multi-process launch only rank 0 reports, and ``total`` is the resumed examples plus rank 0's share.
    """

    gen_len: int
    done: int
    """Examples with a record at this length (resumed ones included)."""
    total: int
    correct: int
    resumed: int
    """Of ``done``, those found already written."""


@dataclass
class LengthResult:
    gen_len: int
    steps: int
    n: int
    correct: int
    accuracy: float
    metrics: dict[str, float] = field(default_factory=dict)
    """The task's set-level metrics (e.g. Sudoku's cell_acc, MATH's accuracy_hendrycks)."""
    generated: int = 0
    """Examples generated by this run (the rest were resumed)."""
    seconds: float = 0.0
    """Generation and scoring time of this run at this length."""

    def metric(self, name: str) -> float:
        return self.accuracy if name == "accuracy" else float(self.metrics.get(name, float("nan")))


@dataclass
class EvalResults:
    task: str
    split: str
    headline: str
    """The metric the paper reports for this task; 'best' maximises it."""
    lengths: list[LengthResult]
    records_path: str
    settings: dict[str, Any]

    @property
    def best(self) -> LengthResult:
        return max(self.lengths, key=lambda r: r.metric(self.headline))

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "headline": self.headline,
                "lengths": [asdict(r) for r in self.lengths], "best_gen_len": self.best.gen_len,
                "best": self.best.metric(self.headline), "records": self.records_path, "settings": self.settings}


@dataclass
class _Run:
    """What every generation length of one ``evaluate`` call shares."""

    task: Any
    adapter: Any
    cfg: EvalConfig
    examples: list
    out: Path
    ranks: Ranks
    model_info: dict[str, Any]
    guidance: Any
    reward: Any
    on_progress: Callable[[Progress], None] | None
    pool: ThreadPoolExecutor

    @property
    def order(self) -> list[str]:
        return [ex.id for ex in self.examples]

    @property
    def guided(self) -> bool:
        return self.guidance is not None and self.guidance.guidance != "none"


def evaluate(
    task: Any, adapter: Any, cfg: EvalConfig, *, model_info: Mapping[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None, guidance: Any = None, reward: Any = None,
) -> EvalResults:
    """Run the evaluation for every generation length of ``cfg``; see the module docstring.

    ``guidance`` (a dllmrl.sampling.guidance.GuidanceConfig) with its loaded ``reward`` model steers sampling
    at test time; its settings become part of each record's settings, so guided and unguided
    records never mix on resume. Under a multi-process launch every rank calls this; only rank 0
    reports progress and writes ``records.jsonl`` and ``results.json``.
    """
    from dllmrl.io.lock import DirLock

    examples = task.load(cfg.split, prompt_style=cfg.prompt_style)
    n = len(examples) if cfg.limit is None else min(cfg.limit, len(examples))
    examples = [examples[i] for i in range(n)]
    if not examples:
        raise DataError(f"split '{cfg.split}' of task '{cfg.task}' is empty")
    ranks = Ranks.current()
    if ranks.world > 1 and ranks.main:
        log.info("evaluating %d examples on %d processes", len(examples), ranks.world)
    out = Path(cfg.out)
    lock = DirLock(out, "dllmrl eval", option="--out")
    ranks.run_on_main(lock.acquire)
    workers = max(1, task.score_workers)
    model_info = dict(model_info or {"model": adapter.name})
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            run = _Run(task, adapter, cfg, examples, out, ranks, model_info, guidance, reward,
                       on_progress if ranks.main else None, pool)
            lengths = [_eval_length(run, g) for g in cfg.gen_lens]
        results = EvalResults(cfg.task, cfg.split, task.headline, lengths, str(out / RECORDS),
                              {**model_info, "task_version": task.version, **{k: v for k, v in asdict(replace(cfg)).items() if k != "gen_lens"},
                               "gen_lens": list(cfg.gen_lens)})
        ranks.run_on_main(lambda: _write_results(out / RESULTS, results))
    except KeyboardInterrupt:
        raise _interrupted(out, ranks, [ex.id for ex in examples]) from None
    finally:
        lock.release()
    return results


def _interrupted(out: Path, ranks: Ranks, order: Sequence[str]) -> EvalInterrupted:
    """Ctrl-C: fold what this process wrote into records.jsonl (one process), and say how to resume."""
    where = f"{out / RECORDS}"
    if ranks.world == 1:
        try:
            fold_shards(out, out / RECORDS, order)
        except DllmrlError:  # the disk may be why we stopped; the shard stays and the rerun folds it
            where = f"{out / RECORDS} and {out / 'shards'}"
    else:
        where = f"{out / RECORDS} and {out / 'shards'} (folded in by the rerun)"
    return EvalInterrupted(f"interrupted: the records so far are in {where}; rerun the same command to resume")


def _write_results(path: Path, results: EvalResults) -> None:
    from dllmrl.io.jsonl import disk_error

    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(results.to_json(), indent=2) + "\n")
        tmp.replace(path)
    except OSError as e:
        raise disk_error(e, path.parent) from None


def _settings(run: _Run, scfg: SamplerConfig) -> dict[str, Any]:
    settings = settings_for(run.cfg, scfg, run.model_info, run.task.version)
    if run.guided:
        g = run.guidance
        settings = {**settings, **asdict(g), "best_of_n": g.candidates(scfg) if g.guidance == "best-of-n" else None}
        if g.guidance in ("aps", "entrgi"):  # their hard embeddings are Gumbel draws, even at temperature 0
            settings["seed"] = run.cfg.seed
    return settings


def _have(path: Path, settings: Mapping[str, Any], wanted: set[str]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_records(path) if r.get("settings") == settings and r.get("id") in wanted}


def _fold_and_check(run: _Run, settings: Mapping[str, Any], gen_len: int) -> None:
    """Rank 0, after every rank finished: fold the shards in and make sure no example was lost."""
    path = run.out / RECORDS
    fold_shards(run.out, path, run.order)
    have = _have(path, settings, set(run.order))
    missing = [i for i in run.order if i not in have]
    if missing:
        raise DataError(f"gen_len {gen_len}: {len(missing)} examples have no record after this run (first: "
                        f"{missing[0]}); a process's shard in {run.out / 'shards'} is missing or partial. "
                        "Rerun the same command to generate them")


def _eval_length(run: _Run, gen_len: int) -> LengthResult:
    cfg, ranks = run.cfg, run.ranks
    scfg = cfg.sampler_config(gen_len)
    settings = _settings(run, scfg)
    path = run.out / RECORDS
    # 1. Shards left by a killed run go into records.jsonl first, so they count as done.
    ranks.run_on_main(lambda: fold_shards(run.out, path, run.order))
    have = _have(path, settings, set(run.order))
    todo = [ex for ex in run.examples if ex.id not in have]
    correct = sum(bool(r.get("correct")) for r in have.values())
    if have and ranks.main:
        log.info("gen_len %d: resuming, %d of %d examples already have records", gen_len, len(have), len(run.examples))
    # 2. The same batches whatever the number of processes; this rank takes every world-th one.
    prefill = _prefill(run)
    texts = [run.adapter.render_prompt(ex.prompt, chat=not cfg.raw, prefill=prefill) for ex in todo]
    lengths = [len(run.adapter.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts] if cfg.bucket \
        else [0] * len(texts)
    batches = plan_batches(lengths, cfg.batch_size, bucket=cfg.bucket)[ranks.rank::ranks.world]
    t0 = time.perf_counter()
    _generate(run, scfg, settings, [[(todo[i], texts[i]) for i in b] for b in batches], len(have), correct)
    # 3. Everyone done: rank 0 folds the shards in, in example order, and checks nothing is missing.
    ranks.barrier()
    ranks.run_on_main(lambda: _fold_and_check(run, settings, gen_len))
    have = _have(path, settings, set(run.order))
    recs = [have[i] for i in run.order]
    correct = sum(bool(r.get("correct")) for r in recs)
    metrics = run.task.summary(recs)
    return LengthResult(gen_len, scfg.steps, len(recs), correct, correct / len(recs), metrics, len(todo),
                        round(time.perf_counter() - t0, 3))


def _prefill(run: _Run) -> str:
    from dllmrl.tasks.base import response_text

    return response_text(run.task, "", run.cfg.prompt_style)


def _generate(run: _Run, scfg: SamplerConfig, settings: Mapping[str, Any], batches: Sequence[Sequence[tuple[Any, str]]],
              resumed: int, correct: int) -> None:
    """Generate and score this rank's ``batches`` of (example, prompt text), appending each to its shard."""
    import torch

    from dllmrl.io.jsonl import JsonlAppender
    from dllmrl.sampling.guidance import GuidanceConfig, guided_sample

    cfg, adapter, task, reward = run.cfg, run.adapter, run.task, run.reward
    total = resumed + sum(len(b) for b in batches)
    done = resumed
    report = run.on_progress or (lambda p: None)
    report(Progress(scfg.gen_len, done, total, correct, resumed))
    with JsonlAppender(shard_path(run.out, run.ranks.rank)) as shard:
        for pairs in batches:
            batch, texts = [p[0] for p in pairs], [p[1] for p in pairs]
            ids, attn = adapter.encode(texts)
            # A seed per batch content: the same examples draw the same noise on a resume or on another rank.
            seed = cfg.seed + zlib.crc32("\n".join(ex.id for ex in batch).encode())
            gen = torch.Generator(device=ids.device).manual_seed(seed)
            tb = time.perf_counter()
            calls = reward.calls if reward is not None else 0
            traj = guided_sample(adapter, ids, attn, scfg, run.guidance if run.guided else GuidanceConfig(), reward,
                                 generator=gen, guidance_generator=torch.Generator(device=ids.device).manual_seed(seed + 1))
            calls = (reward.calls - calls) / len(batch) if reward is not None else 0
            gen_s = time.perf_counter() - tb
            completions = [adapter.decode_completion(row) for row in traj.completion_ids]
            scores = list(run.pool.map(lambda a: score_one(task, a[0], a[1], cfg.prompt_style), zip(batch, completions)))
            for ex, text, completion, score in zip(batch, texts, completions, scores):
                gold = task.gold_fields(ex)
                shard.write({"id": ex.id, **gold, "prompt": text, "completion": completion, **score,
                             "settings": settings, "nfe": traj.nfe, "gen_seconds": round(gen_s / len(batch), 4),
                             **({"reward_calls": calls} if run.guided else {})})
                correct += int(score["correct"])
            shard.flush()
            done += len(batch)
            report(Progress(scfg.gen_len, done, total, correct, resumed))
