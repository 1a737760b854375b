"""GSM8K pack: numeric extraction and comparison, gold parsing, rewards."""

from __future__ import annotations

import pytest

from dllmrl.tasks.base import Example, response_text, total_reward
from dllmrl.tasks.gsm8k import GSM8K
from dllmrl.tasks.gsm8k.verify import extract, gold_answer


@pytest.fixture(scope="module")
def task():
    return GSM8K()


EXTRACT_CASES = [
    # The eval format.
    ("...</reasoning>\n<answer>\n\\boxed{18}\n</answer>", "18"),
    # Thousands separators: "1,000" is 1000 (the reference reads 1).
    ("\\boxed{1,000}", "1000"),
    # Trailing zeros and a dollar sign.
    ("\\boxed{\\$1000.00}", "1000"),
    # The FIRST box that holds a number wins; the prompt's placeholder "\boxed{...}" is skipped.
    ("format: \\boxed{...} so \\boxed{42} and later \\boxed{7}", "42"),
    # A box with words: its first number.
    ("\\boxed{18 dollars per day}", "18"),
    # Nested braces are matched (the reference's regex stops at the first '}').
    ("\\boxed{\\text{18}}", "18"),
    # No box: the LAST number in the answer tag (the train format).
    ("<answer>\nShe makes 9 * 2 = 18\n</answer>", "18"),
    # Negative answers.
    ("<answer>-3</answer>", "-3"),
    # A box that never closes is read up to its first "}" (as the reference's regex does).
    ("\\boxed{360\\text{ hours} hours.\n</answer>", "360"),
    # Decimals stay decimals.
    ("\\boxed{2.5}", "2.5"),
    # Numbers only in the reasoning, no box and no answer tag: nothing.
    ("16 - 3 - 4 = 9 and 9 * 2 = 18", None),
    # Empty.
    ("", None),
]


@pytest.mark.parametrize("completion,expected", EXTRACT_CASES)
def test_extract(completion, expected):
    assert extract(completion) == expected


GOLD_CASES = [
    # Plain.
    ("so 18\n#### 18", "18"),
    # Thousands separator in the gold.
    ("#### 2,125", "2125"),
    # Negative gold (the reference's gold regex fails on it, so such rows were never right).
    ("#### -10", "-10"),
    # No marker.
    ("18", None),
]


@pytest.mark.parametrize("solution,expected", GOLD_CASES)
def test_gold_answer(solution, expected):
    assert gold_answer(solution) == expected


VERIFY_CASES = [
    # Same number, different spelling.
    ("\\boxed{1,000.00}", "1000", True),
    # Off by one.
    ("\\boxed{999}", "1000", False),
    # Negative gold.
    ("<answer>-10</answer>", "-10", True),
    # Sign matters.
    ("<answer>10</answer>", "-10", False),
]


@pytest.mark.parametrize("completion,gold,ok", VERIFY_CASES)
def test_verify(task, completion, gold, ok):
    assert task.verify(Example("x", "", gold), completion) is ok


def test_splits(task):
    assert task.splits() == {"test": 1319, "train": 6973, "validation": 500}
    test = task.load("test")
    assert len(test) == 1319 and test[0].target == "18"
    assert {e.target for e in test if e.target.startswith("-")} == {"-10", "-3"}
    train_ids = {e.id for e in task.load("train")}
    val_ids = {e.id for e in task.load("validation")}
    assert len(val_ids) == 500 and not train_ids & val_ids and len(train_ids | val_ids) == 7473


@pytest.mark.parametrize("style", ["eval", "train"])
def test_gold_scores_max_and_garbage_does_not(task, style):
    e = task.load("test", style)[3]
    gold = response_text(task, task.sft_target(e, style), style)
    assert task.verify(e, gold)
    total, parts = total_reward(task, e, gold)
    assert total == pytest.approx(4.0)  # 0.5 xmlcount + 0.5 + 0.5 + 0.5 + 2.0
    for bad in ["", "I don't know", "<answer>\n\\boxed{}\n</answer>"]:
        assert not task.verify(e, response_text(task, bad, style))
        assert total_reward(task, e, response_text(task, bad, style))[1]["correct"] == 0.0


def test_prompts(task):
    e = task.load("test", "eval")[0]
    assert e.prompt.startswith("You are a math expert.") and "\n</answer>\n\nJanet" in e.prompt
    assert task.load("test", "train")[0].prompt.startswith("\nRespond in the following format:\n<reasoning>\n...")
    with pytest.raises(Exception, match="--prompt-style"):
        task.load("test", "compact")


def test_from_fields(task):
    assert task.from_fields({"answer": "1,600"}).target == "1600"
    assert task.from_fields({"answer": "blah\n#### -3"}).target == "-3"
