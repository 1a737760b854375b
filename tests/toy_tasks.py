"""Toy tasks that more than one test module uses (imported as ``toy_tasks``: pytest puts tests/ on sys.path).

``ToyLowercase``: the RL toy of tests/test_trainer.py and tests/test_llada_dream_train.py.
``ExactMatchToy``: the scoring of the TaskBase toys of tests/test_llada_dream_train.py and
tests/test_tasks_registry.py (the stripped completion must equal the target).
"""

from __future__ import annotations

from dllmrl.tasks.base import Example, TaskBase

TOY_GEN_LEN = 8
"""Completion length the lowercase toy is scored over."""


class ToyLowercase(TaskBase):
    """Say lowercase letters: reward = fraction of lowercase characters in the 8-character completion
    (graded, so advantages are nonzero); correct = at least 6 of 8."""

    name = "toy"
    prefill = ""
    prompt_styles = ("train", "eval")
    split_sizes = {"train": 16, "test": 8}

    def splits(self):
        return dict(self.split_sizes)

    def load(self, split, prompt_style="train"):
        return [Example(f"{split}-{i}", f"say {i}", None) for i in range(self.splits()[split])]

    def prefill_for(self, prompt_style):
        return ""

    def extract(self, completion):
        return completion

    def verify(self, ex, completion):
        return sum(c.islower() for c in completion) >= 6

    def lowercase(self, ex, completion):
        return sum(c.islower() for c in completion) / TOY_GEN_LEN

    def rewards(self):
        return {"lowercase": (self.lowercase, 1.0), "correct": (lambda ex, c: float(self.verify(ex, c)), 0.0)}


class ExactMatchToy(TaskBase):
    """A TaskBase toy scored by exact match: the stripped completion must equal ``ex.target``."""

    def extract(self, completion):
        return completion.strip() or None

    def verify(self, ex, completion):
        return self.extract(completion) == ex.target

    def rewards(self):
        return {"correct": (self.correct_reward, 1.0)}
