"""The record of one batched generation, consumed by eval, the trainer and the live view.

Memory is O(B x L) plus O(B x T) per-step scalars plus the kept one-shot completions
(B x S x gen_len); no full-vocabulary distribution is ever stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class StepEvent:
    """What the sampler reports after each denoising step (feeds the live view and progress bars)."""

    step: int
    """Global step index t (0-based)."""
    block: int
    tokens: Tensor
    """(B, L) current ids, after this step's reveals. Read it, do not modify it."""
    revealed: Tensor
    """(B, L) bool: positions revealed at this step."""
    prompt_len: int
    total_steps: int


@dataclass(frozen=True)
class Trajectory:
    tokens: Tensor
    """(B, L) final ids, prompt (left-padded) included."""
    attention_mask: Tensor
    """(B, L) 1 on real tokens (prompt and generation), 0 on left padding."""
    prompt_len: int
    """Width P of the padded prompt; the generation occupies positions P..L-1."""
    unmask_step: Tensor
    """(B, L) step that revealed each position; -1 for prompt and padding."""
    step_entropy: Tensor
    """(B, T) mean predictive entropy (un-tempered softmax) over the positions revealed at step t;
    -inf where the step revealed nothing."""
    step_logp: Tensor
    """(B, T) sum of log p (un-tempered softmax) of the tokens chosen at step t."""
    step_count: Tensor
    """(B, T) number of positions revealed at step t."""
    step_non_eos: Tensor
    """(B, T) bool: step t revealed at least one token that is not EOS / end-of-turn."""
    greedy_steps: Tensor
    """(B, S) steps whose one-shot greedy completion was kept, best first; -1 marks an empty slot."""
    greedy_tokens: Tensor
    """(B, S, gen_len) one-shot greedy completion from the state before greedy_steps[b, s]."""
    nfe: int = 0
    """Forward passes (model calls) used."""

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.step_entropy.shape[1])

    @property
    def completion_ids(self) -> Tensor:
        """(B, gen_len) generated ids."""
        return self.tokens[:, self.prompt_len:]

    @property
    def step_logp_mean(self) -> Tensor:
        """(B, T) mean log p per revealed token at step t (0 where nothing was revealed)."""
        return self.step_logp / self.step_count.clamp(min=1)

    def state_before(self, t: int | Tensor, mask_id: int) -> Tensor:
        """(B, L) the state the sampler saw before step t: final tokens where unmask_step < t, MASK elsewhere.

        ``t`` is one step for all rows or a (B,) tensor of per-row steps.
        """
        if isinstance(t, Tensor):
            t = t.to(self.unmask_step.device).view(-1, 1)
        keep = self.unmask_step < t  # prompt (-1) always kept
        return torch.where(keep, self.tokens, torch.full_like(self.tokens, mask_id))

    def greedy_for(self, steps: Tensor) -> Tensor:
        """(B, K) steps -> (B, K, gen_len) their kept one-shot completions; raises if one was not kept."""
        steps = steps.to(self.greedy_steps.device)
        hit = self.greedy_steps.unsqueeze(1) == steps.unsqueeze(2)  # (B, K, S)
        hit &= (steps >= 0).unsqueeze(2)
        found = hit.any(-1)
        if not bool(found[steps >= 0].all()):
            raise KeyError("a requested step has no kept greedy completion; ask the sampler for it with greedy_at")
        slot = hit.float().argmax(-1)  # (B, K)
        idx = slot.unsqueeze(-1).expand(-1, -1, self.greedy_tokens.shape[-1])
        return torch.gather(self.greedy_tokens, 1, idx)

    def to(self, device: torch.device | str) -> "Trajectory":
        fields = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return Trajectory(**fields)
