"""Exhaustive solver and generator for three-number Countdown.

    python -c "from dllmrl.tasks.countdown.solver import solve; print(solve([44, 19, 35], 98))"

Three numbers give 6 orders x 16 operator pairs x 2 bracketings = 192 expressions, so solving is
exhaustive and instant. ``solve`` returns the first solution in a fixed order that prefers
expressions without parentheses and with whole-number intermediate results, which makes neat SFT
targets. The generator mimics the HF Countdown-Tasks-3to4 style: numbers in 1..99, a reachable
integer target in 10..100.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from typing import AbstractSet, Iterator

OPS = "+-*/"
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
NUMBERS = (1, 99)
TARGETS = (10, 100)
SEED = "dllmrl-countdown-v1"


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def _wrap(text: str, op: str | None, parent: str, right: bool) -> str:
    """Parenthesise a sub-expression only where precedence or left-associativity needs it."""
    if op is None:
        return text
    if _PREC[op] < _PREC[parent] or (right and _PREC[op] == _PREC[parent] and parent in "-/"):
        return f"({text})"
    return text


def expressions(numbers: list[int]) -> Iterator[tuple[str, Fraction, bool]]:
    """(expression, exact value, all intermediate values whole) for every way to combine the numbers."""
    nums = [Fraction(n) for n in numbers]
    for a, b, c in itertools.permutations(range(len(nums)), 3):
        x, y, z = nums[a], nums[b], nums[c]
        sx, sy, sz = str(numbers[a]), str(numbers[b]), str(numbers[c])
        for o1, o2 in itertools.product(OPS, repeat=2):
            inner = _apply(o1, x, y)  # (x o1 y) o2 z
            if inner is not None:
                v = _apply(o2, inner, z)
                if v is not None:
                    yield f"{_wrap(f'{sx}{o1}{sy}', o1, o2, False)}{o2}{sz}", v, inner.denominator == 1
            inner = _apply(o2, y, z)  # x o1 (y o2 z)
            if inner is not None:
                v = _apply(o1, x, inner)
                if v is not None:
                    yield f"{sx}{o1}{_wrap(f'{sy}{o2}{sz}', o2, o1, True)}", v, inner.denominator == 1


def solve(numbers: list[int], target: int) -> str | None:
    """A neat expression using each number once that equals ``target``; None if there is none."""
    found = [(("(" in e), not whole, e) for e, v, whole in expressions(numbers) if v == target]
    return min(found)[2] if found else None


def reachable(numbers: list[int]) -> set[int]:
    """Every whole-number target the numbers can make."""
    return {int(v) for _e, v, _w in expressions(numbers) if v.denominator == 1}


def key(numbers: list[int], target: int) -> tuple[tuple[int, ...], int]:
    """Identity of a puzzle: the multiset of numbers and the target."""
    return tuple(sorted(numbers)), int(target)


def puzzle_at(split: str, i: int, exclude: AbstractSet[tuple[tuple[int, ...], int]]) -> tuple[list[int], int]:
    """Generated puzzle ``i`` of a split (seeded by split and index); never one in ``exclude``."""
    rng = random.Random(f"{SEED}:{split}:{i}")
    while True:
        numbers = [rng.randint(*NUMBERS) for _ in range(3)]
        targets = sorted(t for t in reachable(numbers) if TARGETS[0] <= t <= TARGETS[1])
        if not targets:
            continue
        target = rng.choice(targets)
        if key(numbers, target) not in exclude:
            return numbers, target
