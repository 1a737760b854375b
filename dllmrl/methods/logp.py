"""Log-probabilities of a rollout's actions under the current (or reference) policy.

EGSPO step 5: the action at denoising step t is the set of tokens revealed there, and

    logp_θ(t) = Σ_{i revealed at t} log softmax(model(x_t))_i[token_i]     (sum; 'mean' divides by their number)

``microstep_logp`` does this for one selected step per sequence, for the whole batch in ONE
forward: each row's state x_t is rebuilt from the trajectory (rows sit at different steps), and
the LM head and the log-softmax are applied only at the revealed positions, never over every
position and the whole vocabulary. ``microstep_logp_per_sample`` is the same computation one row at a time (the
reference's loop), kept for tests and ``dllmrl bench``.

``completion_token_logp`` is diffu-GRPO's: the completion fully masked, prompt tokens masked at
random, per-token log-probabilities of the completion in one forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.sampler import policy_hidden, policy_logits_at
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.methods.losses import exact_kl


@dataclass(frozen=True)
class StepLogp:
    logp: Tensor
    """(B,) aggregated log-probability of the tokens revealed at each row's step (0 where none)."""
    count: Tensor
    """(B,) number of tokens revealed there."""
    logprobs: Tensor | None = None
    """(N, V) full log-probabilities at the revealed positions (only with ``full=True``, for the exact KL)."""
    rows: Tensor | None = None
    """(N,) the row of each revealed position."""


def prompt_positions(traj: Trajectory) -> Tensor:
    """(B, L) bool: real prompt tokens (not padding, not generation)."""
    pos = torch.arange(traj.tokens.shape[1], device=traj.tokens.device)
    return (pos < traj.prompt_len).unsqueeze(0) & traj.attention_mask.bool()


def _step_logp(model: ModelAdapter, tokens: Tensor, unmask_step: Tensor, attn: Tensor, prompt_len: int, steps: Tensor,
               *, cfg_scale: float, aggregation: str, full: bool) -> StepLogp:
    B, L = tokens.shape
    steps = steps.to(tokens.device).view(-1, 1)  # (B, 1); -1 = no step in this slot
    x = torch.where(unmask_step < steps, tokens, torch.full_like(tokens, model.mask_id))  # (B, L) state before the step
    prompt_mask = (torch.arange(L, device=tokens.device) < prompt_len).unsqueeze(0) & attn.bool()
    ph = policy_hidden(model, x, attn, cfg_scale=cfg_scale, prompt_mask=prompt_mask)  # (B, L, d): no head yet
    revealed = (unmask_step == steps) & (steps >= 0)  # (B, L)
    rows, cols = revealed.nonzero(as_tuple=True)  # (N,) each
    # The head only at the revealed positions: never a (B, L, V) tensor.
    logprobs = F.log_softmax(policy_logits_at(model, ph, rows, cols).float(), dim=-1)  # (N, V)
    tok = torch.gather(logprobs, 1, tokens[rows, cols].unsqueeze(1)).squeeze(1)  # (N,)
    total = torch.zeros(B, device=tokens.device, dtype=tok.dtype).index_add(0, rows, tok)  # (B,)
    count = torch.zeros(B, device=tokens.device, dtype=tok.dtype).index_add(0, rows, torch.ones_like(tok))
    logp = total / count.clamp(min=1) if aggregation == "mean" else total
    return StepLogp(logp, count, logprobs if full else None, rows if full else None)


def microstep_logp(model: ModelAdapter, traj: Trajectory, steps: Tensor, *, cfg_scale: float = 0.0,
                   aggregation: str = "sum", full: bool = False) -> StepLogp:
    """(B,) one step per row (-1: none) -> log-probabilities of the tokens revealed there; one batched forward."""
    return _step_logp(model, traj.tokens, traj.unmask_step, traj.attention_mask, traj.prompt_len, steps,
                      cfg_scale=cfg_scale, aggregation=aggregation, full=full)


def microstep_logp_per_sample(model: ModelAdapter, traj: Trajectory, steps: Tensor, *, cfg_scale: float = 0.0,
                              aggregation: str = "sum") -> StepLogp:
    """The same as :func:`microstep_logp`, one forward per row (slower; for tests and benchmarks)."""
    outs = [
        _step_logp(model, traj.tokens[b:b + 1], traj.unmask_step[b:b + 1], traj.attention_mask[b:b + 1],
                   traj.prompt_len, steps[b:b + 1], cfg_scale=cfg_scale, aggregation=aggregation, full=False)
        for b in range(traj.batch_size)
    ]
    return StepLogp(torch.cat([o.logp for o in outs]), torch.cat([o.count for o in outs]))


def step_exact_kl(new: StepLogp, ref: StepLogp, batch: int, aggregation: str = "sum") -> Tensor:
    """(B,) exact KL summed (or averaged, with 'mean') over each row's revealed positions."""
    per_pos = exact_kl(new.logprobs, ref.logprobs)  # (N,)
    total = torch.zeros(batch, device=per_pos.device, dtype=per_pos.dtype).index_add(0, new.rows, per_pos)
    return total / new.count.clamp(min=1) if aggregation == "mean" else total


def masked_prompt_state(traj: Trajectory, drop: Tensor, mask_id: int) -> Tensor:
    """(B, L) diffu-GRPO input: completion fully masked, prompt tokens where ``drop`` (B, L) masked."""
    x = torch.where(drop & prompt_positions(traj), torch.full_like(traj.tokens, mask_id), traj.tokens)
    x[:, traj.prompt_len:] = mask_id
    return x


def completion_token_logp(model: ModelAdapter, traj: Trajectory, drop: Tensor, *, cfg_scale: float = 0.0,
                          full: bool = False) -> tuple[Tensor, Tensor | None]:
    """(B, G) log p of each completion token from one forward of :func:`masked_prompt_state`;
    with ``full`` also the (B, G, V) log-probabilities (for the exact KL)."""
    x = masked_prompt_state(traj, drop, model.mask_id)
    ph = policy_hidden(model, x, traj.attention_mask, cfg_scale=cfg_scale, prompt_mask=prompt_positions(traj))
    B, G = traj.completion_ids.shape
    rows = torch.arange(B, device=x.device).repeat_interleave(G)
    cols = torch.arange(traj.prompt_len, traj.prompt_len + G, device=x.device).repeat(B)
    comp = policy_logits_at(model, ph, rows, cols).float().view(B, G, -1)  # (B, G, V): completion positions only
    target = traj.completion_ids  # (B, G)
    tok = -F.cross_entropy(comp.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
    return tok, (F.log_softmax(comp, -1) if full else None)


def draw_prompt_drops(traj: Trajectory, n: int, p: float, generator: torch.Generator | None) -> Tensor:
    """(n, B, L) bool: which prompt tokens each of n inner iterations masks (probability p each)."""
    u = torch.rand((n, *traj.tokens.shape), generator=generator, device=traj.tokens.device)
    return (u < p) & prompt_positions(traj).unsqueeze(0)
