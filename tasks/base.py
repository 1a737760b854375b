"""The task-pack interface. A pack is a small object; its rewards reuse its verifier.

Shape (see STYLE.md):

    task = get_task("sudoku")
    examples = task.load("test")
    task.verify(examples[0], completion) -> bool
    for name, (fn, weight) in task.rewards().items(): fn(example, completion) -> float
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    """The user turn, before the chat template."""
    target: Any
    """Whatever verify() needs: "42", a puzzle solution, test code."""
    meta: Mapping[str, Any] = field(default_factory=dict)


RewardFn = Callable[[Example, str], float]
"""Per sample, pure: (example, completion text) -> reward."""


@runtime_checkable
class Task(Protocol):
    name: str
    prefill: str
    """Text appended after the chat template's generation prompt (the reference uses '<reasoning>')."""
    prompt_styles: Sequence[str]
    """Named prompt formats, e.g. 'eval' (the published evaluation protocol), 'train' (the reference's
    training prompt) and 'compact' (short prompts for the tiny character-level models)."""

    def splits(self) -> Mapping[str, int]:
        """Split name -> number of examples (cheap: no model, no torch)."""
        ...

    def load(self, split: str, prompt_style: str = "eval") -> Sequence[Example]:
        """Examples of a split; ``Example.prompt`` is the complete user turn in that prompt style."""
        ...

    def extract(self, completion: str) -> str | None:
        """The ONE answer parser of the pack."""
        ...

    def verify(self, ex: Example, completion: str) -> bool: ...

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        """Reward name -> (function, weight); the training reward is the weighted sum."""
        ...


def get_task(name: str) -> Task:
    """Instantiate a registered task pack by name (raises UnknownNameError with 'did you mean')."""
    from dllmrl.registry import TASKS

    obj = TASKS.get(name)
    return obj() if isinstance(obj, type) else obj


def total_reward(task: Task, ex: Example, completion: str) -> tuple[float, dict[str, float]]:
    """Weighted sum of the pack's rewards, and each unweighted reward by name."""
    parts = {name: float(fn(ex, completion)) for name, (fn, _w) in task.rewards().items()}
    return sum(parts[n] * w for n, (_f, w) in task.rewards().items()), parts
