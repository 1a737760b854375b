"""Masked-diffusion supervised fine-tuning (the objective diffusion LMs are trained with).

    from dllmrl.sft import run_sft
    run_sft(SftConfig(task="sudoku", prompt_style="compact", output_dir="runs/sft-sudoku"),
            ModelConfig(model="runs/tiny-base", device="cpu"))

or ``dllmrl sft sudoku --model DIR ...``. Per sequence (LLaDA's SFT, arXiv:2502.09992 appendix B.1):
1. The clean sequence is the prompt (chat template, left-padded like the sampler's) followed by the
   gold completion and EOS tokens up to gen_len.
2. t = (1 - min_t) u + min_t with u ~ U(0, 1), drawn per sequence; each completion token is replaced
   by MASK with probability t. The prompt is never masked.
3. Loss = (1/B) sum_b 1/(t_b n_b) sum_{i masked in b} CE(model(x_t)_i, x0_i), n_b the completion
   length (EOS padding included): the ELBO weight 1/t, normalised by answer length.

The pure pieces (``mask_completion``, ``sft_loss``) are tested on hand-worked numbers; the loop
(``dllmrl.sft_loop.run_sft``) owns accelerate, checkpoints, resume and metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataError
from .models.base import ModelAdapter

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
    P = max(len(r.prompt_ids) for r in rows)
    G = len(rows[0].completion_ids)
    ids = torch.full((len(rows), P + G), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        n = len(r.prompt_ids)
        ids[i, P - n:P] = torch.tensor(r.prompt_ids, dtype=torch.long)
        ids[i, P:] = torch.tensor(r.completion_ids, dtype=torch.long)
        attn[i, P - n:] = 1
    return SftBatch(input_ids=ids, attention_mask=attn, prompt_len=P)


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
    B = clean.shape[0]
    rows, cols = masked.nonzero(as_tuple=True)  # only masked positions: at 126k vocab a full log-softmax is the cost
    picked = logits[rows, cols].float()  # (M, V)
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
    logits = adapter.logits(noisy, attn)  # (B, L, V)
    return sft_loss(logits, clean, masked, t, comp.sum(1))
