"""Computations that dllmrl's native LLaDA (``llada.py``) and Dream (``dream.py``) share.

Only what is the same computation in both architectures lives here: RMSNorm, rotary
embeddings, the padding mask and positions for scaled_dot_product_attention, bidirectional
grouped-query attention, the gated MLP, the layer loop, and the refusal of unsupported
configurations. The modules that hold parameters are built in each model file under the
published names (``model.layers.0.self_attn.q_proj``, ``model.transformer.blocks.0.q_proj``, ...);
``RMSNorm`` is the one module here, and its only parameter is ``weight``, as published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dllmrl.errors import ModelLoadError


def refuse_unsupported(family: str, bad: list[str]) -> None:
    """Raise ModelLoadError naming every unsupported setting in ``bad`` (nothing when it is empty)."""
    if bad:
        raise ModelLoadError(
            f"this {family} configuration is not one dllmrl implements: " + "; ".join(bad)
            + ". Pass --trust-remote-code to run the repository's own code instead"
        )


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, scaled by the weight in the input's dtype.

    The class name keeps "RMSNorm": transformers' default weight init recognises norms by it.
    """

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_cos_sin(
    position_ids: Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """(B, L) positions -> cos, sin of shape (B, 1, L, head_dim), halves repeated.

    Computed in float32 (autocast off) and returned in ``dtype``.
    """
    with torch.autocast(position_ids.device.type, enabled=False):
        exponents = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float) / head_dim
        inv_freq = 1.0 / (theta**exponents)  # (D/2,)
        freqs = position_ids.float().unsqueeze(-1) * inv_freq  # (B, L, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (B, L, D)
        return emb.cos().unsqueeze(1).to(dtype), emb.sin().unsqueeze(1).to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, L, D) by the angles in cos/sin (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def sdpa_mask(attention_mask: Tensor | str | None, dtype: torch.dtype) -> Tensor | None:
    """Turn a user attention mask into what scaled_dot_product_attention takes (None: attend everywhere).

    A 2D (B, L) padding mask becomes a (B, 1, 1, L) boolean key mask: padded keys are excluded
    for every query, and padded queries still see the real keys, so no row is all -inf (no NaNs).
    A 4D mask is used as given (boolean: True = attend; floating: added to the scores), which
    keeps code written for the published models (Dream's generate passes a 4D mask or "full") working.
    """
    if attention_mask is None or isinstance(attention_mask, str):
        return None
    if attention_mask.dim() == 2:
        if bool(attention_mask.all()):
            return None  # no padding: leaves SDPA free to pick the flash kernel
        return attention_mask.bool()[:, None, None, :]
    if attention_mask.dim() == 4:
        return attention_mask.to(dtype) if attention_mask.is_floating_point() else attention_mask.bool()
    raise ValueError(f"attention_mask must be (B, L) or (B, 1, L, L), got shape {tuple(attention_mask.shape)}")


def positions_from_mask(attention_mask: Tensor | str | None, batch: int, length: int, device) -> Tensor:
    """(B, L) rotary positions: counted over real tokens only, so left padding does not shift them."""
    if isinstance(attention_mask, Tensor) and attention_mask.dim() == 2:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return torch.arange(length, device=device).unsqueeze(0).expand(batch, length)


class KVCache:
    """Every layer's keys and values from one full forward: Fast-dLLM's block cache.

    ``fill()`` before a full forward makes each layer store its (rotated) keys and values for the
    whole sequence. ``window(start, end)`` before a forward of positions start..end-1 only makes
    each layer attend to its fresh keys/values there and to the stored ones everywhere else: the
    prefix before the block, and (dual cache) the suffix after it. Padded keys stay excluded by the
    attention mask over the whole sequence, and rotary positions are those of the whole sequence.
    """

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.filling = False
        self.start, self.end = 0, 0

    def fill(self) -> None:
        self.keys, self.values, self.filling = [], [], True

    def window(self, start: int, end: int) -> None:
        if not self.keys:
            raise ValueError("KVCache.window before any fill(): run a full forward first")
        self.filling, self.start, self.end = False, start, end

    def use(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """This layer's fresh (B, Hkv, W, D) keys/values -> the (B, Hkv, L, D) ones to attend to."""
        if self.filling:
            self.keys.append(k)
            self.values.append(v)
            return k, v
        ck, cv, s, e = self.keys[layer], self.values[layer], self.start, self.end
        return torch.cat([ck[:, :, :s], k, ck[:, :, e:]], 2), torch.cat([cv[:, :, :s], v, cv[:, :, e:]], 2)


def split_heads(x: Tensor, n_heads: int, head_dim: int) -> Tensor:
    """(B, L, n_heads * head_dim) -> (B, n_heads, L, head_dim)."""
    B, L, _ = x.shape
    return x.view(B, L, n_heads, head_dim).transpose(1, 2)


def attend(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float) -> Tensor:
    """Bidirectional attention: q (B, H, L, D), k and v (B, Hkv, L, D) -> (B, L, H * D).

    Grouped-query attention: each kv head serves H / Hkv query heads.
    """
    B, n_heads, L, _ = q.shape
    n_kv_heads = k.shape[1]
    if n_kv_heads != n_heads:
        k = k.repeat_interleave(n_heads // n_kv_heads, dim=1)
        v = v.repeat_interleave(n_heads // n_kv_heads, dim=1)
    att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=False)
    return att.transpose(1, 2).reshape(B, L, -1)


def gated_mlp(x: Tensor, gate: nn.Module, up: nn.Module, down: nn.Module, act: Callable[[Tensor], Tensor]) -> Tensor:
    """The SiLU-gated ("SwiGLU") MLP: down(act(gate(x)) * up(x))."""
    return down(act(gate(x)) * up(x))


def run_layers(
    layers: Iterable[nn.Module],
    norm: nn.Module,
    x: Tensor,
    attn_mask: Tensor | None,
    cos: Tensor,
    sin: Tensor,
    output_hidden_states: bool | None,
    kv_cache: KVCache | None = None,
) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """Every layer, then the final norm: (normed hidden states, all hidden states or None).

    The hidden states collected are each layer's input and the final norm's output, as transformers does.
    """
    hidden: list[Tensor] = []
    for i, layer in enumerate(layers):
        if output_hidden_states:
            hidden.append(x)
        if kv_cache is None:
            x = layer(x, attn_mask, cos, sin)  # hidden states positional: needed by gradient checkpointing
        else:
            x = layer(x, attn_mask, cos, sin, (kv_cache, i))
    x = norm(x)
    if output_hidden_states:
        hidden.append(x)
    return x, tuple(hidden) if output_hidden_states else None
