"""Countdown pack: extraction, safe evaluation, the solver/generator and the reward levels."""

from __future__ import annotations

import itertools
import random

import pytest

from dllmrl.tasks.base import Example, response_text, total_reward
from dllmrl.tasks.countdown import Countdown
from dllmrl.tasks.countdown.solver import expressions, key, puzzle_at, reachable, solve
from dllmrl.tasks.countdown.verify import evaluate, extract, is_solution


@pytest.fixture(scope="module")
def task():
    return Countdown()


def ex(numbers=(30, 100, 93), target=23):
    return Example("x", "", {"numbers": list(numbers), "target": target})


EXTRACT_CASES = [
    # The eval format: boxed inside the answer tag.
    ("<answer>\n\\boxed{30 + 93 - 100}\n</answer>", "30 + 93 - 100"),
    # The LAST boxed wins (reasoning may box intermediate tries).
    ("try \\boxed{1+2} ... <answer>\\boxed{93-100+30}</answer>", "93-100+30"),
    # The train format: a bare expression in the answer tag (the reference's eval would miss it: bug fixed).
    ("I add 30 and 93 then subtract 100.\n</reasoning>\n<answer>\n30+93-100\n</answer>", "30+93-100"),
    # LaTeX operators are mapped to Python ones.
    ("\\boxed{(100 - 93) \\times 30 \\div 10}", "(100 - 93) * 30 / 10"),
    # "expr = target" keeps the expression only.
    ("\\boxed{30 + 93 - 100 = 23}", "30 + 93 - 100"),
    # Compact style: the completion is the expression itself.
    ("30+93-100", "30+93-100"),
    # Prose without tags is not an answer.
    ("The answer is 30 plus 93 minus 100.", None),
    # Empty completion.
    ("", None),
    # An unclosed box (generation stopped inside it), and no answer tag: nothing.
    ("\\boxed{30+93-", None),
]


@pytest.mark.parametrize("completion,expected", EXTRACT_CASES)
def test_extract(completion, expected):
    assert extract(completion) == expected


VERIFY_CASES = [
    # Right numbers, right value.
    ("30+93-100", True),
    # Same, other order and brackets.
    ("(93 - 100) + 30", True),
    # A number used twice.
    ("30+93-100+30-30", False),
    # A number missing.
    ("123-100", False),
    # Right numbers, wrong value.
    ("30+93+100", False),
    # Power is not an allowed operation (the reference's eval would accept it; 9**9**9 would hang it).
    ("30**1+93-100", False),
    # Floor division is not an allowed operation either.
    ("(30+93)//100", False),
    # Division by zero is simply wrong, not a crash.
    ("30/(100-100)+93", False),
    # Letters are not arithmetic.
    ("x+93-100", False),
]


@pytest.mark.parametrize("expr,ok", VERIFY_CASES)
def test_is_solution(expr, ok):
    assert is_solution(expr, [30, 100, 93], 23) is ok


def test_fractions_are_exact():
    # 3 / 7 * 7 is exactly 3 with fractions (floats would be within 1e-5 anyway).
    assert evaluate("3/7*7") == 3
    assert is_solution("10/(5/2)", [10, 5, 2], 4)


def test_solver_expressions_evaluate_to_their_value():
    rng = random.Random(0)
    for _ in range(30):
        nums = [rng.randint(1, 99) for _ in range(3)]
        for expr, value, _whole in expressions(nums):
            assert evaluate(expr) == value, expr


def test_solver_solves_every_test_puzzle(task):
    for e in task.load("test"):
        expr = solve(e.target["numbers"], e.target["target"])
        assert expr is not None and is_solution(expr, e.target["numbers"], e.target["target"])
    assert solve([1, 1, 1], 100) is None


def test_splits_are_disjoint(task):
    test = {key(e.target["numbers"], e.target["target"]) for e in task.load("test")}
    train = task.load("train")
    assert len(train) == 4925
    train_keys = {key(e.target["numbers"], e.target["target"]) for e in train}
    assert not test & train_keys  # the two overlapping training rows are dropped
    assert "train-133" not in {e.id for e in train} and "train-8498" not in {e.id for e in train}
    val = task.load("validation")
    val_keys = {key(e.target["numbers"], e.target["target"]) for e in val}
    assert len(val_keys) == 500 and not val_keys & (test | train_keys)
    gen = task.load("generated")[:200]
    assert all(key(e.target["numbers"], e.target["target"]) not in test | train_keys | val_keys for e in gen)
    assert [e.target for e in gen[:20]] == [e.target for e in Countdown().load("generated")[:20]]  # seeded
    for e in gen[:20]:
        assert e.target["target"] in reachable(e.target["numbers"]) and 10 <= e.target["target"] <= 100
    p = puzzle_at("generated", 3, frozenset())
    assert puzzle_at("generated", 3, frozenset({key(*p)})) != p


@pytest.mark.parametrize("style", ["eval", "train", "compact"])
def test_gold_scores_max_and_garbage_does_not(task, style):
    e = task.load("test", style)[7]
    gold = response_text(task, task.sft_target(e, style), style)
    assert task.verify(e, gold)
    assert total_reward(task, e, gold) == (pytest.approx(1.0), {"correct": 1.0, "format": 1.0})
    for bad in ["", "no idea", "<answer>\n</answer>"]:
        assert not task.verify(e, response_text(task, bad, style))
        assert total_reward(task, e, response_text(task, bad, style))[0] == 0.0


def test_reward_levels(task):
    # The reference's 1.0 / 0.1 / 0: correct, found-but-wrong, nothing found.
    assert total_reward(task, ex(), "<answer>30+93-100</answer>")[0] == pytest.approx(1.0)
    assert total_reward(task, ex(), "<answer>30+93+100</answer>")[0] == pytest.approx(0.1)
    assert total_reward(task, ex(), "I give up")[0] == 0.0


def test_prompts(task):
    e = task.load("test", "eval")[0]
    assert e.prompt.endswith("</answer>\n\nNumbers: [30, 100, 93]\nTarget: 23")
    assert "\\boxed{} tags" in e.prompt
    assert task.load("test", "compact")[0].prompt == "30 100 93 -> 23"
    assert "Using only the numbers [30, 100, 93], create" in task.load("test", "train")[0].prompt


def test_from_fields(task):
    e = task.from_fields({"numbers": "30,100,93", "target": "23"})
    assert e.target == {"numbers": [30, 100, 93], "target": 23}
    assert task.verify(e, "\\boxed{30+93-100}")
