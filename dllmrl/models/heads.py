"""Each family's forward split in two: the trunk (ids -> final hidden states) and the LM head.

The sampler and the trainer need logits at a few positions only (a block's still-masked
positions, the tokens revealed at one step, SFT's masked positions). Applying the head there,
after gathering the hidden states, is what keeps a 126k-wide vocabulary from costing a
(B, L, V) tensor per forward. Each split computes exactly what the family's own forward
computes, in the same order, so the logits at a position are the same numbers.

A family without a split here is run whole: its "hidden states" are its logits and its head
is the identity, which is correct, only not cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dllmrl.models.layers import KVCache

Trunk = Callable[[Any, Tensor, "Tensor | None", "Tensor | None"], Tensor]
"""(model, ids (B, L), attention mask or None, position ids or None) -> (B, L, d) final hidden states."""
Head = Callable[[Any, Tensor], Tensor]
"""(model, (..., d) hidden states) -> (..., V) logits."""
CachedTrunk = Callable[[Any, Tensor, "Tensor | None", Tensor, KVCache], Tensor]
"""(model, ids of the positions computed, whole attention mask or None, their positions, cache) -> hidden states."""


@dataclass(frozen=True)
class HeadSplit:
    trunk: Trunk
    head: Head
    cached_trunk: CachedTrunk | None = None
    """The trunk with a Fast-dLLM key/value cache (see layers.KVCache); None: the family has none."""


def _modernbert_trunk(m, ids, attn, pos):
    return m.model(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state


def _bert_trunk(m, ids, attn, pos):
    return m.bert(input_ids=ids, attention_mask=attn, position_ids=pos, return_dict=True).last_hidden_state


def _gemma3_trunk(m, ids, attn, pos):
    return m.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).last_hidden_state


def _gemma3_head(m, h):
    logits = m.lm_head(h)
    cap = m.config.final_logit_softcapping
    if cap is not None:  # as Gemma3ForCausalLM: cap * tanh(logits / cap)
        logits = torch.tanh(logits / cap) * cap
    return logits


def _native_trunk(m, ids, attn, pos):
    return m.hidden_states(ids, attn, pos)[0]


def _native_cached_trunk(m, ids, attn, pos, cache):
    return m.hidden_states(ids, attn, pos, kv_cache=cache)[0]


def _native_head(m, h):
    return m.head_logits(h)


def _whole_trunk(m, ids, attn, pos):
    kwargs = {} if attn is None else {"attention_mask": attn}
    if pos is not None:
        kwargs["position_ids"] = pos
    return m(input_ids=ids, **kwargs).logits


WHOLE = HeadSplit(trunk=_whole_trunk, head=lambda _m, h: h)
"""A family run whole: the logits stand in for the hidden states."""

HEAD_SPLITS: dict[str, HeadSplit] = {
    "modernbert": HeadSplit(_modernbert_trunk, lambda m, h: m.decoder(m.head(h))),
    "bert": HeadSplit(_bert_trunk, lambda m, h: m.cls(h)),
    "gemma3_text": HeadSplit(_gemma3_trunk, _gemma3_head),
    "llada": HeadSplit(_native_trunk, _native_head, _native_cached_trunk),
    "dream": HeadSplit(_native_trunk, _native_head, _native_cached_trunk),
}
"""By ``ModelAdapter.family``; families not listed use ``WHOLE``."""
