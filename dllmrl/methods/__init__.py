"""Training methods: one typed contract, one module per method, looked up by name in ``dllmrl.registry.METHODS``.

    method = get_method("egspo-sa")
    objective = method.build(train_cfg, sampler_cfg)   # an Objective holding its settings
    method.units(train_cfg)                            # micro-steps one rollout feeds (K x μ, or μ)
    method.defaults / method.fixed                     # TrainConfig values it fills in / does not let change

How the RL trainer drives an ``Objective`` (it never looks at the method's name):

1. ``plan = objective.plan(step, batch, generator, device)`` before sampling. ``Plan.keeper`` rides
   along in the sampler as ``greedy_at`` (the one-shot greedy completions it keeps);
   ``Plan.select(traj)`` reads the trained steps off the finished trajectory, (B, K), -1 = empty
   slot; ``Plan.greedy_rewards`` asks the trainer to score the kept completions of those steps.
2. The trainer samples, scores the completions with the task's rewards and builds a ``Rollout``:
   trajectory, (B,) rewards, (B,) group ids, the selected steps and, when asked, their (B, K) greedy
   rewards (NaN where a slot is empty).
3. ``buffer = objective.prepare(rollout, policy, generator)`` under ``torch.no_grad``: advantages,
   old log-probabilities, masks. The buffer is a dataclass of tensors, numbers, strings and nested
   dataclasses (a ``Trajectory``) of type ``objective.buffer_type`` with a ``metrics`` dict of floats
   (logged with the rollout); checkpoints save it field by field and rebuild it from that type, so a
   run can stop and resume between micro-steps.
4. ``loss, metrics = objective.loss(buffer, micro, policy, reference)`` for micro = 0 .. units-1, one
   micro-step each; the trainer does backward, accumulation, clipping and the optimizer.
   ``reference(fn)`` runs ``fn(adapter)`` under the base model (adapter disabled, no grad); it is None
   when --beta is 0.

Writing a method (wd1, SPG, d2...): a module here with a buffer dataclass, an objective class with
``buffer_type``, ``plan``, ``prepare`` and ``loss``, and a ``Method(name, summary, build, units, ...)``;
then one line ``METHODS.register("name", "dllmrl.methods.module:METHOD")`` in ``dllmrl/registry.py``
and hand-worked tests of its pure functions. A method from outside the package registers its
``Method`` object directly (tests/test_methods_contract.py does).

The shared pieces, each a pure function with a hand-worked test: ``selection`` (which steps),
``advantages`` (group-relative, stepwise, λ schedule), ``losses`` (clipped surrogate, KL forms),
``logp`` (batched log-probabilities at selected steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Protocol, TypeVar

import torch
from torch import Tensor

if TYPE_CHECKING:  # typing only: importing the package must stay light
    from dllmrl.config import SamplerConfig
    from dllmrl.models.base import ModelAdapter
    from dllmrl.sampling.keepers import GreedyKeeper
    from dllmrl.sampling.trajectory import Trajectory
    from dllmrl.training.train_config import TrainConfig

T = TypeVar("T")
B = TypeVar("B")  # a method's buffer dataclass

Reference = Callable[[Callable[["ModelAdapter"], T]], T]
"""``reference(fn)`` = ``fn(adapter)`` computed under the reference policy (the base model), without gradients."""

LossOutput = tuple[Tensor, Mapping[str, Tensor]]
"""A micro-step's scalar loss and its metrics (scalars, averaged over the optimizer step)."""


@dataclass(frozen=True)
class Plan:
    """What a method asks of the rollout before it is sampled."""

    keeper: GreedyKeeper | None = None
    """Passed to the sampler as ``greedy_at``: which one-shot greedy completions to keep (None: none)."""
    select: Callable[[Trajectory], Tensor] | None = None
    """Finished trajectory -> (B, K) the steps to train on, -1 = empty slot (None: no step selection)."""
    greedy_rewards: bool = False
    """Score the kept greedy completions of the selected steps (``Rollout.greedy_rewards``)."""

    def __post_init__(self) -> None:
        if self.greedy_rewards and (self.select is None or self.keeper is None):
            raise ValueError("Plan(greedy_rewards=True) needs a keeper (to keep the completions) and select "
                             "(which steps to score)")


@dataclass(frozen=True)
class Rollout:
    """One sampled batch with its rewards: everything ``Objective.prepare`` reads."""

    traj: Trajectory
    rewards: Tensor
    """(B,) weighted task reward of each completion."""
    group_ids: Tensor
    """(B,) the prompt each row was sampled for; advantages compare rows within a group."""
    step: int
    """Optimizer steps done before this rollout (for schedules such as λ halving)."""
    eos_ids: Collection[int]
    """EOS / end-of-turn token ids of the model."""
    steps: Tensor | None = None
    """(B, K) ``Plan.select(traj)``, or None when the plan selects no steps."""
    greedy_rewards: Tensor | None = None
    """(B, K) rewards of the one-shot greedy completions from the state before each selected step
    (NaN in empty slots); None unless ``Plan.greedy_rewards``."""


class Prepared(Protocol):
    """A prepared rollout: any dataclass with this field (and plain, checkpointable fields)."""

    metrics: dict[str, float]


class Objective(Protocol[B]):
    """How a rollout becomes micro-step losses; see the module docstring for the order of calls.
    ``B`` is the method's buffer dataclass (with a ``metrics: dict[str, float]`` field, see ``Prepared``)."""

    buffer_type: type[B]
    """The dataclass ``prepare`` returns (checkpoints rebuild it from its fields)."""

    def plan(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device) -> Plan: ...

    def prepare(self, rollout: Rollout, policy: ModelAdapter, generator: torch.Generator | None) -> B: ...

    def loss(self, buffer: B, micro: int, policy: ModelAdapter, reference: Reference | None) -> LossOutput: ...


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    build: Callable[[TrainConfig, SamplerConfig], Objective[Any]]
    """(resolved TrainConfig, training SamplerConfig) -> the objective the trainer drives."""
    units: Callable[[TrainConfig], int]
    """Micro-steps one rollout feeds (must be a multiple of --grad-accum)."""
    stepwise: bool = False
    """Descriptive: the returns mix in the one-shot greedy completions' rewards (EGSPO-SA). The trainer never
    reads it; the objective ``build`` returns behaves accordingly."""
    selects_steps: bool = False
    """The method trains on ``--k-steps`` selected denoising steps, so a rollout must have at least that many
    (the train command checks it before any model work)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """TrainConfig fields left unset (None) take these values for this method."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """TrainConfig fields this method does not let the user change (e.g. λ = 0 for plain EGSPO)."""
    paper: str = ""
    """Where the method comes from (paper and public code), shown by `dllmrl ls methods`."""


def get_method(name: str) -> Method:
    from dllmrl.registry import METHODS

    return METHODS.get(name)
