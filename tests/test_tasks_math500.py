"""MATH500 pack: extraction, Hendrycks normalisation, sympy equivalence, format reward fix."""

from __future__ import annotations

import pytest

from dllmrl.tasks.base import Example, response_text, total_reward
from dllmrl.tasks.math500 import MATH500, extract
from dllmrl.tasks.math500.equivalence import hendrycks_equal, normalise, sympy_equal, to_sympy_text


@pytest.fixture(scope="module")
def task():
    return MATH500()


EXTRACT_CASES = [
    # Last box wins, braces matched.
    ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    # Nested boxes: the last "\boxed" is the inner one (as the reference's rfind).
    ("\\boxed{\\boxed{5}}", "5"),
    # No box: the answer tag (the reference would score the whole completion here).
    ("reasoning 1 2 3\n<answer>\n7\n</answer>", "7"),
    # A box left open and no answer tag: nothing.
    ("\\boxed{\\frac{1}{2}", None),
    # Nothing at all.
    ("", None),
]


@pytest.mark.parametrize("completion,expected", EXTRACT_CASES)
def test_extract(completion, expected):
    assert extract(completion) == expected


EQUIV_CASES = [
    # (pred, gold, Hendrycks, sympy) — sympy None means "no verdict" (outside its LaTeX subset).
    # \frac12 shorthand and 0.5 normalise to \frac{1}{2}.
    ("\\frac12", "0.5", True, True),
    # dfrac / tfrac are frac.
    ("\\dfrac{1}{2}", "\\tfrac{1}{2}", True, True),
    # Degrees are dropped.
    ("90^\\circ", "90", True, True),
    # A unit on the right is dropped.
    ("10\\text{ cm}", "10", True, True),
    # "x = 5" keeps the value.
    ("x=5", "5", True, True),
    # Same value written differently: only sympy sees it.
    ("\\frac{\\sqrt{3}}{2}", "\\frac12\\sqrt3", False, True),
    ("3\\sqrt{13}", "\\sqrt{117}", False, True),
    ("p-q", "-q+p", False, True),
    # Thousands separator: a number, not a pair.
    ("1,000", "1000", False, True),
    # Nested \boxed is unwrapped by sympy's reader.
    ("\\boxed{5}", "5", False, True),
    # Tuples compare element by element.
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True, True),
    # Different intervals: open vs half-open.
    ("[1,2)", "(1,2)", False, False),
    # Infinite interval ends.
    ("(2,\\infty)", "(2, \\infty)", True, True),
    # Wrong value.
    ("\\frac{1}{2}", "\\frac{1}{3}", False, False),
    # Words: string comparison only, sympy has no verdict.
    ("\\text{Evelyn}", "\\text{Evelyn}", True, None),
    # Code injection never reaches sympy's eval.
    ("__import__('os').system('true')", "1", False, None),
    # Attribute access through '.' is refused (E.n(99999) would compute 99999 digits).
    ("E.n(99999)", "1", False, None),
    # A power tower is refused before sympy evaluates it.
    ("2^{10^{10^{10}}}", "1", False, None),
]


@pytest.mark.parametrize("pred,gold,hen,sym", EQUIV_CASES)
def test_equivalence(pred, gold, hen, sym):
    assert hendrycks_equal(pred, gold) is hen
    assert sympy_equal(pred, gold) is sym


def test_normalise_matches_the_papers_rules():
    assert normalise("\\frac1{72}") == "\\frac{1}{72}"
    assert normalise("\\sqrt3") == "\\sqrt{3}"
    assert normalise("3/4") == "\\frac{3}{4}"
    assert normalise(".25") == "0.25"
    assert normalise("\\left( 1, 2 \\right)") == "(1,2)"
    assert to_sympy_text("\\text{east}") is None


def test_format_reward_box_bonus_fires(task):
    e = Example("x", "", "5")
    # Answer tag with a box inside: 1 + 1 (the reference's "\boxed" backspace bug gave 1 + 0.5).
    assert task.format_reward(e, "<answer>\\boxed{5}</answer>") == 2.0
    assert task.format_reward(e, "<answer>5</answer>") == 1.5
    assert task.format_reward(e, "\\boxed{5}") == 1.0
    assert task.format_reward(e, "") == 0.5


def test_splits(task):
    assert {k: len(task.load(k)) for k in task.splits()} == task.splits() == {"test": 500, "train": 11498, "validation": 500}
    train = {e.id for e in task.load("train")}
    assert not train & {e.id for e in task.load("validation")}
    assert not {e.meta["problem"] for e in task.load("test")} & {e.meta["problem"] for e in task.load("validation")}


@pytest.mark.parametrize("style", ["eval", "train"])
def test_gold_scores_max_and_garbage_does_not(task, style):
    for e in list(task.load("test", style))[:25]:
        gold = response_text(task, task.sft_target(e, style), style)
        assert task.verify(e, gold), e.target
        assert total_reward(task, e, gold)[0] == pytest.approx(3.0)  # 0.5 * 2.0 + 2.0 * 1
        for bad in ["", "no idea", "<answer>\n\\boxed{}\n</answer>"]:
            assert not task.verify(e, response_text(task, bad, style))


def test_records_report_both_verdicts(task):
    e = Example("x", "", "\\frac{\\sqrt{3}}{2}")
    recs = [task.details(e, "\\boxed{\\frac12\\sqrt3}"), task.details(e, "\\boxed{\\frac{\\sqrt{3}}{2}}"), task.details(e, "")]
    assert recs[0] == {"correct_hendrycks": False, "correct_sympy": True}
    s = task.summary(recs)
    assert s["accuracy_hendrycks"] == pytest.approx(1 / 3) and s["sympy_only"] == 1.0 and s["hendrycks_only"] == 0.0
