"""Code packs (HumanEval, MBPP): extraction, the test harness, partial credit, gold programs pass."""

from __future__ import annotations

import pytest

from dllmrl.tasks.base import response_text, total_reward
from dllmrl.tasks.code import code_in_answer, passed_counts
from dllmrl.tasks.common import first_python_block
from dllmrl.tasks.humaneval import HumanEval, docstring_of
from dllmrl.tasks.mbpp import MBPP


@pytest.fixture(scope="module")
def he():
    return HumanEval()


@pytest.fixture(scope="module")
def mbpp():
    return MBPP()


def fence(code: str) -> str:
    return f"<answer>\n```python\n{code}\n```\n</answer>"


EXTRACT_CASES = [
    # The prompted format.
    ("<answer>\n```python\nx = 1\n```\n</answer>", "x = 1\n"),
    # The FIRST python block wins (the reference's rule).
    ("```python\na = 1\n```\nthen\n```python\nb = 2\n```", "a = 1\n"),
    # A block of another language is not python.
    ("```js\nlet a = 1\n```", None),
    # An unclosed fence (generation ran out): nothing.
    ("```python\ndef f():\n    return 1", None),
    # No code.
    ("I would write a loop.", None),
]


@pytest.mark.parametrize("completion,expected", EXTRACT_CASES)
def test_extract(completion, expected):
    assert first_python_block(completion) == expected


def test_docstring_only_prompt(he):
    e = he.load("test")[0]
    assert e.prompt.endswith("given threshold.\n>>> has_close_elements([1.0, 2.0, 3.0], 0.5)\nFalse\n"
                             ">>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\nTrue")
    assert "def has_close_elements" not in e.prompt
    assert docstring_of('def f():\n    """One line."""\n') == "One line."


HE_CASES = [
    # Correct, named as the entry point.
    ("def has_close_elements(numbers, threshold):\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) "
     "for j, b in enumerate(numbers) if i != j)", True),
    # Correct, with a helper defined first: the entry point is checked (the reference checked the helper).
    ("def dist(a, b):\n    return abs(a - b)\n\ndef has_close_elements(numbers, threshold):\n    return any(dist(a, b) < "
     "threshold for i, a in enumerate(numbers) for j, b in enumerate(numbers) if i != j)", True),
    # Correct but renamed: the first function is checked, as the reference does.
    ("def solve(numbers, threshold):\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) "
     "for j, b in enumerate(numbers) if i != j)", True),
    # Wrong answer.
    ("def has_close_elements(numbers, threshold):\n    return False", False),
    # Exits with status 0 before the checks run.
    ("import sys\nsys.exit(0)", False),
    # Syntax error.
    ("def has_close_elements(:", False),
]


@pytest.mark.parametrize("code,ok", HE_CASES)
def test_humaneval_verify(he, code, ok):
    assert he.verify(he.load("test")[0], fence(code)) is ok


def test_mbpp_partial_credit(mbpp):
    e = mbpp.load("test")[0]  # remove_Occ: three asserts
    assert e.target["tests"][0].startswith("assert remove_Occ(")
    # Right only when the character occurs twice in 'hello' style inputs: passes 1 of 3.
    partial = "def remove_Occ(s, ch):\n    return 'heo' if s == 'hello' else s"
    assert not mbpp.verify(e, fence(partial))
    assert mbpp.tests_reward(e, fence(partial)) == pytest.approx(1 / 3)
    d = mbpp.details(e, fence(partial))
    assert d["sandbox"] == "failed" and (d["tests_passed"], d["tests_total"]) == (1, 3)
    assert mbpp.details(e, "no code")["sandbox"] == "no-code"


def test_code_in_answer_bonus():
    assert code_in_answer("<answer>\n```python\nx = 1\n```\n</answer>")
    assert not code_in_answer("```python\nx = 1\n```\n<answer>\nx\n</answer>")
    assert passed_counts("junk\n__DLLMRL_TESTS__ 2 3\n") == (2, 3)


@pytest.mark.parametrize("which", ["humaneval", "mbpp"])
@pytest.mark.parametrize("style", ["eval", "train"])
def test_gold_scores_max_and_garbage_does_not(he, mbpp, which, style):
    task = he if which == "humaneval" else mbpp
    for e in list(task.load("test", style))[:4]:
        gold = response_text(task, task.sft_target(e, style), style)
        assert task.verify(e, gold), e.id
        total, parts = total_reward(task, e, gold)
        assert parts == {"xmlcount": 0.5, "tests": 1.0, "code_in_answer": 1.0, "correct": 1.0} and total == 2.0
        for bad in ["", "no code here", fence("pass"), fence("def (")]:
            assert not task.verify(e, response_text(task, bad, style))
            assert total_reward(task, e, response_text(task, bad, style))[1]["tests"] == 0.0


def test_mbpp_splits_exclude_the_sanitized_test(mbpp):
    test = {e.target["task_id"] for e in mbpp.load("test")}
    train = {e.target["task_id"] for e in mbpp.load("train")}
    val = {e.target["task_id"] for e in mbpp.load("validation")}
    assert len(test) == 257 and len(train) == 627 and len(val) == 90
    assert not test & train and not test & val and not train & val
    assert all(511 <= t <= 600 for t in val)


def test_from_fields(he, mbpp):
    assert he.from_fields({"task_id": "HumanEval/3"}).id == "HumanEval/3"
    assert mbpp.from_fields({"task_id": 11}).target["task_id"] == 11
    assert mbpp.from_fields({"task_id": "mbpp/11"}).target["task_id"] == 11
    with pytest.raises(Exception, match="task_id"):
        he.from_fields({"task_id": "HumanEval/999"})
