"""The batched masked-diffusion sampler (LLaDA semantics), shared by sample, eval and train.

    traj = sample(adapter, prompt_ids, attention_mask, SamplerConfig(gen_len=64, steps=32))

It follows LLaDA's semi-autoregressive low-confidence remasking; the numbered comments below are its steps.
Everything is vectorised over the batch; the per-step work beyond the forward pass is
limited to the current block (Gumbel noise, softmax, top-k) and a (B, block, V) slice.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl.config import SamplerConfig
from dllmrl.sampling.keepers import FixedSteps, GreedyKeeper
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.trajectory import StepEvent, Trajectory

log = logging.getLogger(__name__)


def transfer_schedule(masked: Tensor, steps: int) -> Tensor:
    """(B,) masked counts -> (B, steps) tokens to reveal per step: n // s, plus one for the first n % s steps."""
    base = (masked // steps).unsqueeze(1)
    extra = (torch.arange(steps, device=masked.device).unsqueeze(0) < (masked % steps).unsqueeze(1)).long()
    return base + extra


def policy_logits(
    model: ModelAdapter, x: Tensor, attention_mask: Tensor, *, cfg_scale: float = 0.0, prompt_mask: Tensor | None = None
) -> Tensor:
    """(B, L) state -> (B, L, V) logits with classifier-free guidance and the mask token excluded.

    The trainer calls this too, so rollout and update score tokens the same way.
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


def gumbel_argmax(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Candidate tokens: argmax of exp(logits) / (-log U) ** temperature, in float64 (low precision hurts, arXiv:2409.02908).

    Computed as its logarithm, logits - temperature * log(-log U): the same argmax without the
    exp and the power over the vocabulary (and without exp overflowing above logit 709).
    """
    if temperature == 0:
        return logits.argmax(-1)
    l64 = logits.to(torch.float64)
    u = torch.rand(l64.shape, generator=generator, device=l64.device, dtype=torch.float64)
    return (l64 - temperature * torch.log(-torch.log(u))).argmax(-1)


def entropy_and_logp(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(..., V) logits, (...) tokens -> entropy and log p of the tokens under the un-tempered softmax."""
    logp = F.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    ent = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
    return ent, torch.gather(logp, -1, tokens.unsqueeze(-1)).squeeze(-1)


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
            # 2. One forward over the whole batch (two with CFG).
            logits = policy_logits(model, x, attn, cfg_scale=cfg.cfg_scale, prompt_mask=prompt_mask)  # (B, L, V)
            nfe += 1
            if guide is not None:
                logits = guide(logits, x, attn, P)
            lb = logits[:, lo:hi]  # (B, Lb, V): only the current block can be revealed
            # Noise, softmax and top-k only matter at the block's still-masked positions: gather them.
            m_rows, m_cols = masked.nonzero(as_tuple=True)  # (N,) each
            lm = lb[m_rows, m_cols]  # (N, V)
            # 3. Candidates.
            cand = gumbel_argmax(lm, cfg.temperature, generator)  # (N,)
            x0 = x[:, lo:hi].clone()  # (B, Lb); unmasked positions keep their token
            x0[m_rows, m_cols] = cand
            # 4. Confidence; positions not masked get -inf (positions beyond the block are not in lb).
            conf = torch.full(masked.shape, float("-inf"), dtype=torch.float64, device=device)
            if cfg.remasking == "low_confidence":
                l64 = lm.to(torch.float64)  # p(x0) = softmax in float64, as LLaDA
                chosen = torch.gather(l64, 1, cand.unsqueeze(1)).squeeze(1)
                conf[m_rows, m_cols] = torch.exp(chosen - torch.logsumexp(l64, -1))
            else:
                rand = torch.rand(masked.shape, generator=generator, device=device, dtype=torch.float64)
                conf = torch.where(masked, rand, conf)
            k = torch.minimum(schedule[:, i], masked.sum(1))  # (B,)
            order = conf.argsort(dim=1, descending=True)  # (B, Lb)
            take = torch.arange(masked.shape[1], device=device).unsqueeze(0) < k.unsqueeze(1)
            transfer = torch.zeros_like(masked).scatter(1, order, take)  # (B, Lb): top-k per row
            if cfg.decode == "threshold":
                transfer |= masked & (conf >= cfg.threshold)

            # 5. Trajectory record: entropy and log p of the revealed tokens (un-tempered softmax),
            # computed at the revealed positions only.
            t_rows, t_cols = transfer.nonzero(as_tuple=True)  # (M,) each
            ent, tok_logp = entropy_and_logp(lb[t_rows, t_cols], x0[t_rows, t_cols])  # (M,) each
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
                # One-shot completion from the state before step t: argmax at every still-masked position.
                gen = x[:, P:]
                greedy = torch.where(gen == mask_id, logits[:, P:].argmax(-1), gen)  # (B, G)
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
