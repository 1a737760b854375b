"""Which one-shot greedy completions the sampler keeps while it runs.

EGSPO-SA needs the greedy completion from the state before each selected step, and the
entropy-selected steps are known only at the end. Keeping every step's completion would
cost O(T x L); instead ``TopEntropySteps`` keeps a running top-K (O(K x L)) that ends
exactly equal to ``top_k_entropy_steps`` over the finished trajectory, EOS limit included.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import Tensor


class GreedyKeeper(Protocol):
    def start(self, batch: int, gen_len: int, device: torch.device) -> None: ...
    def wants(self, t: int, score: Tensor, non_eos: Tensor) -> Tensor: ...
    def update(self, t: int, score: Tensor, non_eos: Tensor, greedy: Tensor | None) -> None: ...
    def result(self) -> tuple[Tensor, Tensor]: ...


def _ranked(score: Tensor, step: Tensor, k: int) -> Tensor:
    """(B, N) -> (B, k) indices of the k best candidates: higher score first, earlier step on ties."""
    order = torch.argsort(step, dim=1, stable=True)
    order = torch.gather(order, 1, torch.argsort(torch.gather(score, 1, order), dim=1, descending=True, stable=True))
    return order[:, :k]


def top_k_entropy_steps(step_entropy: Tensor, k: int, last_step: Tensor | None = None) -> Tensor:
    """(B, T) entropies -> (B, k) steps with the highest entropy (ties: earlier step); -1 pads.

    ``last_step`` (B,) limits the choice to steps <= last_step (the EOS limit). Steps with
    entropy -inf (nothing revealed) are never chosen.
    """
    B, T = step_entropy.shape
    steps = torch.arange(T, device=step_entropy.device).expand(B, T)
    score = step_entropy.clone()
    if last_step is not None:
        score[steps > last_step.view(-1, 1)] = float("-inf")
    idx = _ranked(score, steps, min(k, T))
    chosen = torch.gather(steps, 1, idx)
    chosen = torch.where(torch.isfinite(torch.gather(score, 1, idx)), chosen, torch.full_like(chosen, -1))
    if k > T:
        chosen = torch.cat([chosen, chosen.new_full((B, k - T), -1)], 1)
    return chosen


def last_non_eos_step(step_non_eos: Tensor) -> Tensor:
    """(B, T) bool -> (B,) the last step that revealed a non-EOS token (-1 if none)."""
    T = step_non_eos.shape[1]
    steps = torch.arange(T, device=step_non_eos.device).expand_as(step_non_eos)
    return torch.where(step_non_eos, steps, torch.full_like(steps, -1)).max(1).values


class TopEntropySteps:
    """Keep the completions of the K highest-entropy steps, optionally only up to the last non-EOS step.

    Two running sets per row: H, the top K among steps up to the last non-EOS step so far, and
    P, the top K among the EOS-only steps after it. A non-EOS step makes every pending step
    eligible, so P merges into H; at the end P is dropped.
    """

    def __init__(self, k: int, eos_limit: bool = False):
        self.k = k
        self.eos_limit = eos_limit

    def start(self, batch: int, gen_len: int, device: torch.device) -> None:
        inf = float("-inf")
        self.h_score = torch.full((batch, self.k), inf, device=device)
        self.h_step = torch.full((batch, self.k), -1, dtype=torch.long, device=device)
        self.h_tok = torch.zeros((batch, self.k, gen_len), dtype=torch.long, device=device)
        self.p_score, self.p_step, self.p_tok = self.h_score.clone(), self.h_step.clone(), self.h_tok.clone()

    def _non_eos(self, non_eos: Tensor) -> Tensor:
        return non_eos if self.eos_limit else torch.ones_like(non_eos)

    def wants(self, t: int, score: Tensor, non_eos: Tensor) -> Tensor:
        kth_all = torch.cat([self.h_score, self.p_score], 1).topk(self.k, dim=1).values[:, -1]
        # strict '>': a later step loses ties, as in top_k_entropy_steps
        enters = torch.where(self._non_eos(non_eos), score > kth_all, score > self.p_score.min(1).values)
        return enters & torch.isfinite(score)

    def update(self, t: int, score: Tensor, non_eos: Tensor, greedy: Tensor | None) -> None:
        if greedy is None and not bool(torch.isfinite(self.p_score).any()):
            # No row's step enters (see wants) and P is empty, so nothing merges: H and P stay as they are.
            # (A step that does not enter ranks after H's K: lower score, or a tie lost to an earlier step.)
            return
        B = score.shape[0]
        new_step = torch.full((B, 1), t, dtype=torch.long, device=score.device)
        new_tok = greedy.unsqueeze(1) if greedy is not None else torch.zeros_like(self.h_tok[:, :1])
        score = score.view(B, 1)
        # rows whose step revealed something other than EOS: H <- top K of H, P and the new step
        m_score = torch.cat([self.h_score, self.p_score, score], 1)
        m_step = torch.cat([self.h_step, self.p_step, new_step], 1)
        m_tok = torch.cat([self.h_tok, self.p_tok, new_tok], 1)
        m_idx = _ranked(m_score, m_step, self.k)
        # EOS-only rows: P <- top K of P and the new step
        q_score, q_step = torch.cat([self.p_score, score], 1), torch.cat([self.p_step, new_step], 1)
        q_tok = torch.cat([self.p_tok, new_tok], 1)
        q_idx = _ranked(q_score, q_step, self.k)
        ne = self._non_eos(non_eos).view(B, 1)
        tok_idx = lambda i: i.unsqueeze(-1).expand(-1, -1, self.h_tok.shape[-1])  # noqa: E731
        self.h_score = torch.where(ne, torch.gather(m_score, 1, m_idx), self.h_score)
        self.h_step = torch.where(ne, torch.gather(m_step, 1, m_idx), self.h_step)
        self.h_tok = torch.where(ne.unsqueeze(-1), torch.gather(m_tok, 1, tok_idx(m_idx)), self.h_tok)
        empty_score = torch.full_like(self.p_score, float("-inf"))
        self.p_score = torch.where(ne, empty_score, torch.gather(q_score, 1, q_idx))
        self.p_step = torch.where(ne, torch.full_like(self.p_step, -1), torch.gather(q_step, 1, q_idx))
        self.p_tok = torch.where(ne.unsqueeze(-1), self.p_tok, torch.gather(q_tok, 1, tok_idx(q_idx)))

    def result(self) -> tuple[Tensor, Tensor]:
        steps = torch.where(torch.isfinite(self.h_score), self.h_step, torch.full_like(self.h_step, -1))
        return steps, self.h_tok


class FixedSteps:
    """Keep the completions at steps known in advance: the same for every row, or (B, S) per row."""

    def __init__(self, steps: Sequence[int] | Tensor):
        self.steps = steps

    def start(self, batch: int, gen_len: int, device: torch.device) -> None:
        s = torch.as_tensor(self.steps, dtype=torch.long, device=device)
        self.step = (s.expand(batch, -1) if s.dim() == 1 else s).clone()  # (B, S)
        self.tok = torch.zeros((batch, self.step.shape[1], gen_len), dtype=torch.long, device=device)

    def wants(self, t: int, score: Tensor, non_eos: Tensor) -> Tensor:
        return (self.step == t).any(1)

    def update(self, t: int, score: Tensor, non_eos: Tensor, greedy: Tensor | None) -> None:
        if greedy is None:
            return
        hit = (self.step == t).unsqueeze(-1)  # (B, S, 1)
        self.tok = torch.where(hit, greedy.unsqueeze(1), self.tok)

    def result(self) -> tuple[Tensor, Tensor]:
        return self.step, self.tok
