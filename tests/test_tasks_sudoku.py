"""Sudoku pack: extraction, rules, cell accuracy, splits and the generator (no torch needed)."""

from __future__ import annotations

import pytest

from dllmrl.tasks.base import Example, response_text, total_reward
from dllmrl.tasks.sudoku import Sudoku, reference_subset
from dllmrl.tasks.sudoku.generate import puzzle_at
from dllmrl.tasks.sudoku.verify import all_grids, completions, extract, is_valid_grid

PUZZLE = "3102200002100320"
SOLUTION = "3142243142131324"


@pytest.fixture(scope="module")
def task():
    return Sudoku()


def ex(puzzle=PUZZLE, solution=SOLUTION):
    return Example("x", "", {"puzzle": puzzle, "solution": solution})


EXTRACT_CASES = [
    # The prompted format, answer on its own line.
    ("</reasoning>\n<answer>\n3142243142131324\n</answer>", "3142243142131324"),
    # Rows split by newlines and spaces: whitespace is removed.
    ("<answer>\n3142\n2431\n4213\n1324\n</answer>", "3142243142131324"),
    # Answer left open (our decoding cuts the end-of-turn token): read to the end.
    ("<answer>\n3142243142131324", "3142243142131324"),
    # Digits in a code fence inside the answer.
    ("<answer>\n```\n3142 2431 4213 1324\n```\n</answer>", "3142243142131324"),
    # The FIRST answer tag wins (the reference's eval parser uses re.search).
    ("<answer>1111</answer> then <answer>3142243142131324</answer>", "1111"),
    # Compact style: the bare 16-digit answer.
    ("3142243142131324", "3142243142131324"),
    # A 17-digit run is not a standalone 16-digit answer.
    ("31422431421313241", None),
    # Prose with no digits run and no tags.
    ("I cannot solve this.", None),
    # Empty completion.
    ("", None),
    # Empty answer tag and nothing after it.
    ("<answer>\n\n</answer>", None),
]


@pytest.mark.parametrize("completion,expected", EXTRACT_CASES)
def test_extract(completion, expected):
    assert extract(completion) == expected


VERIFY_CASES = [
    # The given solution.
    (SOLUTION, True, 1.0),
    # The last cell (a blank) wrong: not solved, 7 of 8 blanks right.
    ("3142243142131323", False, 7 / 8),
    # A given changed: breaks the puzzle even though the grid may look full.
    ("4142243142131324", False, 1.0),
    # Too short: padded with blanks; the 4 blanks in the first 8 cells are right, the rest count as wrong.
    ("31422431", False, 4 / 8),
    # Too long: cut to 16 characters, as the reference does.
    (SOLUTION + "99", True, 1.0),
    # Non-digit characters stay (the reference's eval parser keeps them) and are simply wrong.
    ("31x2243142131324", False, 7 / 8),
]


@pytest.mark.parametrize("answer,solved,cell_acc", VERIFY_CASES)
def test_verify_and_cell_accuracy(task, answer, solved, cell_acc):
    text = f"<answer>\n{answer}\n</answer>"
    assert task.verify(ex(), text) is solved
    assert task.cell_accuracy(ex(), text) == pytest.approx(cell_acc)


def test_solved_by_rules_even_when_the_given_solution_differs(task):
    # A test puzzle with several completions: any valid one is "solved"; cell accuracy keeps the given one.
    rows = task.load("test")
    multi = next(e for e in rows if len(completions(e.target["puzzle"])) > 1)
    other = next(g for g in completions(multi.target["puzzle"]) if g != multi.target["solution"])
    text = f"<answer>{other}</answer>"
    assert task.verify(multi, text)
    assert task.cell_accuracy(multi, text) < 1.0


def test_all_grids():
    grids = all_grids()
    assert len(grids) == 288 and len(set(grids)) == 288
    assert all(is_valid_grid(g) for g in grids)


def test_splits_and_reference_subset(task):
    sizes = task.splits()
    assert sizes["test"] == 500 and sizes["test256"] == 256
    test = task.load("test")
    assert len(test) == 500 and test[0].target["puzzle"] == PUZZLE  # leading zeros kept as strings
    sub = task.load("test256")
    assert len(sub) == 256
    # np.random.seed(42); np.random.choice(500, 256, replace=False): first draws are 361, 73, 374.
    assert reference_subset()[:3] == [361, 73, 374]
    assert sub[0].target["puzzle"] == "4320004330100004"
    assert sum(1 for e in test if len(completions(e.target["puzzle"])) > 1) == 124


def test_generator_is_seeded_unique_and_disjoint(task):
    test = {e.target["puzzle"] for e in task.load("test")}
    val = task.load("validation")
    val_puzzles = [e.target["puzzle"] for e in val]
    assert len(val) == 500 and len(set(val_puzzles)) == 500
    assert not test & set(val_puzzles)
    train = task.load("train")
    assert len(train) == 1_000_000
    first = [e.target["puzzle"] for e in train[:300]]
    assert first == [e.target["puzzle"] for e in Sudoku().load("train")[:300]]  # seeded: same every time
    assert not (set(first) & test) and not (set(first) & set(val_puzzles))
    for e in train[:50]:
        assert completions(e.target["puzzle"]) == [e.target["solution"]]  # unique solution
    # A puzzle that the generator would emit is skipped when excluded.
    p, _ = puzzle_at("train", 7, frozenset())
    assert puzzle_at("train", 7, frozenset({p}))[0] != p


@pytest.mark.parametrize("style", ["eval", "train", "compact"])
def test_gold_scores_max_and_garbage_does_not(task, style):
    e = task.load("test256", style)[5]
    gold = response_text(task, task.sft_target(e, style), style)
    assert task.verify(e, gold)
    total, parts = total_reward(task, e, gold)
    assert parts == {"cell_accuracy": 1.0, "correct": 1.0} and total == 1.0
    for bad in ["", "<answer>\n</answer>", "the answer is four", "<answer>zzzzzzzzzzzzzzzz</answer>"]:
        assert not task.verify(e, response_text(task, bad, style))
        assert total_reward(task, e, response_text(task, bad, style))[0] == 0.0


def test_prompts(task):
    e = task.load("test", "eval")[0]
    assert e.prompt.startswith("\nPlease solve the following 4x4 Sudoku puzzle.")
    assert e.prompt.endswith("\n\nSolve the following Sudoku puzzle: 3102200002100320\n")
    assert task.load("test", "compact")[0].prompt == PUZZLE
    assert task.prefill_for("eval") == "<reasoning>" and task.prefill_for("train") == "" and task.prefill == "<reasoning>"


def test_unknown_split_and_style_say_what_to_do(task):
    from dllmrl.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'test'"):
        task.load("tset")
    with pytest.raises(ConfigError, match="--prompt-style"):
        task.load("test", "chat")


def test_details_and_summary(task):
    recs = [task.details(ex(), "<answer>3142243142131324</answer>"), task.details(ex(), "")]
    assert recs[0]["cells_correct"] == 8 and recs[1]["cells_correct"] == 0
    assert task.summary(recs)["cell_acc"] == pytest.approx(0.5)
