"""EGSPO and EGSPO-SA: train on K selected denoising steps of each rollout (EGSPO steps 3-7: select, advantage, clip).

    EGSPO      entropy-guided top-K steps, sequence-level group-relative advantages (λ = 0)
    EGSPO-SA   plus stepwise advantages from the one-shot greedy completions (λ > 0)

A rollout feeds ``k_steps × mu`` micro-steps; micro-step u trains on the (u mod K)-th selected
step of every sequence of the batch, in one forward (plus one reference forward when β > 0).
The numbered steps follow the paper's algorithm: 3 select steps, 4 advantages, 5 old
log-probabilities, 6 KL, 7 the clipped loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dllmrl.config import SamplerConfig
from dllmrl.methods import LossOutput, Method, Plan, Reference, Rollout
from dllmrl.methods.advantages import advantages, lambda_at
from dllmrl.methods.logp import microstep_logp, step_exact_kl
from dllmrl.methods.losses import k3_kl, loss_config, policy_loss
from dllmrl.models.base import ModelAdapter
from dllmrl.registry import STEP_SELECTORS
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.training.train_config import TrainConfig


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


def _masked_stat(x: Tensor, valid: Tensor) -> float:
    return float(x[valid].float().mean()) if bool(valid.any()) else float("nan")


class StepObjective:
    buffer_type = StepBuffer

    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig, *, stepwise: bool):
        self.cfg, self.stepwise = cfg, stepwise
        self.total_steps, self.cfg_scale = scfg.steps, scfg.cfg_scale
        self.loss_cfg = loss_config(cfg, scfg)

    def lam(self, step: int) -> float:
        """λ after ``step`` optimizer steps (0 for plain EGSPO)."""
        return lambda_at(step, self.cfg.lam, self.cfg.lambda_halve_every) if self.stepwise else 0.0

    def plan(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device) -> Plan:
        """3. Step selection: the selector's keeper rides along in the sampler (``greedy_at``)."""
        cfg = self.cfg
        selector = STEP_SELECTORS.get(cfg.select)(cfg)
        p = selector.plan(batch, self.total_steps, cfg.k_steps, eos_limit=cfg.eos_limit, generator=generator,
                          device=device)
        return Plan(keeper=p.keeper, select=p.select, greedy_rewards=self.lam(step) > 0)

    def prepare(self, rollout: Rollout, policy: ModelAdapter, generator: torch.Generator | None) -> StepBuffer:
        traj, steps, greedy = rollout.traj, rollout.steps, rollout.greedy_rewards
        valid = steps >= 0  # (B, K)
        safe = steps.clamp(min=0)
        lam = self.lam(rollout.step)
        metrics: dict[str, float] = {"lambda": lam}
        # 4. EGSPO-SA: r̂_k, the reward of the one-shot greedy completion from the state before step t_k.
        if greedy is not None:
            metrics["greedy_reward"] = float(torch.nanmean(greedy)) if bool(valid.any()) else float("nan")
        adv = advantages(rollout.rewards, greedy, rollout.group_ids, lam, self.cfg.normalise,
                         k=self.cfg.k_steps)  # (B, K)
        # 5. "Old" log-probabilities: those recorded during the rollout.
        per_step = traj.step_logp if self.cfg.aggregation == "sum" else traj.step_logp_mean  # (B, T)
        old = torch.gather(per_step, 1, safe)  # (B, K)
        metrics["entropy_selected"] = _masked_stat(torch.gather(traj.step_entropy, 1, safe), valid)
        metrics["selected_step_mean"] = _masked_stat(steps, valid)
        metrics["valid_slots"] = float(valid.float().mean())
        return StepBuffer(traj=traj, steps=steps, valid=valid, adv=adv, old_logp=old, metrics=metrics)

    def loss(self, buffer: StepBuffer, micro: int, policy: ModelAdapter, reference: Reference | None) -> LossOutput:
        """7. Micro-step u: one forward over the batch at the states before each row's k-th step."""
        buf, lc = buffer, self.loss_cfg
        k = micro % buf.steps.shape[1]
        steps = buf.steps[:, k]  # (B,)
        exact = lc.kl == "exact" and lc.beta > 0

        def logp(model: ModelAdapter):
            return microstep_logp(model, buf.traj, steps, cfg_scale=self.cfg_scale, aggregation=lc.aggregation,
                                  full=exact)

        new = logp(policy)
        kl = None
        if lc.beta > 0 and reference is not None:
            ref = reference(logp)
            # 6. KL against the base model: k3 on the step's log-probability, or exact over the vocabulary.
            kl = step_exact_kl(new, ref, buf.traj.batch_size, lc.aggregation) if exact else k3_kl(new.logp, ref.logp)
        return policy_loss(new.logp, buf.old_logp[:, k], buf.adv[:, k], lc, kl=kl, valid=buf.valid[:, k])


def _units(cfg: TrainConfig) -> int:
    return cfg.k_steps * cfg.mu


EGSPO = Method(
    name="egspo",
    summary="entropy-guided top-K steps, group-relative advantages (λ = 0)",
    paper="EGSPO, arXiv 2603.12554",
    build=lambda cfg, scfg: StepObjective(cfg, scfg, stepwise=False),
    units=_units,
    stepwise=False,
    selects_steps=True,
    defaults={"epsilon": 0.2, "epsilon_high": 0.5, "lam": 0.0, "mu": 1},
    fixed={"lam": 0.0},
)

EGSPO_SA = Method(
    name="egspo-sa",
    summary="EGSPO plus stepwise advantages from one-shot greedy completions (λ, default 1)",
    paper="EGSPO (stepwise advantages, EGSPO-SA), arXiv 2603.12554",
    build=lambda cfg, scfg: StepObjective(cfg, scfg, stepwise=True),
    units=_units,
    stepwise=True,
    selects_steps=True,
    defaults={"epsilon": 0.2, "epsilon_high": 0.5, "lam": 1.0, "mu": 1},
)
