"""A method written outside dllmrl/ against the public contract (``dllmrl.methods``) trains and resumes.

The toy method keeps the one-shot greedy completions of two fixed steps, asks for their rewards,
and trains a REINFORCE-style loss on the log-probability of each selected step: it touches every
part of the contract (Plan.keeper / select / greedy_rewards, Rollout, a checkpointed buffer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.methods import LossOutput, Method, Plan, Reference, Rollout
from dllmrl.methods.advantages import advantages
from dllmrl.methods.logp import microstep_logp
from dllmrl.models.base import ModelAdapter
from dllmrl.registry import METHODS
from dllmrl.sampling.keepers import FixedSteps
from dllmrl.sampling.trajectory import Trajectory
from dllmrl.training.metrics import read_metrics
from dllmrl.training.train_config import TrainConfig
from dllmrl.training.trainer import Trainer, TrainingInterrupted, train
from toy_tasks import TOY_GEN_LEN, ToyLowercase

STEPS = (0, 2)
SEEN: list[Rollout] = []


@dataclass
class FixedBuffer:
    traj: Trajectory
    steps: Tensor
    """(B, K) the fixed steps."""
    adv: Tensor
    """(B, K) advantages over the greedy completions' rewards."""
    metrics: dict[str, float] = field(default_factory=dict)


class FixedStepsObjective:
    buffer_type = FixedBuffer

    def __init__(self, cfg: TrainConfig, scfg: SamplerConfig):
        self.cfg_scale = scfg.cfg_scale

    def plan(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device) -> Plan:
        def select(traj: Trajectory) -> Tensor:
            return torch.tensor([STEPS], device=traj.tokens.device).expand(traj.batch_size, -1)

        return Plan(keeper=FixedSteps(list(STEPS)), select=select, greedy_rewards=True)

    def prepare(self, rollout: Rollout, policy: ModelAdapter, generator: torch.Generator | None) -> FixedBuffer:
        SEEN.append(rollout)
        adv = advantages(rollout.rewards, rollout.greedy_rewards, rollout.group_ids, 1.0)  # (B, K)
        return FixedBuffer(traj=rollout.traj, steps=rollout.steps, adv=adv,
                           metrics={"toy_greedy_reward": float(rollout.greedy_rewards.mean())})

    def loss(self, buffer: FixedBuffer, micro: int, policy: ModelAdapter, reference: Reference | None) -> LossOutput:
        k = micro % buffer.steps.shape[1]
        new = microstep_logp(policy, buffer.traj, buffer.steps[:, k], cfg_scale=self.cfg_scale)
        loss = -(buffer.adv[:, k] * new.logp).mean()
        return loss, {"toy_logp": new.logp.detach().mean()}


TOY_METHOD = Method(name="toy-fixed-steps", summary="two fixed steps, REINFORCE on their log-probabilities",
                    build=FixedStepsObjective, units=lambda cfg: len(STEPS), defaults={"mu": 1, "lam": 0.0})
if TOY_METHOD.name not in METHODS:
    METHODS.register(TOY_METHOD.name, TOY_METHOD)

SCFG = SamplerConfig(gen_len=TOY_GEN_LEN, steps=4, block_len=TOY_GEN_LEN, temperature=1.0)


def cfg(out, **kw) -> TrainConfig:
    base = dict(task="toy", method=TOY_METHOD.name, num_generations=4, batch_size=8, grad_accum=1, lr=2e-2,
                warmup_steps=0, max_steps=2, lora_r=4, lora_alpha=8, output=str(out), save_every=0, reward_workers=1,
                beta=0.0)
    return TrainConfig(**{**base, **kw})


def mcfg(model_dir) -> ModelConfig:
    return ModelConfig(model=model_dir, device="cpu", dtype="float32")


def test_a_method_registered_from_outside_trains_through_the_contract(tiny_model_dir, tmp_path):
    SEEN.clear()
    trainer = Trainer(cfg(tmp_path, max_steps=4), SCFG, mcfg(tiny_model_dir), task=ToyLowercase())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    result = trainer.run()
    assert result.step == 4 and len(SEEN) == 2  # two micro-steps per rollout, one per optimizer step
    r = SEEN[0]
    assert r.steps.tolist() == [list(STEPS)] * 8 and r.greedy_rewards.shape == (8, 2)
    assert bool(torch.isfinite(r.greedy_rewards).all()) and r.group_ids.tolist() == [0] * 4 + [1] * 4
    assert r.step == 0 and SEEN[1].step == 2
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in before)
    rows = read_metrics(tmp_path)
    assert [x["step"] for x in rows] == [1, 2, 3, 4] and "toy_greedy_reward" in rows[0] and "toy_logp" in rows[0]


def test_its_buffer_survives_a_checkpoint_mid_rollout(tiny_model_dir, tmp_path):
    """Stop after the first of the rollout's two micro-steps; the resumed run matches a straight one."""
    straight = train(cfg(tmp_path / "a", max_steps=4), SCFG, mcfg(tiny_model_dir), task=ToyLowercase())

    def stop(report):
        if report.step == 1:
            raise KeyboardInterrupt

    try:
        train(cfg(tmp_path / "b", max_steps=4), SCFG, mcfg(tiny_model_dir), task=ToyLowercase(), on_step=stop)
    except TrainingInterrupted:
        pass
    resumed = train(cfg(tmp_path / "b", max_steps=4, resume=True), SCFG, mcfg(tiny_model_dir), task=ToyLowercase())
    assert resumed.resumed_from == 1 and resumed.step == straight.step == 4
    la, lb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [x["loss"] for x in la] == [x["loss"] for x in lb]
