"""The task-pack contract: ``TaskBase`` declares every hook the evaluator, the trainer and the scorer
call, each with a default where one makes sense. A pack subclasses it; its rewards reuse its verifier.

    task = get_task("sudoku")
    examples = task.load("test", prompt_style="eval")
    text = task.prefill_for("eval") + completion          # the "response": what the assistant said
    task.verify(examples[0], text) -> bool
    for name, (fn, weight) in task.rewards().items(): fn(example, text) -> float

Conventions every pack follows (the trainer, SFT and eval rely on them):

- ``Example.prompt`` is the complete user turn in the requested prompt style (the chat template
  is applied by the model adapter, not here).
- ``prefill_for(style)`` is appended after the chat template's generation prompt; it is model
  input, never generated. The reference prefills ``<reasoning>`` at evaluation and nothing during
  training, so ``prefill_for("eval") == "<reasoning>"`` and ``prefill_for("train") == ""``.
  ``task.prefill`` is the eval one.
- ``verify`` and the reward functions take the *response*: ``prefill_for(style) + completion``.
  Answer extraction never depends on the prefill, so passing the bare completion gives the same
  correctness; format rewards (which look for ``<reasoning>``) need the prefill to be included.
  ``response_text`` below builds it.
- ``sft_target(ex, style)`` is the gold completion: what the model should generate *after* the
  prefill. ``verify(ex, prefill_for(style) + sft_target(ex, style))`` is always True.
- The reward named ``"correct"`` is ``float(verify(...))``: training and evaluation never disagree
  on what "correct" means.
- ``version`` names the pack's prompts, parser and verifier: it is written into every eval record
  and is part of the resume key, so bump it when any of them changes and old records are regenerated.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

PROMPT_STYLES = ("eval", "train", "compact")


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    """The user turn, before the chat template."""
    target: Any
    """Whatever verify() needs: "42", a puzzle solution, test code."""
    meta: Mapping[str, Any] = field(default_factory=dict)


RewardFn = Callable[[Example, str], float]
"""Per sample, pure: (example, response text) -> reward."""


def get_task(name: str) -> "TaskBase":
    """Instantiate a registered task pack by name (raises UnknownNameError with 'did you mean')."""
    from dllmrl.errors import DllmrlError
    from dllmrl.registry import TASKS

    if "+" in name:  # 'sudoku+countdown*3': a mixture (weighted), each example scored by its own pack
        from dllmrl.tasks.mixture import Mixture, parse_pack

        packs = [parse_pack(part, name) for part in name.split("+")]
        return Mixture([get_task(n) for n, _ in packs], [w for _, w in packs])
    if "*" in name:
        from dllmrl.errors import ConfigError

        raise ConfigError(f"task '{name}': a weight ('*') only makes sense in a mixture, e.g. 'sudoku+countdown*3'")
    obj = TASKS.get(name)
    task = obj() if isinstance(obj, type) else obj
    if not isinstance(task, TaskBase):
        raise DllmrlError(f"task pack '{name}' ({type(task).__module__}.{type(task).__qualname__}) does not subclass "
                          "dllmrl.tasks.base.TaskBase; derive it from TaskBase so that every hook is declared")
    return task


def response_text(task: "TaskBase", completion: str, prompt_style: str = "eval") -> str:
    """What the assistant said: the style's prefill followed by the generated completion."""
    return task.prefill_for(prompt_style) + completion


def total_reward(task: "TaskBase", ex: Example, completion: str) -> tuple[float, dict[str, float]]:
    """Weighted sum of the pack's rewards, and each unweighted reward by name."""
    rewards = task.rewards()
    parts = {name: float(fn(ex, completion)) for name, (fn, _w) in rewards.items()}
    return sum(parts[n] * w for n, (_f, w) in rewards.items()), parts


def check_choice(value: str, choices: Sequence[str], *, what: str, option: str) -> str:
    """Raise ConfigError with 'did you mean' unless ``value`` is one of ``choices``."""
    if value in choices:
        return value
    from dllmrl.errors import ConfigError

    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"{option} '{value}' is not a {what}{hint} choose one of: {', '.join(choices)}")


class TaskBase:
    """Every hook of a task pack, declared here with its default.

    A subclass sets ``name``, ``version``, ``prompt_styles``, ``split_sizes`` and implements ``_load(split)``
    (examples without prompts: ``prompt`` is filled per style by ``build_prompt``), ``build_prompt``,
    ``extract``, ``verify``, ``sft_target`` and ``from_fields``; ``rewards`` defaults to the verifier alone.
    """

    name: str = ""
    version: str = "1"
    """The pack's prompts, answer parser and verifier: written into every eval record and part of eval's
    resume key. Bump it when any of them changes, so that records made with the old ones are regenerated."""
    prompt_styles: Sequence[str] = ("eval", "train")
    """Named prompt formats: 'eval' (the published protocol), 'train' (the reference's training prompt),
    'compact' (short prompts for the tiny character-level models)."""
    prefill: str = "<reasoning>"
    """Text appended after the chat template's generation prompt at evaluation (the reference's '<reasoning>')."""
    headline: str = "accuracy"
    """The metric the paper reports for this task (a key of the eval results)."""
    eval_split: str = "test"
    """The split the paper's numbers are on (``dllmrl eval``'s default)."""
    split_sizes: Mapping[str, int] = {}
    score_workers: int = 1
    """Threads that score eval records (code packs run a sandbox subprocess per check)."""

    def __init__(self) -> None:
        self._cache: dict[str, Sequence[Example]] = {}

    # ------------------------------------------------------------ splits and prompts
    def splits(self) -> Mapping[str, int]:
        return dict(self.split_sizes)

    def check_split(self, split: str) -> str:
        return check_choice(split, list(self.splits()), what=f"split of task '{self.name}'", option="--split")

    def check_style(self, prompt_style: str) -> str:
        return check_choice(
            prompt_style, list(self.prompt_styles), what=f"prompt style of task '{self.name}'", option="--prompt-style"
        )

    def prefill_for(self, prompt_style: str) -> str:
        # The reference prefills '<reasoning>' only at evaluation; its trainer generates from the bare template.
        return self.prefill if self.check_style(prompt_style) == "eval" else ""

    def load(self, split: str, prompt_style: str = "eval") -> Sequence[Example]:
        self.check_split(split)
        self.check_style(prompt_style)
        if split not in self._cache:
            self._cache[split] = self._load(split)
        base = self._cache[split]
        from dllmrl.tasks.common import LazySplit

        # A view, not a copy: generated splits stay lazy, and prompts are formatted on access.
        return LazySplit(len(base), lambda i: self._styled(base[i], prompt_style))

    def _styled(self, ex: Example, prompt_style: str) -> Example:
        return Example(ex.id, self.build_prompt(ex, prompt_style), ex.target, ex.meta)

    def _load(self, split: str) -> Sequence[Example]:
        raise NotImplementedError

    def build_prompt(self, ex: Example, prompt_style: str) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------ answers and rewards
    def extract(self, completion: str) -> str | None:
        """The ONE answer parser of the pack (None: no answer found)."""
        raise NotImplementedError

    def verify(self, ex: Example, completion: str) -> bool:
        """Whether the response (prefill + completion) answers ``ex`` correctly."""
        raise NotImplementedError

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        """Reward name -> (function, weight); the training reward is the weighted sum."""
        return {"correct": (self.correct_reward, 1.0)}

    def sft_target(self, ex: Example, prompt_style: str) -> str:
        """The gold completion (after the prefill) in that prompt style."""
        raise NotImplementedError

    def from_fields(self, fields: Mapping[str, Any]) -> Example:
        """An Example from a ``dllmrl score`` input line (the fields ``gold_fields`` writes)."""
        from dllmrl.errors import DataError

        raise DataError(f"task '{self.name}' cannot re-score saved completions (it defines no from_fields)")

    # ------------------------------------------------------------ extras with defaults
    def details(self, ex: Example, completion: str) -> dict[str, Any]:
        """Extra per-record fields for the eval JSONL."""
        return {}

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Extra set-level metrics computed from eval records."""
        return {}

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        """The ground truth as ``dllmrl score`` reads it (``from_fields(gold_fields(ex))`` rebuilds ``ex``'s target)."""
        return {}

    def correct_reward(self, ex: Example, completion: str) -> float:
        """The 'correct' reward: 1.0 when verify() says so."""
        return 1.0 if self.verify(ex, completion) else 0.0


Task = TaskBase
"""The contract's name in type hints."""
