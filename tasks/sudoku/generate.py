"""Seeded Sudoku puzzles with a unique solution, standing in for the reference's missing training file.

Example ``i`` of a split is a pure function of (split, i): a ``random.Random`` seeded with a string
(SHA-512 based, independent of PYTHONHASHSEED) picks one of the 288 valid grids and blanks
``BLANKS`` cells at random, retrying until the puzzle has exactly one completion and is not a
test puzzle (and, for train, not a validation puzzle). So any prefix is reproducible, and a split
of a million rows costs nothing until rows are read.
"""

from __future__ import annotations

import random
from typing import AbstractSet

from dllmrl.tasks.sudoku.verify import all_grids, completions

BLANKS = (6, 10)
"""Blank cells per puzzle, drawn uniformly in this range (the test puzzles all have 8)."""
SEED = "dllmrl-sudoku-v1"


def puzzle_at(split: str, i: int, exclude: AbstractSet[str]) -> tuple[str, str]:
    """(puzzle, solution) number ``i`` of a generated split; never a puzzle in ``exclude``."""
    rng = random.Random(f"{SEED}:{split}:{i}")
    grids = all_grids()
    while True:
        solution = rng.choice(grids)
        blanks = set(rng.sample(range(16), rng.randint(*BLANKS)))
        puzzle = "".join("0" if j in blanks else ch for j, ch in enumerate(solution))
        if puzzle not in exclude and len(completions(puzzle)) == 1:
            return puzzle, solution

