"""4x4 Sudoku (the d1 / EGSPO benchmark).

    from dllmrl.tasks.sudoku import Sudoku
    ex = Sudoku().load("test256")[0]

Splits: ``test`` (the reference's 500 test puzzles), ``test256`` (the 256 the reference evaluates:
numpy seed 42), and generated ``validation`` (500) and ``train`` (1,000,000, made lazily) puzzles,
all with a unique solution and none of them a test puzzle; train never repeats a validation puzzle.

Scoring: the paper's number is cell accuracy (correct blank cells over all blank cells of the set,
against the given solution) — eval reports it as ``cell_acc`` and it is the training reward, as in
the reference. ``correct`` (verify) is "solved by the rules of Sudoku, givens respected", which
differs from the given solution on puzzles with several completions (124 of the 500).
"""

from __future__ import annotations

import csv
from functools import cached_property
from typing import Any, Mapping, Sequence

from dllmrl.errors import DataError

from dllmrl.tasks.base import Example, RewardFn, TaskBase
from dllmrl.tasks.common import LazySplit, data_file
from dllmrl.tasks.sudoku import prompts
from dllmrl.tasks.sudoku.generate import puzzle_at
from dllmrl.tasks.sudoku.verify import as_grid, cell_counts, extract, is_valid_grid, solves

TEST_FILE = "4x4_test_sudoku.csv"
N_VALIDATION = 500
N_TRAIN = 1_000_000  # the size of the reference's (missing) training file


class Sudoku(TaskBase):
    name = "sudoku"
    version = "1"  # bump when the prompts, the parser or the verifier change
    prompt_styles = ("eval", "train", "compact")
    headline = "cell_acc"
    eval_split = "test256"  # the reference evaluates these 256; 'test' has all 500
    split_sizes = {"test": 500, "test256": 256, "validation": N_VALIDATION, "train": N_TRAIN}

    # ------------------------------------------------------------------ data
    @cached_property
    def _test_rows(self) -> list[tuple[str, str]]:
        path = data_file(__file__, TEST_FILE)
        rows = []
        with path.open(newline="", encoding="utf-8") as f:
            # csv keeps fields as strings, so grids keep their leading zeros.
            for n, row in enumerate(csv.DictReader(f), 2):
                puzzle, solution = row.get("Puzzle") or "", row.get("Solution") or ""
                if len(puzzle) != 16 or not puzzle.isdigit() or not is_valid_grid(solution):
                    raise DataError(f"{path}:{n} is not a 16-digit puzzle with a valid solution; reinstall dllmrl")
                rows.append((puzzle, solution))
        if len(rows) != 500:
            raise DataError(f"{path} has {len(rows)} puzzles, expected 500; reinstall dllmrl")
        return rows

    @cached_property
    def _validation_rows(self) -> list[tuple[str, str]]:
        test = frozenset(p for p, _ in self._test_rows)
        rows, seen, i = [], set(), 0
        while len(rows) < N_VALIDATION:  # distinct puzzles, so the split really holds 500
            p, s = puzzle_at("validation", i, test)
            if p not in seen:
                seen.add(p)
                rows.append((p, s))
            i += 1
        return rows

    def _load(self, split: str) -> Sequence[Example]:
        if split == "test":
            return [self._example(f"test-{i}", p, s) for i, (p, s) in enumerate(self._test_rows)]
        if split == "test256":
            return [self._example(f"test-{i}", *self._test_rows[i]) for i in reference_subset()]
        if split == "validation":
            return [self._example(f"validation-{i}", p, s) for i, (p, s) in enumerate(self._validation_rows)]
        exclude = frozenset(p for p, _ in self._test_rows) | frozenset(p for p, _ in self._validation_rows)
        return LazySplit(N_TRAIN, lambda i: self._example(f"train-{i}", *puzzle_at("train", i, exclude)))

    @staticmethod
    def _example(id_: str, puzzle: str, solution: str) -> Example:
        return Example(id_, "", {"puzzle": puzzle, "solution": solution})

    def from_fields(self, fields: Mapping[str, Any]) -> Example:
        """An example from a ``dllmrl score`` line: needs ``puzzle`` and ``solution``."""
        puzzle, solution = str(fields.get("puzzle", "")), str(fields.get("solution", ""))
        if len(puzzle) != 16 or len(solution) != 16:
            raise DataError("a sudoku line needs 'puzzle' and 'solution' as 16-character strings (quote them: leading zeros)")
        return self._example(str(fields.get("id", "")), puzzle, solution)

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, ex: Example, prompt_style: str) -> str:
        template = prompts.COMPACT if prompt_style == "compact" else prompts.USER_TURN
        return template.format(puzzle=ex.target["puzzle"])

    def sft_target(self, ex: Example, prompt_style: str) -> str:
        puzzle, solution = ex.target["puzzle"], ex.target["solution"]
        if self.check_style(prompt_style) == "compact":
            return solution
        steps = [
            prompts.REASONING_LINE.format(row=i // 4 + 1, col=i % 4 + 1, digit=solution[i])
            for i in range(16) if puzzle[i] == "0"
        ]
        body = prompts.TARGET.format(reasoning="\n".join(steps), solution=solution)
        # With no prefill (train style) the completion opens the reasoning tag itself.
        return body if self.prefill_for(prompt_style) else "<reasoning>" + body

    # ------------------------------------------------------------------ scoring
    def extract(self, completion: str) -> str | None:
        return extract(completion)

    def verify(self, ex: Example, completion: str) -> bool:
        return solves(extract(completion), ex.target["puzzle"])

    def cell_accuracy(self, ex: Example, completion: str) -> float:
        """The reference's Sudoku reward: blank cells filled as in the given solution, over the blanks."""
        correct, empty = cell_counts(extract(completion), ex.target["puzzle"], ex.target["solution"])
        return correct / empty if empty else 0.0

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        # The reference trains on cell accuracy alone (weight 1); 'correct' is logged, not rewarded.
        return {"cell_accuracy": (self.cell_accuracy, 1.0), "correct": (self.correct_reward, 0.0)}

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        return {"puzzle": ex.target["puzzle"], "solution": ex.target["solution"]}

    def details(self, ex: Example, completion: str) -> dict[str, Any]:
        answer = extract(completion)
        correct, empty = cell_counts(answer, ex.target["puzzle"], ex.target["solution"])
        return {"cells_correct": correct, "cells_empty": empty, "grid": as_grid(answer) if answer else None}

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        correct = sum(int(r.get("cells_correct", 0)) for r in records)
        empty = sum(int(r.get("cells_empty", 0)) for r in records)
        return {"cell_acc": correct / empty if empty else 0.0}


def reference_subset() -> list[int]:
    """The reference's 256 test rows: ``np.random.seed(42); np.random.choice(500, 256, replace=False)``."""
    import numpy as np

    # A private RandomState seeded like the global one gives the same draw without touching global state.
    return [int(i) for i in np.random.RandomState(42).choice(500, 256, replace=False)]
