"""The batched masked-diffusion sampler (LLaDA semantics), shared by sample, eval and train.

    traj = sample(adapter, prompt_ids, attention_mask, SamplerConfig(gen_len=64, steps=32))

It follows LLaDA's semi-autoregressive low-confidence remasking; the numbered comments below are its steps. Everything is vectorised over
the batch. The forward stops before the LM head: the head runs only at the current block's
still-masked positions (and, at the steps whose one-shot greedy completion is kept, at every
masked position of the rows that keep it), in chunks of rows, so no (B, L, V) tensor exists;
the per-position float64 work (Gumbel noise, softmax, confidence) is chunked the same way.
With ``--cache prefix|dual`` (native LLaDA and Dream) a block's later steps compute only a
window of positions against Fast-dLLM's key/value cache, refreshed at every block start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl.config import SamplerConfig
from dllmrl.errors import ConfigError
from dllmrl.models.layers import KVCache
from dllmrl.sampling.keepers import FixedSteps, GreedyKeeper
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.trajectory import StepEvent, Trajectory

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 20
"""Logits per chunk of rows in the per-position work (1M: 8 MB in float64). The work on one chunk
peaks at about 20 bytes a logit (the float32 logits, the float64 noise, then logsumexp's float64
copy), so a chunk costs about 20 MB whatever the vocabulary; at a small vocabulary a chunk holds
every row anyway."""


def transfer_schedule(masked: Tensor, steps: int) -> Tensor:
    """(B,) masked counts -> (B, steps) tokens to reveal per step: n // s, plus one for the first n % s steps."""
    base = (masked // steps).unsqueeze(1)
    extra = (torch.arange(steps, device=masked.device).unsqueeze(0) < (masked % steps).unsqueeze(1)).long()
    return base + extra


def policy_logits(
    model: ModelAdapter, x: Tensor, attention_mask: Tensor, *, cfg_scale: float = 0.0, prompt_mask: Tensor | None = None
) -> Tensor:
    """(B, L) state -> (B, L, V) logits with classifier-free guidance and the mask token excluded.

    Every position gets the head; the sampler and the trainer use :func:`policy_hidden` and
    :func:`policy_logits_at` instead, which give the same logits at the positions they need.
    """
    if cfg_scale > 0:
        if prompt_mask is None:
            raise ValueError("cfg_scale > 0 needs prompt_mask")
        un_x = torch.where(prompt_mask.bool(), torch.full_like(x, model.mask_id), x)
        both = model.logits(torch.cat([x, un_x]), torch.cat([attention_mask, attention_mask]))
        cond, un = both.chunk(2)
        logits = un + (cfg_scale + 1) * (cond - un)
    else:
        logits = model.logits(x, attention_mask)
    # 3. The mask token is never a candidate (young models do predict it).
    logits[..., model.mask_id] = float("-inf")
    return logits


@dataclass(frozen=True)
class PolicyHidden:
    """The hidden states of one policy evaluation, before the LM head (see :func:`policy_hidden`)."""

    cond: Tensor
    """(B, W, d) hidden states of positions offset .. offset + W."""
    uncond: Tensor | None
    """(B, W, d) the same with the prompt masked (classifier-free guidance), else None."""
    cfg_scale: float = 0.0
    offset: int = 0
    """Sequence position of column 0 (a cached forward computes a window only)."""


def policy_hidden(
    model: ModelAdapter, x: Tensor, attention_mask: Tensor, *, cfg_scale: float = 0.0, prompt_mask: Tensor | None = None,
    cache: KVCache | None = None, window: tuple[int, int] | None = None,
) -> PolicyHidden:
    """(B, L) state -> hidden states; ``policy_logits_at`` turns any positions of them into :func:`policy_logits`'s logits.

    With ``cache``: no window fills it; a window computes only those positions (``ModelAdapter.hidden``).
    """
    offset = window[0] if window is not None else 0
    if cfg_scale <= 0:
        return PolicyHidden(model.hidden(x, attention_mask, cache=cache, window=window), None, offset=offset)
    if prompt_mask is None:
        raise ValueError("cfg_scale > 0 needs prompt_mask")
    un_x = torch.where(prompt_mask.bool(), torch.full_like(x, model.mask_id), x)
    both = model.hidden(torch.cat([x, un_x]), torch.cat([attention_mask, attention_mask]), cache=cache, window=window)
    cond, un = both.chunk(2)
    return PolicyHidden(cond, un, cfg_scale, offset)


def policy_logits_at(model: ModelAdapter, ph: PolicyHidden, rows: Tensor, cols: Tensor) -> Tensor:
    """(N,) rows and sequence positions -> (N, V) logits there: guidance combined, mask token excluded."""
    c = cols - ph.offset
    logits = model.head(ph.cond[rows, c])
    if ph.uncond is not None:
        un = model.head(ph.uncond[rows, c])
        logits = un + (ph.cfg_scale + 1) * (logits - un)
    logits[:, model.mask_id] = float("-inf")
    return logits


def row_chunks(n: int, vocab: int) -> list[slice]:
    """Slices of n rows with about CHUNK_ELEMENTS logits each, so no (n, V) float64 tensor is ever whole."""
    size = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def gumbel_argmax(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Candidate tokens: argmax of exp(logits) / (-log U) ** temperature, in float64 (low precision hurts, arXiv:2409.02908).

    Computed as its logarithm, logits - temperature * log(-log U): the same argmax without the
    exp and the power over the vocabulary (and without exp overflowing above logit 709). Everything
    happens in the noise tensor, the one (N, V) float64 tensor: -noise + logits (the float32 logits
    promoted exactly) is the same number as logits - noise.
    """
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
    noise = u.log_().neg_().log_().mul_(temperature)  # temperature * log(-log U)
    return noise.neg_().add_(logits).argmax(-1)


def entropy_and_logp(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(..., V) logits, (...) tokens -> entropy and log p of the tokens under the un-tempered softmax.

    Without autograd, p * log p is formed in p's own storage (the same numbers, one (..., V)
    tensor fewer); with it, out of place.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    tok_logp = torch.gather(logp, -1, tokens.unsqueeze(-1)).squeeze(-1)
    p = logp.exp()
    if torch.is_grad_enabled() and logp.requires_grad:
        ent = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
    else:
        vanish = ~(p > 0)  # p = 0 has log p = -inf; its term counts 0, not 0 * -inf
        ent = -p.mul_(logp).masked_fill_(vanish, 0.0).sum(-1)
    return ent, tok_logp


def _make_cache(model: ModelAdapter, cfg: SamplerConfig, guide: object) -> KVCache | None:
    if cfg.cache == "none":
        return None
    if not model.supports_cache:
        raise ConfigError(f"--cache {cfg.cache}: the '{model.family}' model has no key-value cache (only dllmrl's "
                          "native LLaDA and Dream have one); use --cache none")
    if guide is not None:
        raise ConfigError(f"--cache {cfg.cache} does not combine with reward guidance, which needs every "
                          "position's logits at each step; use --cache none")
    return KVCache()


LogitsAt = Callable[[Tensor, Tensor], Tensor]
"""(N,) rows, (N,) sequence positions -> (N, V) policy logits there."""


def _step_logits(model: ModelAdapter, x: Tensor, attn: Tensor, prompt_mask: Tensor, cfg_scale: float,
                 guide: Callable[[Tensor, Tensor, Tensor, int], Tensor] | None, prompt_len: int,
                 cache: KVCache | None = None, window: tuple[int, int] | None = None) -> LogitsAt:
    """One policy evaluation of state x, as a function giving the logits at any positions (of the window, if one).

    Reward guidance adjusts the logits of the whole generation region, so with a guide the head
    runs everywhere; otherwise only at the positions asked for.
    """
    if guide is not None:
        logits = guide(policy_logits(model, x, attn, cfg_scale=cfg_scale, prompt_mask=prompt_mask), x, attn, prompt_len)
        return lambda rows, cols: logits[rows, cols]
    ph = policy_hidden(model, x, attn, cfg_scale=cfg_scale, prompt_mask=prompt_mask, cache=cache, window=window)
    return lambda rows, cols: policy_logits_at(model, ph, rows, cols)


def _cache_window(cfg: SamplerConfig, step_in_block: int, lo: int, hi: int, length: int) -> tuple[int, int] | None:
    """The positions a cached step computes; None: a full forward that refreshes the cache."""
    refresh = step_in_block == 0 or (cfg.cache_refresh > 0 and step_in_block % cfg.cache_refresh == 0)
    if refresh:
        return None
    return (lo, hi) if cfg.cache == "dual" else (lo, length)


def masked_stats(at: LogitsAt, rows: Tensor, cols: Tensor, temperature: float, want_conf: bool,
                 generator: torch.Generator | None, vocab: int) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """At N positions: candidate (N,), its float64 probability (N,) when ``want_conf``, and the un-tempered
    entropy and log p of the candidate (N,) each; chunk by chunk, drawing the noise in position order."""
    parts: list[tuple[Tensor, Tensor | None, Tensor, Tensor]] = []
    for sl in row_chunks(rows.numel(), vocab):
        lm = at(rows[sl], cols[sl])  # (n, V)
        cand = gumbel_argmax(lm, temperature, generator)
        conf = None
        if want_conf:  # p(x0) = softmax in float64, as LLaDA (the float32 logit converts exactly)
            l_cand = torch.gather(lm, 1, cand.unsqueeze(1)).squeeze(1).to(torch.float64)
            conf = torch.exp(l_cand - torch.logsumexp(lm.to(torch.float64), -1))
        parts.append((cand, conf, *entropy_and_logp(lm, cand)))
        del lm  # before the next chunk's logits
    cand, conf, ent, logp = zip(*parts)
    return torch.cat(cand), (torch.cat(conf) if want_conf else None), torch.cat(ent), torch.cat(logp)


def argmax_at(at: LogitsAt, rows: Tensor, cols: Tensor, vocab: int) -> Tensor:
    """(N,) argmax of the policy logits at N positions, chunk by chunk."""
    if rows.numel() == 0:
        return rows.new_zeros(0)
    return torch.cat([at(rows[sl], cols[sl]).argmax(-1) for sl in row_chunks(rows.numel(), vocab)])


@torch.no_grad()
def sample(
    model: ModelAdapter,
    prompt_ids: Tensor,
    attention_mask: Tensor,
    cfg: SamplerConfig,
    *,
    generator: torch.Generator | None = None,
    greedy_at: Sequence[int] | Tensor | GreedyKeeper = (),
    on_step: Callable[[StepEvent], None] | None = None,
    guide: Callable[[Tensor, Tensor, Tensor, int], Tensor] | None = None,
) -> Trajectory:
    """Denoise ``cfg.gen_len`` masked positions after each (left-padded) prompt; return the trajectory.

    ``guide(logits, x, attention_mask, prompt_len) -> logits`` may adjust the logits of each step before
    candidates are chosen (reward guidance, dllmrl.sampling.guidance).
    """
    device = prompt_ids.device
    B, P = prompt_ids.shape
    G, T = cfg.gen_len, cfg.steps
    spb = cfg.steps_per_block
    mask_id = model.mask_id
    keeper: GreedyKeeper = greedy_at if hasattr(greedy_at, "wants") else FixedSteps(greedy_at)  # type: ignore[arg-type]
    keeper.start(B, G, device)
    eos = torch.tensor(sorted(model.eos_ids), dtype=torch.long, device=device)
    vocab = model.vocab_size
    cache = _make_cache(model, cfg, guide)

    # 1. x = prompt ++ [MASK] * gen_len
    x = torch.cat([prompt_ids, torch.full((B, G), mask_id, dtype=torch.long, device=device)], 1)  # (B, L)
    attn = torch.cat([attention_mask.long(), torch.ones((B, G), dtype=torch.long, device=device)], 1)
    prompt_mask = torch.cat([attention_mask.bool(), torch.zeros((B, G), dtype=torch.bool, device=device)], 1)
    unmask_step = torch.full_like(x, -1)
    step_entropy = torch.full((B, T), float("-inf"), device=device)
    step_logp = torch.zeros((B, T), device=device)
    step_count = torch.zeros((B, T), dtype=torch.long, device=device)
    step_non_eos = torch.zeros((B, T), dtype=torch.bool, device=device)
    nfe = 0

    for b in range(cfg.num_blocks):
        lo, hi = P + b * cfg.block_len, P + (b + 1) * cfg.block_len
        schedule = transfer_schedule((x[:, lo:hi] == mask_id).sum(1), spb)  # (B, spb)
        for i in range(spb):
            t = b * spb + i
            masked = x[:, lo:hi] == mask_id  # (B, Lb)
            if not bool(masked.any()):
                break  # threshold decoding finished this block early
            # 2. One forward over the whole batch (two with CFG); the head comes later, where it is needed.
            window = _cache_window(cfg, i, lo, hi, x.shape[1]) if cache is not None else None
            model.begin_step(generator)
            at = _step_logits(model, x, attn, prompt_mask, cfg.cfg_scale, guide, P, cache, window)
            nfe += 1
            # 3. Candidates, and 4. their confidence, at the block's still-masked positions only.
            m_rows, m_cols = masked.nonzero(as_tuple=True)  # (N,) each
            cand, conf_m, ent_m, logp_m = masked_stats(
                at, m_rows, m_cols + lo, cfg.temperature, cfg.remasking == "low_confidence", generator, vocab
            )
            x0 = x[:, lo:hi].clone()  # (B, Lb); unmasked positions keep their token
            x0[m_rows, m_cols] = cand
            # Positions not masked get -inf (positions beyond the block are not candidates).
            conf = torch.full(masked.shape, float("-inf"), dtype=torch.float64, device=device)
            if cfg.remasking == "low_confidence":
                conf[m_rows, m_cols] = conf_m
            else:
                rand = torch.rand(masked.shape, generator=generator, device=device, dtype=torch.float64)
                conf = torch.where(masked, rand, conf)
            k = torch.minimum(schedule[:, i], masked.sum(1))  # (B,)
            order = conf.argsort(dim=1, descending=True)  # (B, Lb)
            take = torch.arange(masked.shape[1], device=device).unsqueeze(0) < k.unsqueeze(1)
            transfer = torch.zeros_like(masked).scatter(1, order, take)  # (B, Lb): top-k per row
            if cfg.decode == "threshold":
                transfer |= masked & (conf >= cfg.threshold)

            # 5. Trajectory record: entropy and log p of the revealed tokens (un-tempered softmax);
            # revealed positions are masked ones, whose numbers masked_stats computed.
            t_rows, t_cols = transfer.nonzero(as_tuple=True)  # (M,) each
            where_m = torch.full(masked.shape, -1, dtype=torch.long, device=device)
            where_m[m_rows, m_cols] = torch.arange(m_rows.numel(), device=device)
            t_idx = where_m[t_rows, t_cols]  # (M,) index into the masked positions
            ent, tok_logp = ent_m[t_idx], logp_m[t_idx]
            count = transfer.sum(1)
            step_count[:, t] = count
            step_logp[:, t] = torch.zeros(B, device=device).index_add(0, t_rows, tok_logp)
            ent_sum = torch.zeros(B, device=device).index_add(0, t_rows, ent)
            step_entropy[:, t] = torch.where(
                count > 0, ent_sum / count.clamp(min=1), torch.full_like(ent_sum, float("-inf"))
            )
            step_non_eos[:, t] = (transfer & ~torch.isin(x0, eos)).any(1)
            need = keeper.wants(t, step_entropy[:, t], step_non_eos[:, t])
            greedy = None
            if bool(need.any()):
                # One-shot completion from the state before step t: argmax at every still-masked position
                # of the rows that keep it (the keeper drops the other rows' completions unread).
                gen = x[:, P:]
                g_rows, g_cols = ((gen == mask_id) & need.unsqueeze(1)).nonzero(as_tuple=True)
                greedy = gen.clone()  # (B, G)
                if window is not None and window[1] < x.shape[1]:  # the dual cache computed the block alone
                    at = _step_logits(model, x, attn, prompt_mask, cfg.cfg_scale, guide, P)
                    nfe += 1
                greedy[g_rows, g_cols] = argmax_at(at, g_rows, g_cols + P, vocab)
            keeper.update(t, step_entropy[:, t], step_non_eos[:, t], greedy)

            block = x[:, lo:hi]
            x[:, lo:hi] = torch.where(transfer, x0, block)
            unmask_step[:, lo:hi] = torch.where(transfer, torch.full_like(block, t), unmask_step[:, lo:hi])
            if on_step is not None:
                revealed = torch.zeros_like(x, dtype=torch.bool)
                revealed[:, lo:hi] = transfer
                on_step(StepEvent(step=t, block=b, tokens=x, revealed=revealed, prompt_len=P, total_steps=T))
    g_steps, g_tokens = keeper.result()
    return Trajectory(
        tokens=x, attention_mask=attn, prompt_len=P, unmask_step=unmask_step, step_entropy=step_entropy,
        step_logp=step_logp, step_count=step_count, step_non_eos=step_non_eos,
        greedy_steps=g_steps, greedy_tokens=g_tokens, nfe=nfe,
    )
