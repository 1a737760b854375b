"""Countdown's one answer extractor and an exact, safe evaluator.

Extraction (the reference's evaluation parser, with its fallback fixed):

1. the last ``\\boxed{...}`` (brace-matched);
2. else the first ``<answer>...</answer>``. The reference means to do this but never does: its
   ``last_boxed_only_string`` returns the whole text when there is no ``\\boxed``, so a boxless
   answer is scored on the whole completion, whose reasoning numbers then fail the check;
3. else the whole completion, but only when it is an arithmetic expression by itself (the compact
   style's answer; the reference would score such a completion the same way).

Then ``\\times``/``\\cdot``/``×`` become ``*``, ``\\div``/``÷`` become ``/``, and "expr = 42" keeps
"expr". Correct: the integers written are exactly the given multiset, and the value is within
1e-5 of the target.

Evaluation parses the expression with ``ast`` and computes it with exact fractions; only
``+ - * /``, unary minus and parentheses are allowed. The reference ``eval``s anything matching
``[\\d+\\-*/().\\s]``, which also lets ``**`` (``9**9**9`` hangs the scorer) and ``//`` through;
those are rejected here.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

from dllmrl.tasks.common import answer_tag, last_boxed

_EXPR_CHARS = re.compile(r"^[\d+\-*/().\s]+$")
_EQUALS = re.compile(r"([0-9+\-*/() ]+)=[0-9. ]+")
_LATEX = [("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"), ("−", "-")]


def _normalise(expr: str) -> str:
    for src, dst in _LATEX:
        expr = expr.replace(src, dst)
    m = _EQUALS.search(expr)  # "3 + 4 * 5 = 23" -> "3 + 4 * 5", as the reference does
    return (m.group(1) if m else expr).strip()


def extract(completion: str) -> str | None:
    """The expression the completion answers with, normalised; None when there is none."""
    found = last_boxed(completion)
    if found is None:
        found = answer_tag(completion)
    if found is None:
        bare = _normalise(completion)
        found = bare if bare and _EXPR_CHARS.match(bare) else None
    if found is None:
        return None
    expr = _normalise(found)
    return expr or None


def numbers_used(expr: str) -> list[int]:
    """Every integer written in the expression (the reference reads "3.5" as 3 and 5)."""
    return [int(n) for n in re.findall(r"\d+", expr)]


_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def evaluate(expr: str) -> Fraction | None:
    """Exact value of an expression of numbers, + - * / and parentheses; None if it is anything else."""
    if not _EXPR_CHARS.match(expr) or len(expr) > 200:
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("not allowed")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def is_solution(expr: str | None, numbers: list[int], target: int) -> bool:
    """Uses exactly the given numbers, each once, and equals the target (within 1e-5)."""
    if expr is None or sorted(numbers_used(expr)) != sorted(numbers):
        return False
    value = evaluate(expr)
    return value is not None and abs(float(value) - target) < 1e-5
