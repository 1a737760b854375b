"""Masked-diffusion supervised fine-tuning (the objective diffusion LMs are trained with).

    from dllmrl.training.sft import run_sft
    run_sft(SftConfig(task="sudoku", prompt_style="compact", output="runs/sft-sudoku"),
            ModelConfig(model="runs/tiny-base", device="cpu"))

or ``dllmrl sft sudoku --model DIR ...``. Per sequence (LLaDA's SFT, arXiv:2502.09992 appendix B.1):
1. The clean sequence is the prompt (chat template, left-padded like the sampler's) followed by the
   gold completion and EOS tokens up to gen_len.
2. t = (1 - min_t) u + min_t with u ~ U(0, 1), drawn per sequence; each completion token is replaced
   by MASK with probability t. The prompt is never masked.
3. Loss = (1/B) sum_b 1/(t_b n_b) sum_{i masked in b} CE(model(x_t)_i, x0_i), n_b the completion
   length (EOS padding included): the ELBO weight 1/t, normalised by answer length.

The pure pieces (``mask_completion``, ``sft_loss``) are tested on hand-worked numbers; ``SftWork``
turns a micro-step into that loss, and the skeleton shared with the RL trainer
(``dllmrl.training.loop``) owns accelerate, the optimizer, checkpoints, resume, Ctrl-C and metrics.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl import model_defaults
from dllmrl.config import ModelConfig, SamplerConfig, model_max_positions
from dllmrl.errors import ConfigError, DataError
from dllmrl.models import load_model
from dllmrl.models.base import ModelAdapter
from dllmrl.training.accel import build_accelerator, seed_everything
from dllmrl.training.checkpoint import Checkpoint, save_final_adapter
from dllmrl.training.lora import LoraSettings, add_lora
from dllmrl.training.loop import (
    Loop, LoopParts, LoopSettings, OptimSettings, Progress, Snapshot, build_optimizer, open_run, write_config,
)
from dllmrl.training.metrics import MetricsWriter, parse_report_to
from dllmrl.training.rollout import quick_accuracy
from dllmrl.training.sft_config import LORA_AUTO_PARAMS, SftConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SftRow:
    """One tokenized training example."""

    prompt_ids: tuple[int, ...]
    """The rendered prompt (chat template and prefill), as the sampler would see it."""
    completion_ids: tuple[int, ...]
    """Gold completion then EOS padding: exactly gen_len ids."""


@dataclass(frozen=True)
class SftBatch:
    input_ids: Tensor
    """(B, L) clean ids: left padding, prompt, completion (L = P + gen_len)."""
    attention_mask: Tensor
    """(B, L) 0 on left padding, 1 elsewhere."""
    prompt_len: int
    """P: the completion occupies positions P..L-1 in every row."""

    @property
    def completion_mask(self) -> Tensor:
        """(B, L) bool: the positions that may be masked and are trained on."""
        m = torch.zeros_like(self.input_ids, dtype=torch.bool)
        m[:, self.prompt_len:] = True
        return m


@dataclass(frozen=True)
class SftLoss:
    loss: Tensor
    """Scalar to minimise: the 1/t-weighted CE over masked completion tokens, per answer length, batch mean."""
    ce: Tensor
    """Unweighted mean CE over the masked tokens (comparable across t; NaN-free: 0 when none is masked)."""
    acc: Tensor
    """Fraction of masked tokens whose argmax prediction is the gold token."""
    masked: Tensor
    """Number of masked tokens in the batch."""


def tokenize_examples(adapter: ModelAdapter, prompts: Sequence[str], targets: Sequence[str], gen_len: int,
                      *, chat: bool = True, prefill: str = "") -> tuple[list[SftRow], int]:
    """Render and tokenize (prompt, target) pairs; returns the rows and how many targets did not fit in gen_len.

    The completion is the target's ids followed by the tokenizer's EOS up to ``gen_len``. A target
    longer than gen_len is dropped rather than cut: a cut target would teach the model never to stop.
    """
    tok = adapter.tokenizer
    eos = tok.eos_token_id
    if eos is None:
        raise DataError(f"model '{adapter.name}': its tokenizer has no EOS token to pad completions with")
    rows: list[SftRow] = []
    dropped = 0
    for prompt, target in zip(prompts, targets, strict=True):
        text = adapter.render_prompt(prompt, chat=chat, prefill=prefill)
        p_ids = tok(text, add_special_tokens=False)["input_ids"]
        c_ids = tok(target, add_special_tokens=False)["input_ids"]
        if len(c_ids) > gen_len:
            dropped += 1
            continue
        rows.append(SftRow(tuple(p_ids), tuple(c_ids) + (eos,) * (gen_len - len(c_ids))))
    return rows, dropped


def collate(rows: Sequence[SftRow], pad_id: int) -> SftBatch:
    """Left-pad the prompts to the batch's widest one, exactly as ``ModelAdapter.encode`` does for sampling."""
    from dllmrl.models.base import left_pad

    prompt, prompt_attn = left_pad([r.prompt_ids for r in rows], pad_id)  # (B, P)
    completion = torch.tensor([r.completion_ids for r in rows], dtype=torch.long)  # (B, G)
    ids = torch.cat([prompt, completion], 1)  # (B, P + G)
    attn = torch.cat([prompt_attn, torch.ones_like(completion)], 1)
    return SftBatch(input_ids=ids, attention_mask=attn, prompt_len=prompt.shape[1])


def draw_t(batch: int, min_t: float, generator: torch.Generator | None = None, device=None) -> Tensor:
    """(B,) masking probabilities t = (1 - min_t) u + min_t, u ~ U(0, 1): never 0, so 1/t is finite."""
    u = torch.rand(batch, generator=generator, device=device)
    return (1 - min_t) * u + min_t


def mask_completion(clean: Tensor, completion_mask: Tensor, t: Tensor, mask_id: int,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Forward process: each completion token becomes MASK with probability t (per row); prompts stay.

    (B, L) clean, (B, L) completion_mask, (B,) t -> (B, L) noisy ids, (B, L) bool masked.
    """
    u = torch.rand(clean.shape, generator=generator, device=clean.device)  # (B, L)
    masked = (u < t.view(-1, 1)) & completion_mask
    return torch.where(masked, torch.full_like(clean, mask_id), clean), masked


def sft_loss(logits: Tensor, clean: Tensor, masked: Tensor, t: Tensor, completion_len: Tensor) -> SftLoss:
    """The 1/t-weighted masked CE. Shapes: (B, L, V) logits, (B, L) clean, (B, L) masked, (B,) t, (B,) completion_len.

    loss = (1/B) sum_b sum_{i masked} CE_bi / (t_b * completion_len_b)
    """
    rows, cols = masked.nonzero(as_tuple=True)  # only masked positions: at 126k vocab a full log-softmax is the cost
    return masked_ce(logits[rows, cols], clean, rows, cols, t, completion_len)


def masked_ce(picked: Tensor, clean: Tensor, rows: Tensor, cols: Tensor, t: Tensor, completion_len: Tensor) -> SftLoss:
    """``sft_loss`` from the (M, V) logits at the masked positions (rows, cols) alone."""
    B = clean.shape[0]
    picked = picked.float()  # (M, V)
    gold = clean[rows, cols]  # (M,)
    ce = F.cross_entropy(picked, gold, reduction="none")  # (M,)
    weight = 1.0 / (t[rows].float() * completion_len[rows].float())  # (M,)
    loss = (ce * weight).sum() / B
    n = ce.numel()
    with torch.no_grad():
        mean_ce = ce.mean() if n else ce.new_zeros(())
        acc = (picked.argmax(-1) == gold).float().mean() if n else ce.new_zeros(())
    return SftLoss(loss=loss, ce=mean_ce.detach(), acc=acc, masked=torch.tensor(n))


def sft_forward(adapter: ModelAdapter, batch: SftBatch, min_t: float, generator: torch.Generator | None = None) -> SftLoss:
    """Draw t, mask the completions, run the model once and return the loss (steps 2-3 of the module docstring)."""
    device = adapter.device
    clean = batch.input_ids.to(device)
    attn = batch.attention_mask.to(device)
    comp = batch.completion_mask.to(device)
    # 2. t per sequence, then the forward process on the completion only.
    t = draw_t(clean.shape[0], min_t, generator, device=device)  # (B,); the generator lives on the model's device
    noisy, masked = mask_completion(clean, comp, t, adapter.mask_id, generator)
    # 3. One forward; CE at the masked positions, weighted by 1/t and normalised by completion length.
    hidden = adapter.hidden(noisy, attn)  # (B, L, d); the head only at the masked positions
    rows, cols = masked.nonzero(as_tuple=True)
    return masked_ce(adapter.head(hidden[rows, cols]), clean, rows, cols, t, comp.sum(1))


# ---------------------------------------------------------------------------------------------- data stream
class TargetStream:
    """Training rows in a seeded order, epoch after epoch, tokenized on access.

    Position p of the stream is example ``perm_e[p mod N]`` of epoch ``e = p // N``, with
    ``perm_e = randperm(N)`` seeded by (seed, e): the order is a pure function of the seed, so a
    resumed run only needs the position. Generated splits (Sudoku's has a million rows) are never
    read in full. Rows whose target does not fit in gen_len are skipped and counted.
    """

    def __init__(self, adapter: ModelAdapter, task, examples: Sequence, prompt_style: str, gen_len: int, seed: int,
                 *, chat: bool = True):
        self.adapter, self.task, self.examples, self.chat = adapter, task, examples, chat
        self.prompt_style, self.gen_len, self.seed = prompt_style, gen_len, seed
        self.prefill = task.prefill_for(prompt_style)
        self.position = 0
        self.dropped = 0
        self._epoch = -1
        self._perm: list[int] = []

    def __len__(self) -> int:
        return len(self.examples)

    def state(self) -> dict[str, int]:
        """What a checkpoint must keep to continue the stream."""
        return {"stream_position": self.position, "dropped": self.dropped}

    def _index(self, p: int) -> int:
        epoch = p // len(self.examples)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm = torch.randperm(len(self.examples), generator=g).tolist()
            self._epoch = epoch
        return self._perm[p % len(self.examples)]

    def take(self, n: int) -> list[SftRow]:
        """The next ``n`` rows that fit; DataError when a whole epoch yields none."""
        rows: list[SftRow] = []
        misses = 0
        while len(rows) < n:
            ex = self.examples[self._index(self.position)]
            self.position += 1
            got, dropped = tokenize_examples(self.adapter, [ex.prompt], [self.task.sft_target(ex, self.prompt_style)],
                                             self.gen_len, chat=self.chat, prefill=self.prefill)
            rows.extend(got)
            self.dropped += dropped
            misses = misses + 1 if dropped else 0
            if misses >= len(self.examples):
                raise DataError(
                    f"no gold completion of task '{self.task.name}' fits in --gen-len {self.gen_len} tokens "
                    f"(prompt style '{self.prompt_style}'); raise --gen-len"
                )
        return rows


# ---------------------------------------------------------------------------------------------- the loop
SftProgress = Progress
"""What ``on_progress`` receives after each optimizer step (the metrics row on logging steps only)."""


@dataclass(frozen=True)
class SftResult:
    run_dir: Path
    step: int
    """Optimizer steps done."""
    model_dir: Path | None
    """The exported model (full fine-tuning: an HF directory for --model) or adapter (LoRA: for --adapter);
    None when the run was interrupted."""
    lora: bool
    interrupted: bool = False
    checkpoint: Path | None = None
    """The newest checkpoint written (resume from it with --resume)."""
    resumed_from: int | None = None
    """The checkpoint step this run continued from (None: a fresh start)."""


def resolve_config(cfg: SftConfig, model: str) -> SftConfig:
    """Fill prompt_style and gen_len from the model's dllmrl.json (else 'train' and 256)."""
    given = {"prompt_style": cfg.prompt_style, "gen_len": cfg.gen_len}
    return replace(cfg, **model_defaults.resolve(model, given, {"prompt_style": "train", "gen_len": 256}))


class SftWork:
    """The SFT ``Work`` of the skeleton: a micro-step is one masked-diffusion loss on the next rows of the stream."""

    def __init__(self, cfg: SftConfig, mcfg: ModelConfig, adapter: ModelAdapter, task, stream: TargetStream, acc):
        self.cfg, self.mcfg, self.adapter, self.task, self.stream, self.acc = cfg, mcfg, adapter, task, stream, acc
        self.generators: dict[str, torch.Generator] = {}  # masks come from per-step seeds, data from the stream
        self.pad_id = adapter.pad_id if adapter.pad_id is not None else adapter.mask_id

    def micro_loss(self, step: int, micro: int) -> tuple[Tensor, dict[str, Tensor]]:
        cfg, acc = self.cfg, self.acc
        world, rank = acc.num_processes, acc.process_index
        # Every rank reads the same global batch and keeps its slice: one order whatever the world size.
        rows = self.stream.take(cfg.batch_size * world)[rank * cfg.batch_size:(rank + 1) * cfg.batch_size]
        g = torch.Generator(device=acc.device)
        g.manual_seed(((cfg.seed * 1_000_003 + step) * 1009 + micro) * 101 + rank)  # replayable on resume
        out = sft_forward(self.adapter, collate(rows, self.pad_id), cfg.min_t, g)
        return out.loss, {"ce": out.ce, "acc": out.acc}

    def step_metrics(self, step_s: float) -> dict[str, float]:
        return {"epoch": self.stream.position / len(self.stream), "dropped": self.stream.dropped}

    def snapshot(self) -> Snapshot:
        return Snapshot(extra=self.stream.state())

    def restore(self, ckpt: Checkpoint) -> None:
        self.stream.position, self.stream.dropped = ckpt.extra["stream_position"], ckpt.extra["dropped"]

    def evaluate(self) -> float:
        """Held-out greedy accuracy on the bare model (DDP's forward would expect every process to sample in step)."""
        cfg = self.cfg
        bare = replace(self.adapter, model=self.acc.unwrap_model(self.adapter.model))
        return quick_accuracy(self.acc, bare, self.task, split=cfg.eval_split, limit=cfg.eval_limit,
                              prompt_style=cfg.prompt_style, scfg=eval_sampler_config(cfg, self.mcfg.model),
                              chat=cfg.chat, batch_size=max(cfg.batch_size, 64), seed=cfg.seed)

    def checkpoint_files(self, checkpoint: Path) -> None:
        """An intermediate full model is usable as it is: --model RUN/checkpoints/step-N/model."""
        if (checkpoint / "model").is_dir():
            write_model_defaults(checkpoint / "model", self.mcfg.model, self.cfg)


def _check_gen_len_fits(cfg: SftConfig, adapter: ModelAdapter) -> None:
    """A --gen-len the model cannot hold fails before the first batch allocates for it."""
    limit = model_max_positions(adapter.model)
    if limit is not None and cfg.gen_len >= limit:
        raise ConfigError(f"--gen-len {cfg.gen_len} leaves no room for the prompt in the model's {limit} positions "
                          f"(max_position_embeddings); pick a smaller --gen-len")


def run_sft(cfg: SftConfig, mcfg: ModelConfig, *, on_progress: Callable[[SftProgress], None] | None = None) -> SftResult:
    """Fine-tune ``mcfg.model`` on ``cfg.task`` with the masked-diffusion objective; see the module docstring."""
    from dllmrl.io.lock import RunDirLock

    with RunDirLock(cfg.run_dir, "dllmrl sft", option="--output"):  # one run per run directory
        return _run_sft(cfg, mcfg, on_progress=on_progress)


def _run_sft(cfg: SftConfig, mcfg: ModelConfig, *, on_progress: Callable[[SftProgress], None] | None = None) -> SftResult:
    from dllmrl.tasks.base import get_task

    cfg = resolve_config(cfg, mcfg.model)
    run_dir = Path(cfg.run_dir)
    report_to = parse_report_to(cfg.report_to)
    acc = build_accelerator(mcfg.device, mcfg.dtype, grad_accum=cfg.grad_accum, report_to=report_to,
                            project_dir=str(run_dir))
    resume_from = open_run(acc, run_dir, resume=cfg.resume, configs={"sft": cfg, "model": mcfg})
    # Data first: a wrong task, split or style fails before the model loads.
    task = get_task(cfg.task)
    examples = task.load(cfg.split, prompt_style=cfg.prompt_style)
    if cfg.limit is not None:
        examples = examples[: cfg.limit]
    if len(examples) == 0:
        raise DataError(f"split '{cfg.split}' of task '{cfg.task}' has no examples")
    # Seeds python / numpy / torch on every rank alike (LoRA's initial weights); data order and masks
    # have their own generators.
    seed_everything(cfg.seed)
    adapter = load_model(replace(mcfg, device=str(acc.device)))
    _check_gen_len_fits(cfg, adapter)
    n_params = sum(p.numel() for p in adapter.model.parameters())
    use_lora = cfg.lora == "on" or (cfg.lora == "auto" and n_params >= LORA_AUTO_PARAMS)
    if use_lora:
        add_lora(adapter, LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
    adapter.model.train()
    adapter._takes_position_ids()  # decide before DDP wraps the model and hides its forward's signature
    stream = TargetStream(adapter, task, examples, cfg.prompt_style, cfg.gen_len, cfg.seed, chat=cfg.chat)
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, OptimSettings(lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                                                 weight_decay=cfg.weight_decay))
    adapter.model, optimizer = acc.prepare(adapter.model, optimizer)
    work = SftWork(cfg, mcfg, adapter, task, stream, acc)
    write_config(acc, run_dir, {"command": "sft", "sft": asdict(cfg), "model": asdict(mcfg), "lora_used": use_lora,
                                "parameters": n_params})
    writer = MetricsWriter(run_dir, acc, report_to=report_to)
    writer.start({**asdict(cfg), **asdict(mcfg)})
    log.info("sft %s on %s (%s, %d examples, %d params%s) for %d steps", cfg.task, mcfg.model, cfg.prompt_style,
             len(stream), n_params, ", LoRA" if use_lora else "", cfg.max_steps)
    parts = LoopParts(acc, adapter.model, optimizer, scheduler, params, run_dir, writer, tokenizer=adapter.tokenizer,
                      add_files=work.checkpoint_files)
    settings = LoopSettings(max_steps=cfg.max_steps, grad_accum=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm,
                            save_every=cfg.save_every, keep_checkpoints=cfg.keep_checkpoints,
                            eval_every=cfg.eval_every, log_every=cfg.log_every)
    try:
        out = Loop(parts, settings, work, on_progress).run(resume_from)
    finally:
        writer.close()
    if out.interrupted:
        return SftResult(run_dir, out.step, None, use_lora, interrupted=True, checkpoint=out.checkpoint,
                         resumed_from=out.resumed_from)
    model_dir = save_final_adapter(run_dir, adapter.model, acc, tokenizer=adapter.tokenizer)
    if model_dir is not None:
        write_model_defaults(model_dir, mcfg.model, cfg)
        log.info("saved the trained %s to %s", "adapter" if use_lora else "model", model_dir)
    return SftResult(run_dir, out.step, run_dir / ("adapter" if use_lora else "model"), use_lora,
                     checkpoint=out.checkpoint, resumed_from=out.resumed_from)


def eval_sampler_config(cfg: SftConfig, model: str) -> SamplerConfig:
    """The sampler of the quick evaluation: the model's dllmrl.json settings at this run's gen_len, greedy."""
    d = model_defaults.read_model_defaults(model)
    try:
        return SamplerConfig(gen_len=cfg.gen_len, steps=d.get("steps"),
                             block_len=d.get("block_len", min(32, cfg.gen_len)),
                             remasking=d.get("remasking", "low_confidence"))
    except ConfigError:  # the model's steps / block_len do not fit this gen_len: one block, one token per step
        return SamplerConfig(gen_len=cfg.gen_len, steps=cfg.gen_len, block_len=cfg.gen_len)


def write_model_defaults(out: Path, base: str, cfg: SftConfig) -> None:
    """dllmrl.json for a trained model: the base model's sampler defaults plus this run's prompt_style and gen_len,
    so eval and train pick the settings the model was trained for."""
    defaults = {**model_defaults.read_model_defaults(base), "prompt_style": cfg.prompt_style, "gen_len": cfg.gen_len}
    try:
        SamplerConfig(**{k: defaults[k] for k in ("gen_len", "steps", "block_len") if k in defaults})
    except ConfigError:  # the base's steps / block_len do not fit the new gen_len: leave them to the sampler defaults
        defaults.pop("steps", None)
        defaults.pop("block_len", None)
    (out / model_defaults.FILENAME).write_text(json.dumps(defaults, indent=2) + "\n")
