"""EGSPO and EGSPO-SA: train on K selected denoising steps of each rollout (DESIGN.md steps 3-7).

    EGSPO      entropy-guided top-K steps, sequence-level group-relative advantages (λ = 0)
    EGSPO-SA   plus stepwise advantages from the one-shot greedy completions (λ > 0)

A rollout feeds ``k_steps × mu`` micro-steps; micro-step u trains on the (u mod K)-th selected
step of every sequence of the batch, in one forward (plus one reference forward when β > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from dllmrl.registry import STEP_SELECTORS
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.methods import Method
from dllmrl.methods.advantages import advantages
from dllmrl.methods.logp import microstep_logp, step_exact_kl
from dllmrl.methods.losses import LossConfig, k3_kl, policy_loss
from dllmrl.methods.selection import StepPlan


@dataclass
class StepBuffer:
    """One rollout, ready for its micro-steps (kept on its process; saved in checkpoints)."""

    traj: Trajectory
    steps: Tensor
    """(B, K) selected steps, -1 = empty slot."""
    valid: Tensor
    """(B, K) bool: the slot holds a step (masked out of the loss otherwise)."""
    adv: Tensor
    """(B, K) advantages."""
    old_logp: Tensor
    """(B, K) the rollout's log-probabilities of the selected steps' actions (sum or mean)."""
    metrics: dict[str, float] = field(default_factory=dict)


class StepObjective:
    def units(self, cfg: Any) -> int:
        return cfg.k_steps * cfg.mu

    def plan(self, cfg: Any, batch: int, total_steps: int, generator: torch.Generator | None,
             device: torch.device) -> StepPlan:
        """3. Step selection: the selector's keeper rides along in the sampler (``greedy_at``)."""
        selector = STEP_SELECTORS.get(cfg.select)(cfg)
        return selector.plan(batch, total_steps, cfg.k_steps, eos_limit=cfg.eos_limit, generator=generator, device=device)

    def prepare(self, method: Method, cfg: Any, traj: Trajectory, plan: StepPlan, rewards: Tensor, group_ids: Tensor,
                lam: float, score_greedy: Callable[[Tensor, Tensor], Tensor], **_: Any) -> StepBuffer:
        steps = plan.select(traj)  # (B, K)
        valid = steps >= 0
        safe = steps.clamp(min=0)
        greedy_rewards = None
        metrics: dict[str, float] = {}
        # 4. EGSPO-SA: r̂_k, the reward of the one-shot greedy completion from the state before step t_k.
        if method.stepwise and lam > 0:
            greedy_rewards = score_greedy(traj.greedy_for(steps), valid)  # (B, K), NaN where no step
            metrics["greedy_reward"] = float(torch.nanmean(greedy_rewards)) if bool(valid.any()) else float("nan")
        adv = advantages(rewards, greedy_rewards, group_ids, lam, cfg.normalise, k=cfg.k_steps)  # (B, K)
        # 5. "Old" log-probabilities: those recorded during the rollout.
        per_step = traj.step_logp if cfg.aggregation == "sum" else traj.step_logp_mean  # (B, T)
        old = torch.gather(per_step, 1, safe)  # (B, K)
        ent = torch.gather(traj.step_entropy, 1, safe)
        metrics["entropy_selected"] = float(ent[valid].mean()) if bool(valid.any()) else float("nan")
        metrics["selected_step_mean"] = float(steps[valid].float().mean()) if bool(valid.any()) else float("nan")
        metrics["valid_slots"] = float(valid.float().mean())
        return StepBuffer(traj=traj, steps=steps, valid=valid, adv=adv, old_logp=old, metrics=metrics)

    def loss(self, buf: StepBuffer, u: int, *, policy, reference: Callable | None, loss_cfg: LossConfig,
             cfg_scale: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """7. Micro-step u: one forward over the batch at the states before each row's k-th step."""
        k = u % buf.steps.shape[1]
        steps = buf.steps[:, k]  # (B,)
        exact = loss_cfg.kl == "exact" and loss_cfg.beta > 0
        new = microstep_logp(policy, buf.traj, steps, cfg_scale=cfg_scale, aggregation=loss_cfg.aggregation, full=exact)
        kl = None
        if loss_cfg.beta > 0 and reference is not None:
            ref = reference(lambda m: microstep_logp(m, buf.traj, steps, cfg_scale=cfg_scale,
                                                     aggregation=loss_cfg.aggregation, full=exact))
            # 6. KL against the base model: k3 on the step's log-probability, or exact over the vocabulary.
            kl = step_exact_kl(new, ref, buf.traj.batch_size, loss_cfg.aggregation) if exact else k3_kl(new.logp, ref.logp)
        return policy_loss(new.logp, buf.old_logp[:, k], buf.adv[:, k], loss_cfg, kl=kl, valid=buf.valid[:, k])


_STEPS = StepObjective()

EGSPO = Method(
    name="egspo",
    summary="entropy-guided top-K steps, group-relative advantages (λ = 0)",
    objective=_STEPS,
    stepwise=False,
    defaults={"epsilon": 0.2, "epsilon_high": 0.5, "lam": 0.0, "mu": 1},
    fixed={"lam": 0.0},
)

EGSPO_SA = Method(
    name="egspo-sa",
    summary="EGSPO plus stepwise advantages from one-shot greedy completions (λ, default 1)",
    objective=_STEPS,
    stepwise=True,
    defaults={"epsilon": 0.2, "epsilon_high": 0.5, "lam": 1.0, "mu": 1},
)
