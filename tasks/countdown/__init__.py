"""Countdown with three numbers (the d1 / EGSPO benchmark).

    from dllmrl.tasks.countdown import Countdown
    ex = Countdown().load("test")[0]          # ex.target == {"numbers": [30, 100, 93], "target": 23}

Splits: ``test`` (the reference's 256), ``train`` (4,925 rows of the reference's HF training split:
the 4,927 with three numbers that could be obtained, minus the two that are test puzzles),
``validation`` (500 generated) and ``generated`` (1,000,000 generated lazily, for more training
data). Generated puzzles are never test, train-file or (for ``generated``) validation puzzles.

Rewards, as the reference's ``countdown_reward_func``: 1.0 for a correct expression, 0.1 for an
expression that is found but wrong, 0 when none is found. Here that is ``correct`` (weight 0.9)
plus ``format`` (an expression was found, weight 0.1), which gives exactly 1.0 / 0.1 / 0.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Mapping, Sequence

from dllmrl.errors import DataError

from dllmrl.tasks.base import Example, RewardFn, TaskBase
from dllmrl.tasks.common import LazySplit, data_file, read_jsonl, require
from dllmrl.tasks.countdown import prompts
from dllmrl.tasks.countdown.solver import key, puzzle_at, solve
from dllmrl.tasks.countdown.verify import extract, is_solution

TEST_FILE = "countdown_cd3_test.jsonl"
TRAIN_FILE = "countdown_3num_train_tinyzero_pr93.jsonl"
N_VALIDATION = 500
N_GENERATED = 1_000_000


class Countdown(TaskBase):
    name = "countdown"
    version = "1"  # bump when the prompts, the parser or the verifier change
    prompt_styles = ("eval", "train", "compact")
    split_sizes = {"test": 256, "train": 4925, "validation": N_VALIDATION, "generated": N_GENERATED}

    # ------------------------------------------------------------------ data
    @cached_property
    def _test(self) -> list[tuple[list[int], int]]:
        path = data_file(__file__, TEST_FILE)
        rows = []
        for n, row in enumerate(read_jsonl(path), 1):
            require(row, ("input", "output"), f"{path}:{n}")
            try:
                rows.append(([int(x) for x in str(row["input"]).split(",")], int(row["output"])))
            except ValueError:
                raise DataError(f"{path}:{n} has non-integer numbers or target; reinstall dllmrl") from None
        return rows

    @cached_property
    def _train(self) -> list[tuple[list[int], int, int]]:
        path = data_file(__file__, TRAIN_FILE)
        test = {key(*p) for p in self._test}
        rows = []
        for n, row in enumerate(read_jsonl(path), 1):
            require(row, ("nums", "target", "hf_train_row"), f"{path}:{n}")
            if key(row["nums"], row["target"]) in test:
                continue  # two rows of the HF training split are test puzzles (hf_train_row 133 and 8498)
            rows.append(([int(x) for x in row["nums"]], int(row["target"]), int(row["hf_train_row"])))
        return rows

    @cached_property
    def _validation(self) -> list[tuple[list[int], int]]:
        exclude = {key(*p) for p in self._test} | {key(n, t) for n, t, _ in self._train}
        rows, i = [], 0
        while len(rows) < N_VALIDATION:  # distinct puzzles
            p = puzzle_at("validation", i, exclude)
            exclude.add(key(*p))
            rows.append(p)
            i += 1
        return rows

    def _load(self, split: str) -> Sequence[Example]:
        if split == "test":
            return [self._example(f"test-{i}", n, t) for i, (n, t) in enumerate(self._test)]
        if split == "train":
            return [self._example(f"train-{row}", n, t) for n, t, row in self._train]
        if split == "validation":
            return [self._example(f"validation-{i}", n, t) for i, (n, t) in enumerate(self._validation)]
        exclude = frozenset({key(*p) for p in self._test} | {key(n, t) for n, t, _ in self._train}
                            | {key(*p) for p in self._validation})
        return LazySplit(N_GENERATED, lambda i: self._example(f"generated-{i}", *puzzle_at("generated", i, exclude)))

    @staticmethod
    def _example(id_: str, numbers: list[int], target: int) -> Example:
        return Example(id_, "", {"numbers": list(numbers), "target": int(target)})

    def from_fields(self, fields: Mapping[str, Any]) -> Example:
        """An example from a ``dllmrl score`` line: needs ``numbers`` (list or "a,b,c") and ``target``."""
        numbers, target = fields.get("numbers"), fields.get("target")
        try:
            if isinstance(numbers, str):
                numbers = [int(x) for x in numbers.strip("[]").split(",")]
            return self._example(str(fields.get("id", "")), [int(x) for x in numbers], int(target))  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise DataError("a countdown line needs 'numbers' (a list of integers) and 'target' (an integer)") from None

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        return {"numbers": ex.target["numbers"], "target": ex.target["target"]}

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, ex: Example, prompt_style: str) -> str:
        numbers, target = ex.target["numbers"], ex.target["target"]
        if prompt_style == "compact":
            return prompts.COMPACT.format(spaced=" ".join(map(str, numbers)), target=target)
        # str(list) gives "[30, 100, 93]", as the reference writes the numbers.
        if prompt_style == "eval":
            return prompts.EVAL_SYSTEM_PROMPT + "\n\n" + prompts.EVAL_QUESTION.format(numbers=numbers, target=target)
        return prompts.TRAIN_USER_TURN.format(numbers=numbers, target=target)

    def sft_target(self, ex: Example, prompt_style: str) -> str:
        numbers, target = ex.target["numbers"], ex.target["target"]
        expression = solve(numbers, target)
        if expression is None:
            raise DataError(f"countdown example {ex.id} ({numbers} -> {target}) has no solution; it cannot have a gold completion")
        style = self.check_style(prompt_style)
        if style == "compact":
            return expression
        reasoning = prompts.REASONING.format(expression=expression, target=target, numbers=numbers)
        template = prompts.EVAL_TARGET if style == "eval" else prompts.TRAIN_TARGET
        return template.format(reasoning=reasoning, expression=expression)

    # ------------------------------------------------------------------ scoring
    def extract(self, completion: str) -> str | None:
        return extract(completion)

    def verify(self, ex: Example, completion: str) -> bool:
        return is_solution(extract(completion), ex.target["numbers"], ex.target["target"])

    def format_reward(self, ex: Example, completion: str) -> float:
        """1.0 when an expression was found (the reference's 0.1 'format score', weighted 0.1)."""
        return 1.0 if extract(completion) is not None else 0.0

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        return {"correct": (self.correct_reward, 0.9), "format": (self.format_reward, 0.1)}
