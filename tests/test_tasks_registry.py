"""Every registered pack honours the interface: gold scores correct and best, garbage does not; listing is cheap."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from dllmrl.errors import UnknownNameError
from dllmrl.registry import TASKS, Registry
from dllmrl.tasks.base import Example, get_task, response_text, total_reward
from toy_tasks import ExactMatchToy

BUILTIN = ["countdown", "gsm8k", "humaneval", "math500", "mbpp", "sudoku"]
GARBAGE = ["", "I am not sure.", "<reasoning>\nhmm\n</reasoning>\n<answer>\n???\n</answer>\n", "}{\\boxed{" * 5]


def test_builtin_packs_are_registered():
    assert set(BUILTIN) <= set(TASKS.names())


@pytest.mark.parametrize("name", BUILTIN)
def test_gold_is_correct_and_best_garbage_is_not(name):
    task = get_task(name)
    split = getattr(task, "eval_split", "test")
    for style in task.prompt_styles:
        examples = task.load(split, style)
        for ex in (examples[0], examples[len(examples) - 1]):
            assert ex.prompt, "a prompt in every style"
            gold = response_text(task, task.sft_target(ex, style), style)
            assert task.verify(ex, gold), (name, style, ex.id)
            best, parts = total_reward(task, ex, gold)
            assert parts.get("correct", 1.0) == 1.0
            assert task.extract(gold) is not None
            for bad in GARBAGE:
                text = response_text(task, bad, style)
                assert not task.verify(ex, text), (name, style, bad)
                assert total_reward(task, ex, text)[0] < best


@pytest.mark.parametrize("name", BUILTIN)
def test_from_fields_round_trips_the_gold(name):
    task = get_task(name)
    ex = task.load(task.eval_split)[0]
    again = task.from_fields({**task.gold_fields(ex), "completion": ""})
    gold = response_text(task, task.sft_target(ex, "eval"), "eval")
    assert task.verify(again, gold)


def test_unknown_task_says_did_you_mean():
    with pytest.raises(UnknownNameError, match="did you mean 'gsm8k'"):
        get_task("gsm8")


def test_listing_tasks_imports_no_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom dllmrl.cli import app\n"
            "r = CliRunner().invoke(app, ['ls', 'tasks'])\nassert r.exit_code == 0, r.output\n"
            "assert 'sudoku' in r.output and 'test256 (256)' in r.output\n"
            "print(sorted(m for m in ('torch', 'sympy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


class ToyTask(ExactMatchToy):
    """A third-party pack: the answer is the word 'yes'."""

    name = "toy"
    split_sizes = {"test": 1}

    def _load(self, split):
        return [Example("toy-0", "", "yes")]

    def build_prompt(self, ex, prompt_style):
        return "Say yes."

    def sft_target(self, ex, prompt_style):
        return "yes"


def test_third_party_pack_arrives_through_the_entry_point_group(monkeypatch):
    import dllmrl.registry as reg

    ep = EntryPoint(name="toy", value=f"{__name__}:ToyTask", group="dllmrl.tasks")
    monkeypatch.setattr(reg, "entry_points", lambda group: [ep] if group == "dllmrl.tasks" else [])
    tasks = Registry("task", entry_point_group="dllmrl.tasks")
    assert "toy" in tasks.names()
    toy = tasks.get("toy")()
    assert toy.verify(toy.load("test")[0], "yes") and not toy.verify(toy.load("test")[0], "no")
