"""The model adapter: the one place that knows how a model family differs.

Mask token id, shifted logits (Dream predicts position i+1 at i), whether the forward
takes an attention mask, EOS ids, the chat template and LoRA target modules. The
sampler and the trainer call ``adapter.logits`` for every position, or ``adapter.hidden`` then
``adapter.head`` at the positions they use.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from dllmrl.errors import ConfigError
from dllmrl.models.heads import HEAD_SPLITS, WHOLE, HeadSplit
from dllmrl.models.layers import KVCache

log = logging.getLogger(__name__)

MIN_HEAD_ROWS = 4
"""The LM head never runs on fewer rows (see ModelAdapter.head)."""



def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Token rows -> (B, L) ids padded on the left with ``pad`` and the (B, L) attention mask (1 on tokens):
    the layout the sampler, the trainer and SFT all share, so a prompt ends where its completion starts."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, L)
    attn = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            attn[i, width - len(r):] = 1
    return ids, attn

@dataclass
class ModelAdapter:
    model: Any
    """A transformers model whose forward returns ``.logits`` of shape (B, L, V)."""
    tokenizer: Any
    mask_id: int
    eos_ids: tuple[int, ...] = ()
    """Tokens that end a completion (EOS, end-of-turn); used to cut text and by EOS limits."""
    pad_id: int | None = None
    shift_logits: bool = False
    """True when the model predicts position i+1 at position i (Dream): logits are shifted back."""
    supports_attention_mask: bool = True
    lora_targets: Sequence[str] | str = "all-linear"
    family: str = "masked-lm"
    name: str = ""
    _accepts_position_ids: bool | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L) ids -> (B, L, V) logits aligned so that logits[:, i] predicts token i.

        Every position gets the head; paths that need a few positions use ``hidden`` and ``head``.
        """
        attn, pos = self._mask_and_positions(attention_mask)
        kwargs: dict[str, Any] = {}
        if attn is not None:
            kwargs["attention_mask"] = attn
        if pos is not None:
            kwargs["position_ids"] = pos
        out = self.model(input_ids=input_ids, **kwargs).logits  # (B, L, V)
        return self._shift(out)

    def hidden(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, cache: KVCache | None = None,
               window: tuple[int, int] | None = None) -> Tensor:
        """(B, L) ids -> (B, L, d) final hidden states, aligned like ``logits``: head(hidden[:, i]) predicts token i.

        ``head(hidden(x)[rows, cols])`` equals ``logits(x)[rows, cols]`` without the (B, L, V) tensor.
        (A family with no known split returns its logits here, and its head is the identity.)
        With ``cache`` (``supports_cache`` families): no window runs the whole sequence and fills the
        cache; ``window=(start, end)`` computes positions start..end-1 only, against the cache
        elsewhere, and returns their (B, end - start, d) hidden states.
        """
        attn, pos = self._mask_and_positions(attention_mask)
        split = self._split()
        if cache is None:
            return self._shift(split.trunk(self._base(), input_ids, attn, pos))
        if split.cached_trunk is None:
            raise ConfigError(f"--cache: the '{self.family}' model has no key-value cache (only dllmrl's native "
                              "LLaDA and Dream have one); use --cache none")
        B, L = input_ids.shape
        if pos is None:
            pos = torch.arange(L, device=input_ids.device).expand(B, L)
        if window is None:
            cache.fill()
            return self._shift(split.cached_trunk(self._base(), input_ids, attn, pos, cache))
        start, end = window
        # Dream's position i is predicted at i - 1: compute one position earlier, then shift.
        s = start - 1 if self.shift_logits and start > 0 else start
        cache.window(s, end)
        raw = split.cached_trunk(self._base(), input_ids[:, s:end], attn, pos[:, s:end], cache)  # (B, end - s, d)
        return raw[:, :-1] if s < start else self._shift(raw)

    def begin_step(self, generator: torch.Generator | None) -> None:
        """Called by the sampler before each denoising step's forward; a random-step adapter blend draws
        its term here, from the sampler's generator (dllmrl.sampling.blend). Nothing for a plain model."""

    @property
    def supports_cache(self) -> bool:
        """Whether ``hidden`` takes a Fast-dLLM key/value cache (dllmrl's native LLaDA and Dream)."""
        return self._split().cached_trunk is not None

    def head(self, hidden: Tensor) -> Tensor:
        """(..., d) hidden states from ``hidden`` -> (..., V) logits.

        (N, d) rows are padded to at least MIN_HEAD_ROWS: with fewer rows the CPU BLAS takes a
        vector kernel that rounds differently from the whole-sequence forward (measured), and the
        logits must be the same numbers as ``logits`` gives.
        """
        n = hidden.shape[0]
        if hidden.dim() != 2 or n >= MIN_HEAD_ROWS:
            return self._split().head(self._base(), hidden)
        padded = torch.cat([hidden, hidden.new_zeros((MIN_HEAD_ROWS - n, hidden.shape[1]))])
        return self._split().head(self._base(), padded)[:n]

    def _split(self) -> HeadSplit:
        # A DistributedDataParallel wrapper syncs gradients only through its own forward, so a
        # multi-process model runs whole (correct, without the head saving).
        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            return WHOLE
        return HEAD_SPLITS.get(self.family, WHOLE)

    def _base(self) -> Any:
        """The model under a peft wrapper (whose LoRA layers sit inside it), or the model itself."""
        from peft import PeftModel

        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            return self.model  # run whole, through the wrapper (see _split)
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def _mask_and_positions(self, attention_mask: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """What the forward gets: the attention mask only when something is padded, with its positions."""
        if attention_mask is None or not self.supports_attention_mask or bool(attention_mask.all()):
            return None, None
        # Left padding must not move the real tokens' rotary positions.
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0) if self._takes_position_ids() else None
        return attention_mask, pos

    def _shift(self, out: Tensor) -> Tensor:
        # Dream predicts token i+1 at position i: move everything one place right (position 0 keeps its own)
        return torch.cat([out[:, :1], out[:, :-1]], dim=1) if self.shift_logits else out

    def _takes_position_ids(self) -> bool:
        if self._accepts_position_ids is None:
            self._accepts_position_ids = "position_ids" in inspect.signature(self._base().forward).parameters
        return self._accepts_position_ids

    # ---------------------------------------------------------------- text
    def render_prompt(self, prompt: str, *, chat: bool = True, prefill: str = "", system: str | None = None) -> str:
        """The text the model sees: chat template over one user turn, plus a prefill."""
        if not chat:
            return prompt + prefill
        if getattr(self.tokenizer, "chat_template", None) is None:
            from dllmrl.errors import ConfigError

            raise ConfigError(f"model '{self.name}' has no chat template; pass --raw to send the prompt as it is")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + prefill

    def encode(self, texts: Sequence[str], device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Rendered texts -> left-padded (B, L) ids and attention mask."""
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        ids, attn = left_pad(rows, self.pad_id if self.pad_id is not None else self.mask_id)
        dev = device if device is not None else self.device
        return ids.to(dev), attn.to(dev)

    def decode_completion(self, ids: Sequence[int] | Tensor) -> str:
        """Completion ids -> text, cut at the first EOS / end-of-turn token."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
        for j, tok in enumerate(ids):
            if tok in self.eos_ids:
                ids = ids[:j]
                break
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """One display string per id (for the live unmasking view)."""
        return [self.tokenizer.decode([int(i)], skip_special_tokens=False) for i in ids]
