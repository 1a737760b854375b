"""The model adapter: the one place that knows how a model family differs.

Mask token id, shifted logits (Dream predicts position i+1 at i), whether the forward
takes an attention mask, EOS ids, the chat template and LoRA target modules. The
sampler and the trainer only ever call ``adapter.logits``.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)



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
        """(B, L) ids -> (B, L, V) logits aligned so that logits[:, i] predicts token i."""
        kwargs: dict[str, Any] = {}
        if attention_mask is not None and self.supports_attention_mask and not bool(attention_mask.all()):
            kwargs["attention_mask"] = attention_mask
            if self._takes_position_ids():
                # Left padding must not move the real tokens' rotary positions.
                kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, **kwargs).logits  # (B, L, V)
        if self.shift_logits:
            out = torch.cat([out[:, :1], out[:, :-1]], dim=1)
        return out

    def _takes_position_ids(self) -> bool:
        if self._accepts_position_ids is None:
            base = getattr(self.model, "get_base_model", lambda: self.model)()
            self._accepts_position_ids = "position_ids" in inspect.signature(base.forward).parameters
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
