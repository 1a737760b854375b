"""Training methods: data plus pure functions, looked up by name in ``dllmrl.registry.METHODS``.

    method = get_method("egspo-sa")
    method.objective      # how a rollout becomes micro-step losses (steps.StepObjective / tokens.TokenObjective)
    method.stepwise       # EGSPO-SA: returns mix in the one-shot greedy rewards (λ)
    method.defaults       # TrainConfig values this method changes (ε for diffu-GRPO, λ, μ)

The pieces, each a pure function with a hand-worked test (tests/test_methods.py):
``selection`` (which steps), ``advantages`` (group-relative, stepwise, λ schedule), ``losses``
(clipped surrogate, KL forms), ``logp`` (batched log-probabilities at selected steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    objective: Any
    """Object with ``units(cfg)``, ``plan(...)``, ``prepare(...)`` and ``loss(...)`` (see steps.py)."""
    stepwise: bool = False
    """Mix the one-shot greedy completions' rewards into the returns (EGSPO-SA)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """TrainConfig fields left unset (None) take these values for this method."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """TrainConfig fields this method does not let the user change (e.g. λ = 0 for plain EGSPO)."""
    paper: str = ""
    """Where the method comes from (paper and public code), shown by `dllmrl ls methods`."""


def get_method(name: str) -> Method:
    from dllmrl.registry import METHODS

    return METHODS.get(name)
