"""Steering at sampling time: blend several LoRA adapters' logits at every denoising step.

Diffusion Blend (arXiv 2505.18547) mixes fine-tuned denoisers at each step; for a masked diffusion
LM a step's "denoiser" is its logits, so a blend is

    sum      logits = sum_i w_i * logits_i            (--blend sudoku=0.5,countdown=0.5; 'base' = adapters off)
    DB-KLA   logits = (1 - lam) * base + lam * adapter (--blend-base-scale LAM, one adapter; LAM > 1 extrapolates)
    DB-MPA-LS         one term per step, term i with probability w_i  (--blend-mode random-step)

The options (and their validation) are ``dllmrl.config.BlendConfig``, kept with the other configs so
that building the CLI imports no torch; this module is the sampling side.

Where: ``BlendedAdapter`` is a ``ModelAdapter``, so the sampler runs unchanged except for one hook
(``begin_step``, where random-step draws its term from the sampler's own torch.Generator). Its
``hidden`` runs every term's forward as ONE batched call (the batch repeated k times, each copy routed
to its adapter by peft's mixed-adapter batch, ``adapter_names``; '__base__' skips the LoRA delta) and
returns the k hidden states side by side, (B, L, k * d). Its ``head`` applies the model's own head to
each of the k slices, routed to that slice's adapter, and sums the logits with the weights, in float32.
With ``--no-blend-batched`` the k forwards run one after another (same logits, a k-times smaller batch).

Exactness: the blend is taken AFTER the head, so it is exactly sum_i w_i * logits_i for every family,
including heads that are not affine (ModernBERT's and BERT's dense + GELU + norm prediction head,
Gemma3's tanh softcap) and adapters that train the head themselves. Blending the hidden states first
(head(sum w_i h_i) + (sum w_i - 1) * bias) would be exact only for an affine head shared by all the
adapters, and would save only k - 1 head applications at the few positions the sampler asks for.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import torch
from torch import Tensor

from dllmrl.adapter_spec import BASE, NamedAdapter
from dllmrl.config import BlendConfig
from dllmrl.errors import ConfigError
from dllmrl.methods.losses import exact_kl
from dllmrl.models.base import MIN_HEAD_ROWS, ModelAdapter
from dllmrl.models.layers import KVCache

log = logging.getLogger(__name__)

PEFT_BASE = "__base__"
"""peft's adapter name for 'no adapter' in a mixed batch."""


def check_blend(cfg: BlendConfig, adapters: Sequence[NamedAdapter], cache: str = "none") -> tuple[tuple[str, float], ...]:
    """The blend's (name, weight) terms, () without a blend; every misuse is one ConfigError, before any weights load."""
    if not cfg.active:
        if len(adapters) > 1:
            raise ConfigError(f"{len(adapters)} --adapter given ({', '.join(a.name for a in adapters)}) but no "
                              "--blend; pass --blend NAME=W,... (or merge them into one with dllmrl merge)")
        return ()
    if cache != "none":
        raise ConfigError(f"--cache {cache} does not combine with --blend (each term would need its own "
                          "key-value cache); use --cache none")
    return cfg.terms(adapters)


def apply_blend(adapter: ModelAdapter, cfg: BlendConfig, adapters: Sequence[NamedAdapter],
                cache: str = "none") -> ModelAdapter:
    """The ModelAdapter to sample with: ``adapter`` itself without a blend, else a ``BlendedAdapter`` over it."""
    terms = check_blend(cfg, adapters, cache)
    if not terms:
        return adapter
    log.info("blend %s (%s, %s forwards)", terms, cfg.blend_mode, "batched" if cfg.blend_batched else "sequential")
    peft_names = {a.name: a.peft_name for a in adapters} | {BASE: PEFT_BASE}
    base = {f.name: getattr(adapter, f.name) for f in fields(ModelAdapter) if f.init}
    return BlendedAdapter(**base, terms=tuple((peft_names[n], w) for n, w in terms), mode=cfg.blend_mode,
                          batched=cfg.blend_batched, track_kl=cfg.blend_kl)


@dataclass
class BlendedAdapter(ModelAdapter):
    """A ModelAdapter whose logits are a blend of its peft model's adapters (see the module docstring)."""

    terms: tuple[tuple[str, float], ...] = ()
    """(peft adapter name, or PEFT_BASE for the adapters off; weight) per term."""
    mode: str = "sum"
    batched: bool = True
    chosen: str | None = None
    """random-step: the term of the current step (set by ``begin_step``)."""
    track_kl: bool = False
    """Accumulate KL(blend || base) over every row ``head`` computes (``kl_to_base``); the base joins each
    forward at weight 0 when it is not a term."""
    kl_sum: float = 0.0
    kl_rows: int = 0

    def __post_init__(self) -> None:
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            raise ConfigError("--blend needs the adapters loaded with --adapter NAME=DIR")

    @property
    def supports_cache(self) -> bool:
        return False

    def begin_step(self, generator: torch.Generator | None) -> None:
        """random-step: draw this step's term, term i with probability w_i, from the sampler's generator."""
        if self.mode != "random-step":
            return
        device = generator.device if generator is not None else torch.device("cpu")
        u = float(torch.rand((), generator=generator, device=device, dtype=torch.float64))
        acc = 0.0
        self.chosen = self.terms[-1][0]  # rounding: u above the float sum of the weights
        for name, w in self.terms:
            acc += w
            if u < acc:
                self.chosen = name
                break

    def active(self) -> list[tuple[str, float]]:
        """The terms this step evaluates: the one drawn (random-step), else every term of nonzero weight."""
        if self.mode == "random-step":
            if self.chosen is None:
                raise RuntimeError("random-step blending: begin_step was not called before the forward")
            terms = [(self.chosen, 1.0)]
        else:
            terms = [(n, w) for n, w in self.terms if w != 0] or [self.terms[0]]
        if self.track_kl and all(n != PEFT_BASE for n, _ in terms):
            terms.append((PEFT_BASE, 0.0))  # computed for the KL only: adds nothing to the blend
        return terms

    @property
    def kl_to_base(self) -> float | None:
        """Mean KL(blend || base) per decoded position and step so far (nats); None before any."""
        return self.kl_sum / self.kl_rows if self.kl_rows else None

    def _add_kl(self, blend: Tensor, base: Tensor) -> None:
        # The sampler never decodes the mask token (policy_logits_at sets it to -inf): leave it out of both.
        keep = torch.ones(blend.shape[-1], dtype=torch.bool, device=blend.device)
        keep[self.mask_id] = False
        p = torch.log_softmax(blend.detach()[..., keep], dim=-1).reshape(-1, int(keep.sum()))
        q = torch.log_softmax(base.detach()[..., keep], dim=-1).reshape(-1, int(keep.sum()))
        kl = exact_kl(p, q).clamp_min(0)  # rounding can make an exact 0 slightly negative
        self.kl_sum += float(kl.sum())
        self.kl_rows += kl.numel()

    @contextmanager
    def _routed(self, names: list[str]) -> Iterator[None]:
        # peft's mixed-adapter batch: forward pre-hooks on every LoRA layer route row r to names[r].
        # The trunk is called below the PeftModel (ModelAdapter.hidden), so its hooks are entered here.
        with self.model.base_model._enable_peft_forward_hooks(adapter_names=names):
            yield

    def hidden(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, cache: KVCache | None = None,
               window: tuple[int, int] | None = None) -> Tensor:
        """(B, L) ids -> (B, L, k * d): the k active terms' hidden states side by side (``head`` blends them)."""
        if cache is not None:
            raise ConfigError("--cache does not combine with --blend; use --cache none")
        names = [n for n, _ in self.active()]
        B = input_ids.shape[0]
        if self.batched and len(names) > 1:
            k = len(names)
            mask = attention_mask.repeat(k, 1) if attention_mask is not None else None
            with self._routed([n for n in names for _ in range(B)]):
                h = super().hidden(input_ids.repeat(k, 1), mask)  # (k * B, L, d)
            parts = list(h.split(B))
        else:
            parts = []
            for n in names:
                with self._routed([n] * B):
                    parts.append(super().hidden(input_ids, attention_mask))  # (B, L, d)
        return torch.cat(parts, dim=-1)

    def head(self, hidden: Tensor) -> Tensor:
        """(..., k * d) -> (..., V): sum_i w_i * head_i(h_i), in float32; each term's head runs routed to its
        adapter, since all-linear LoRA also adapts a head's own dense layer (ModernBERT's, BERT's)."""
        active = self.active()
        out = base = None
        for i, ((name, w), h) in enumerate(zip(active, hidden.chunk(len(active), dim=-1))):
            h = h.contiguous()
            rows = max(h.shape[0], MIN_HEAD_ROWS) if h.dim() == 2 else h.shape[0]  # ModelAdapter.head pads
            with self._routed([name] * rows):
                logits = super().head(h).float()
            if name == PEFT_BASE:
                base = logits
            if w == 0 and i > 0:  # the KL's extra base term
                continue
            term = logits if w == 1.0 else w * logits
            out = term if out is None else out + term
        if self.track_kl and base is not None:
            self._add_kl(out, base)
        return out

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Every position's blended logits (reward guidance asks for these)."""
        return self.head(self.hidden(input_ids, attention_mask))
