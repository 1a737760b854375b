"""Sudoku's one answer extractor, the rules check and cell accuracy.

Extraction follows the reference's evaluation parser (d1/EGSPO ``parse_sudoku_answers``): the first
of these that matches, whitespace then removed:

1. a fenced block of digits inside ``<answer>``;
2. the text of the first ``<answer>`` up to ``</answer>`` (or the end of the completion: the
   reference stops at its end-of-turn token, which our decoding cuts off);
3. the text after ``</answer>``;
4. 16 digits right before ``</answer>``;
5. any standalone 16-digit run (this also reads the compact style's bare answer).

The grid is then cut or padded with '0' to 16 characters, as the reference does.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PATTERNS = [
    re.compile(r"<answer>.*?```\s*([\d\s]+)```", re.DOTALL),
    re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL),
    re.compile(r"</answer>\s*(.*?)$", re.DOTALL),
    re.compile(r".*?(\d{16})\s*</answer>", re.DOTALL),
    re.compile(r"\b(\d{16})\b"),
]


def extract(completion: str) -> str | None:
    """The answer string (whitespace removed), or None when nothing answer-like is found."""
    for pat in _PATTERNS:
        m = pat.search(completion)
        if m and m.group(1).strip():
            return re.sub(r"\s", "", m.group(1))
    return None


def as_grid(answer: str | None) -> str:
    """16 characters: cut or padded with '0' (a blank), as the reference scores it."""
    return ("" if answer is None else answer)[:16].ljust(16, "0")


def cell_counts(answer: str | None, puzzle: str, solution: str) -> tuple[int, int]:
    """(correct, empty): the puzzle's blank cells filled as in the given solution, and their number."""
    grid = as_grid(answer)
    empty = [i for i in range(16) if puzzle[i] == "0"]
    if answer is None:
        return 0, len(empty)
    return sum(grid[i] == solution[i] for i in empty), len(empty)


def units() -> list[list[int]]:
    """The 12 groups of cells that must hold 1-4 once each: 4 rows, 4 columns, 4 boxes."""
    rows = [[4 * r + c for c in range(4)] for r in range(4)]
    cols = [[4 * r + c for r in range(4)] for c in range(4)]
    boxes = [[4 * (br + r) + bc + c for r in range(2) for c in range(2)] for br in (0, 2) for bc in (0, 2)]
    return rows + cols + boxes


_UNITS = units()


def is_valid_grid(grid: str) -> bool:
    """True when ``grid`` is a complete 4x4 sudoku (digits 1-4, every unit holds each once)."""
    if len(grid) != 16 or any(ch not in "1234" for ch in grid):
        return False
    return all(len({grid[i] for i in unit}) == 4 for unit in _UNITS)


def solves(answer: str | None, puzzle: str) -> bool:
    """Solved by the rules of Sudoku: a valid complete grid that keeps every given of the puzzle."""
    if answer is None:
        return False
    grid = as_grid(answer)
    return is_valid_grid(grid) and all(p == "0" or p == g for p, g in zip(puzzle, grid))


@lru_cache(maxsize=1)
def all_grids() -> tuple[str, ...]:
    """Every valid 4x4 grid (there are 288), by backtracking in reading order."""
    out: list[str] = []
    cells = [0] * 16
    peers = [{j for unit in _UNITS if i in unit for j in unit if j != i} for i in range(16)]

    def fill(i: int) -> None:
        if i == 16:
            out.append("".join(map(str, cells)))
            return
        for d in (1, 2, 3, 4):
            if all(cells[j] != d for j in peers[i]):
                cells[i] = d
                fill(i + 1)
                cells[i] = 0

    fill(0)
    return tuple(out)


def completions(puzzle: str) -> list[str]:
    """Every valid grid that keeps the puzzle's givens."""
    givens = [(i, ch) for i, ch in enumerate(puzzle) if ch != "0"]
    return [g for g in all_grids() if all(g[i] == ch for i, ch in givens)]
