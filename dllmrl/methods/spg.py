"""SPG: sandwiched policy gradient (Wang et al., "SPG: Sandwiched Policy Gradient for Masked Diffusion
Language Models", arXiv 2510.09541; public code github.com/facebookresearch/SPG, ``spg/spg_trainer.py``:
``forward_process`` with ``forward_type=block_random``, ``_get_per_seq_logps`` and ``compute_loss``).

The sequence log-likelihood log π(o_i | c) is intractable; SPG raises a lower bound for samples
with A > 0 and lowers an upper bound for samples with A <= 0:

    A_i    = r_i − mean_group(r)                                          (no std)
    ELBO_i = (1/K) Σ_k  Σ_l m_kl c_l log p_kl / Σ_l m_kl c_l             (mean log p over masked completion tokens)
    t_k    = Σ_l m_kl c_l / Σ_l c_l                       (mask k's masked fraction of the completion)
    u_l    = (1/K) Σ_k m_kl c_l p_kl^β / t_k
    EUBO_i = (1/β) · mean_{l : u_l > 0} log u_l
    logp_i = ELBO_i                              if A_i > 0
           = ω EUBO_i + (1 − ω) ELBO_i           otherwise (ω = 1: 'SPG w/ EUBO'; ω = 0.5: 'SPG w/ Mixture')
    loss   = Σ_i |o_i| (−A_i logp_i) / Σ_i |o_i|

with p_kl = p_θ(o_il | z_k) the model's probability of the true token l under the k-th masked
input z_k, m_kl = 1 where z_k masks position l, c_l = 1 on the completion up to and including
its first EOS, and |o_i| = Σ_l c_l. K = ``--mc-samples`` (2), β = ``--eubo-beta`` (1.5; 1.0 for
Sudoku, 2.0 for Countdown with the pure EUBO), ω = ``--mix-weight`` (0.5). No ratio, no clipping,
no KL (SPG's trainer raises if β_KL != 0); μ = 4 inner iterations with fresh masks.

Block-wise masks, as SPG's ``block_random``: for each mask, a block j of the completion is drawn
(a random permutation of the gen_len / block_len blocks, taken modulo the number of blocks that
hold completion tokens, so the K masks of a sequence differ when they can); blocks before j stay
clean, blocks after j are fully masked, and in block j a uniform number in [1, n] of its n
completion positions is masked at uniformly drawn places (its positions past the EOS stay
masked). Then every token of the prompt AND of the clean earlier blocks is masked with
probability p (``--p-mask-prompt``; SPG's shipped config uses 0.15 although its dataclass default
is 0.3), so those completion tokens count as masked in the bounds as well: that is what SPG's code
does. Positions after the first EOS are always masked (and never scored).

    masks, clean = block_masks(comp_len, gen_len, block_len, k, generator)      # (B, K, gen_len) each
    lo, hi = elbo(token_logp, masked, comp), eubo(token_logp, masked, comp, beta)
    loss, metrics = spg_loss(sandwich_logp(lo, hi, adv, omega), adv, comp.sum(1))

Tests: tests/test_methods_baselines.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl.models.base import ModelAdapter
from dllmrl.sampling.sampler import policy_logits
from dllmrl.sampling.trajectory import Trajectory


# ---------------------------------------------------------------------------------------------- masks
def block_masks(comp_len: Tensor, gen_len: int, block_len: int, k: int,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(B,) completion lengths (>= 1) -> two (B, K, gen_len) bool tensors: the positions each mask hides, and
    the clean blocks before its block j (which :func:`noisy_inputs` masks with probability p)."""
    B, device = comp_len.shape[0], comp_len.device
    n_blocks = gen_len // block_len
    n_comp = (comp_len - 1) // block_len + 1  # (B,) blocks holding completion tokens
    # 1. The block of each mask: a permutation of all blocks, modulo the completion's blocks.
    perm = torch.argsort(torch.rand((B, n_blocks), generator=generator, device=device), dim=1)  # (B, n_blocks)
    j = perm[:, torch.arange(k, device=device) % n_blocks] % n_comp.view(-1, 1)  # (B, K)
    # 2. How many of the block's n completion positions to mask: uniform in [1, n].
    n = torch.clamp(comp_len.view(-1, 1) - j * block_len, max=block_len)  # (B, K)
    u = torch.rand((B, k), generator=generator, device=device)
    count = (u * n).long() + 1  # (B, K)
    # 3. Which ones: the `count` smallest of uniform keys among the first n positions of the block.
    inside = torch.arange(block_len, device=device)  # (block_len,)
    keys = torch.rand((B, k, block_len), generator=generator, device=device)
    keys = torch.where(inside < n.unsqueeze(-1), keys, torch.full_like(keys, 2.0))  # past the EOS: last
    rank = torch.argsort(torch.argsort(keys, dim=-1), dim=-1)  # (B, K, block_len)
    in_block = (rank < count.unsqueeze(-1)) | (inside >= n.unsqueeze(-1))  # (B, K, block_len)
    # 4. Assemble: earlier blocks clean, block j partly masked, later blocks masked.
    pos = torch.arange(gen_len, device=device)
    blk = (pos // block_len).view(1, 1, -1)  # (1, 1, gen_len)
    jj = j.unsqueeze(-1)  # (B, K, 1)
    partial = torch.gather(in_block, 2, (pos % block_len).view(1, 1, -1).expand(B, k, -1))  # (B, K, gen_len)
    return (blk > jj) | ((blk == jj) & partial), (blk < jj).expand(B, k, -1)


def noisy_inputs(traj: Trajectory, masks: Tensor, clean: Tensor, comp: Tensor, p: float, mask_id: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """(B, K, gen_len) block masks and clean blocks -> (B, K, L) model inputs: the block masks, every position
    past the first EOS, and each real prompt token and clean-block token with probability p, set to MASK."""
    B, K, _ = masks.shape
    P = traj.prompt_len
    real_prompt = traj.attention_mask[:, :P].bool().unsqueeze(1).expand(B, K, P)  # (B, K, P)
    hidden = torch.cat([torch.zeros_like(real_prompt), masks | ~comp.unsqueeze(1)], dim=2)  # (B, K, L)
    drawn = torch.rand(hidden.shape, generator=generator, device=hidden.device) < p
    exposed = torch.cat([real_prompt, clean], dim=2)  # (B, K, L) what the p-masking may hide
    hidden = hidden | (drawn & exposed)
    tokens = traj.tokens.unsqueeze(1).expand(B, K, -1)
    return torch.where(hidden, torch.full_like(tokens, mask_id), tokens)


# ---------------------------------------------------------------------------------------------- bounds
def elbo(token_logp: Tensor, masked: Tensor, comp: Tensor) -> Tensor:
    """(B, K, G) log p of the true tokens, (B, K, G) bool masked, (B, G) bool completion -> (B,) the ELBO:
    per mask the mean log p over masked completion tokens, averaged over the K masks."""
    w = (masked & comp.unsqueeze(1)).to(token_logp.dtype)  # (B, K, G)
    per_mask = (token_logp * w).sum(2) / w.sum(2).clamp(min=1)  # (B, K)
    return per_mask.mean(1)


def eubo(token_logp: Tensor, masked: Tensor, comp: Tensor, beta: float) -> Tensor:
    """(B, K, G), (B, K, G), (B, G) -> (B,) SPG's evidence upper bound (1/β) mean_{u_l > 0} log u_l,
    u_l = (1/K) Σ_k m_kl c_l p_kl^β / t_k (see the module docstring)."""
    w = (masked & comp.unsqueeze(1)).to(token_logp.dtype)  # (B, K, G)
    t = w.sum(2) / comp.to(token_logp.dtype).sum(1, keepdim=True).clamp(min=1)  # (B, K)
    u = (torch.exp(beta * token_logp) * w / t.clamp(min=1e-8).unsqueeze(-1)).mean(1)  # (B, G)
    seen = u > 0
    log_u = torch.log(torch.where(seen, u, torch.ones_like(u)))  # log 1 = 0 where unseen
    return log_u.sum(1) / seen.sum(1).clamp(min=1) / beta


def sandwich_logp(lower: Tensor, upper: Tensor, adv: Tensor, mix_weight: float) -> Tensor:
    """(B,) ELBO, EUBO, advantages -> (B,): the ELBO where A > 0, else ω EUBO + (1 − ω) ELBO."""
    return torch.where(adv > 0, lower, mix_weight * upper + (1 - mix_weight) * lower)


def spg_loss(seq_logp: Tensor, adv: Tensor, comp_len: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """(B,) bound, advantages, completion lengths -> Σ |o| (−A logp) / Σ |o| and metrics."""
    n = comp_len.to(seq_logp.dtype)
    loss = (n * (-adv * seq_logp)).sum() / n.sum().clamp(min=1)
    with torch.no_grad():
        metrics = {"seq_logp": seq_logp.detach().mean(), "positive": (adv > 0).float().mean()}
    return loss, metrics


# ---------------------------------------------------------------------------------------------- the forward
def masked_token_logp(model: ModelAdapter, traj: Trajectory, inputs: Tensor, *, cfg_scale: float = 0.0) -> Tensor:
    """(B, K, L) masked inputs -> (B, K, G) log p of the true completion tokens, one forward over B·K rows."""
    B, K, L = inputs.shape
    attn = traj.attention_mask.repeat_interleave(K, 0)  # (B·K, L)
    P = traj.prompt_len
    prompt = (torch.arange(L, device=attn.device) < P).unsqueeze(0) & attn.bool()
    logits = policy_logits(model, inputs.reshape(B * K, L), attn, cfg_scale=cfg_scale, prompt_mask=prompt)
    target = traj.completion_ids.repeat_interleave(K, 0)  # (B·K, G)
    comp = logits[:, P:].float()  # (B·K, G, V)
    tok = -F.cross_entropy(comp.flatten(0, 1), target.flatten(), reduction="none")
    return tok.view(B, K, -1)
