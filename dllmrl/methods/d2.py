"""d2-StepMerge: the trajectory likelihood from N groups of consecutive denoising steps (Wang et al.,
"d2: Improved Techniques for Training Reasoning Diffusion Language Models", arXiv 2509.21474; public code
github.com/kuleshov-group/d2, ``diffu-grpo/diffu_grpo_trainer.py``: the second trainer class, its
``generate`` (segments and trajectory masks), ``_get_per_token_logps``, ``_get_per_token_logps_oldandref``
and ``compute_loss``; run with ``--trainer_name d2-StepMerge --N 8``).

The T denoising steps are cut into N groups at the boundaries s_n = floor(n T / N), n = 0..N
(d2: ``int(n * (steps / N))``). Group n holds steps s_n .. s_{n+1} − 1; its state x_{s_n} is the
state before its first step (``Trajectory.state_before``), and it "reveals" the tokens whose
unmask step falls in it. One forward per group scores exactly those tokens:

    logp_θ(o_l) = log softmax(model(x̃_{s_n}))_l[o_l]     for l revealed in group n

where x̃ is x_{s_n} with each real prompt token masked with probability p (0.15; d2 reuses d1's
prompt masking, one mask per inner iteration). The objective is d1's token-level clipped one on
these per-token log-probabilities, so the N groups together cover every completion token once:

    ρ_l     = exp(logp_θ(o_l) − logp_old(o_l))                (per token; old from right after the rollout)
    loss_n  = N / Σ_i |o_i| · Σ_{i; l in group n, l ≤ EOS_i} ℓ_il
    ℓ_il    = −min(ρ_l A_i, clip(ρ_l, 1 − ε, 1 + ε) A_i) + β KL_l

with A_i = r_i − mean_group(r) (no std), ε = 0.5, per-token k3 KL against the base model, β = 0.04,
and |o_i| the completion up to and including its first EOS. Summed over the N micro-steps of an
inner iteration (and divided by N by gradient accumulation) this is the token mean over the whole
completion. When μ > 1 the old log-probabilities come from N no-grad forwards per inner iteration
right after the rollout (d2 computes them the same way); with μ = 1 the ratio is 1.

    bounds = group_bounds(total_steps=128, n_groups=8)     # tensor([0, 16, 32, ..., 128])
    group = step_groups(traj.unmask_step, bounds)          # (B, L) group of each revealed position, -1 prompt
    loss, metrics = d2_group_loss(new, old, adv, group[:, P:] == n, comp, n_groups, eps, eps_high, kl=kl)

Tests: tests/test_methods_baselines.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl.methods.losses import clipped_surrogate
from dllmrl.methods.logp import prompt_positions
from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.sampler import policy_logits
from dllmrl.sampling.trajectory import Trajectory


def group_bounds(total_steps: int, n_groups: int) -> Tensor:
    """(N + 1,) step boundaries floor(n T / N): group n holds steps [s_n, s_{n+1})."""
    n = torch.arange(n_groups + 1)
    return (n * total_steps) // n_groups


def step_groups(unmask_step: Tensor, bounds: Tensor) -> Tensor:
    """(B, L) unmask steps (-1 for the prompt) -> (B, L) the group that revealed each position, -1 for the prompt."""
    b = bounds.to(unmask_step.device)
    group = torch.bucketize(unmask_step, b[1:], right=True)  # s_n <= step < s_{n+1} -> n
    return torch.where(unmask_step >= 0, group, torch.full_like(group, -1))


def group_input(traj: Trajectory, start: int, drop: Tensor, mask_id: int) -> Tensor:
    """(B, L) the state before step ``start`` with the prompt tokens where ``drop`` (B, L) masked."""
    x = traj.state_before(start, mask_id)
    return torch.where(drop & prompt_positions(traj), torch.full_like(x, mask_id), x)


def group_token_logp(model: ModelAdapter, traj: Trajectory, start: int, drop: Tensor, *, cfg_scale: float = 0.0,
                     full: bool = False) -> tuple[Tensor, Tensor | None]:
    """(B, G) log p of every completion token from one forward at :func:`group_input` (only the group's
    tokens are used); with ``full`` also the (B, G, V) log-probabilities for the exact KL."""
    x = group_input(traj, start, drop, model.mask_id)
    logits = policy_logits(model, x, traj.attention_mask, cfg_scale=cfg_scale, prompt_mask=prompt_positions(traj))
    comp = logits[:, traj.prompt_len:].float()  # (B, G, V)
    target = traj.completion_ids
    tok = -F.cross_entropy(comp.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
    return tok, (F.log_softmax(comp, -1) if full else None)


def d2_group_loss(logp_new: Tensor, logp_old: Tensor, adv: Tensor, in_group: Tensor, comp: Tensor, n_groups: int,
                  epsilon: float, epsilon_high: float, *, beta: float = 0.0,
                  kl: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """One group's micro-step: (B, G) per-token log-probabilities (new, old), (B,) advantages, (B, G) bool
    tokens revealed in the group, (B, G) bool completion mask
    -> N · Σ_{group ∩ completion} per-token loss / Σ |o|."""
    surr, ratio, clipped = clipped_surrogate(logp_new, logp_old.detach(), adv.unsqueeze(1), epsilon, epsilon_high)
    per = surr + beta * kl if (kl is not None and beta > 0) else surr  # (B, G)
    m = (in_group & comp).to(per.dtype)
    loss = (per * m).sum() * n_groups / comp.sum().clamp(min=1)
    with torch.no_grad():
        count = m.sum().clamp(min=1)
        metrics = {
            "clip_ratio": (clipped.to(m.dtype) * m).sum() / count,
            "ratio": (ratio.detach() * m).sum() / count,
            "kl": (kl.detach() * m).sum() / count if kl is not None else torch.zeros(()),
            "group_tokens": m.sum(1).mean(),
        }
    return loss, metrics
