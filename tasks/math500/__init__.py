"""MATH500 (competition mathematics; the 500-problem test subset).

    from dllmrl.tasks.math500 import MATH500
    ex = MATH500().load("test")[0]        # ex.target == "\\left( 3, \\frac{\\pi}{2} \\right)"

Splits: ``test`` (MATH-500), ``train`` (11,498 of the other 12,000 MATH problems; two have an empty
``\\boxed{}`` and no gold) and ``validation`` (500).

Extraction: the last brace-matched ``\\boxed{}``, else the first ``<answer>`` (the reference means to
fall back on the answer tag but, lacking a box, scores the whole completion instead). Correct when
the Hendrycks normalisation (the reference's metric) OR sympy finds the answers equal; each record
carries both verdicts and eval reports ``accuracy_hendrycks`` (comparable with the paper) and how
often sympy disagrees.

Rewards (reference weights): ``format`` [0.5] — 1 for an answer tag plus 1 for a box inside it (0.5
without), as the reference's ``boxed_in_answer`` meant: it tests ``"\\boxed"``, a backspace then
"oxed", so its box bonus never fired — and ``correct`` [2.0].
"""

from __future__ import annotations

import random
from functools import cached_property
from typing import Any, Mapping, Sequence

from dllmrl.errors import DataError

from dllmrl.tasks.base import Example, RewardFn, TaskBase
from dllmrl.tasks.common import answer_tag, data_file, last_boxed, read_json, read_jsonl, require
from dllmrl.tasks.math500 import prompts
from dllmrl.tasks.math500.equivalence import hendrycks_equal, sympy_equal

N_VALIDATION = 500


def extract(completion: str) -> str | None:
    """The final answer: last ``\\boxed{}`` content, else the first answer tag's content."""
    found = last_boxed(completion)
    if found is None:
        found = answer_tag(completion)
    return found.strip() if found and found.strip() else None


class MATH500(TaskBase):
    name = "math500"
    version = "1"  # bump when the prompts, the parser or the verifier change
    prompt_styles = ("eval", "train")
    split_sizes = {"test": 500, "train": 11998 - N_VALIDATION, "validation": N_VALIDATION}

    @cached_property
    def _test(self) -> list[Example]:
        path = data_file(__file__, "math500_test.json.gz")
        rows = read_json(path)
        if not isinstance(rows, list) or len(rows) != 500:
            raise DataError(f"{path} should hold a list of 500 problems; reinstall dllmrl")
        out = []
        for i, row in enumerate(rows):
            require(row, ("problem", "solution", "answer", "unique_id"), f"{path} record {i}")
            out.append(Example(row["unique_id"], "", row["answer"],
                               {"problem": row["problem"], "solution": row["solution"], "subject": row.get("subject"),
                                "level": row.get("level")}))
        return out

    @cached_property
    def _train_file(self) -> tuple[list[Example], list[Example]]:
        path = data_file(__file__, "math_train_12k.jsonl.gz")
        rows = []
        for n, row in enumerate(read_jsonl(path), 1):
            require(row, ("problem", "solution", "unique_id"), f"{path}:{n}")
            gold = last_boxed(row["solution"])
            if gold is None:
                raise DataError(f"{path}:{n} has no \\boxed answer in its solution; reinstall dllmrl")
            if not gold.strip():
                continue  # two MATH solutions box nothing (number_theory/7115 and 7117): no gold, no example
            rows.append(Example(row["unique_id"], "", gold, {"problem": row["problem"], "solution": row["solution"],
                                                            "subject": row.get("type"), "level": row.get("level")}))
        held = set(random.Random(0).sample(range(len(rows)), N_VALIDATION))
        return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]

    def _load(self, split: str) -> Sequence[Example]:
        if split == "test":
            return self._test
        train, validation = self._train_file
        return train if split == "train" else validation

    def from_fields(self, fields: Mapping[str, Any]) -> Example:
        """An example from a ``dllmrl score`` line: needs ``answer`` (the gold answer in LaTeX)."""
        answer = fields.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise DataError("a math500 line needs 'answer': the gold answer as a LaTeX string")
        return Example(str(fields.get("id", "")), "", answer, {"problem": fields.get("problem", "")})

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        return {"answer": ex.target}

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, ex: Example, prompt_style: str) -> str:
        if prompt_style == "eval":
            return prompts.EVAL_SYSTEM_PROMPT + "\n\n" + ex.meta["problem"]
        return prompts.TRAIN_SYSTEM_PROMPT + "\n\n" + prompts.TRAIN_INSTRUCTION + ex.meta["problem"]

    def sft_target(self, ex: Example, prompt_style: str) -> str:
        template = prompts.EVAL_TARGET if self.check_style(prompt_style) == "eval" else prompts.TRAIN_TARGET
        return template.format(reasoning=ex.meta["solution"].strip(), answer=ex.target)

    # ------------------------------------------------------------------ scoring
    def extract(self, completion: str) -> str | None:
        return extract(completion)

    def judge(self, ex: Example, completion: str) -> tuple[bool, bool | None]:
        """(Hendrycks verdict, sympy verdict or None when sympy cannot read one of the answers)."""
        answer = extract(completion)
        return hendrycks_equal(answer, ex.target), sympy_equal(answer, ex.target)

    def verify(self, ex: Example, completion: str) -> bool:
        answer = extract(completion)
        # sympy only runs when the string comparison says no (it is the slower of the two).
        return hendrycks_equal(answer, ex.target) or sympy_equal(answer, ex.target) is True

    def format_reward(self, ex: Example, completion: str) -> float:
        """The reference's boxed_in_answer, with its backslash bug fixed: 0.5 to 2.0."""
        tagged = completion.split("<answer>", 1)[1].split("</answer>")[0] if "<answer>" in completion else None
        inside = completion if tagged is None else tagged
        return (1.0 if tagged is not None else 0.0) + (1.0 if "\\boxed" in inside else 0.5)

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        return {"format": (self.format_reward, 0.5), "correct": (self.correct_reward, 2.0)}

    def details(self, ex: Example, completion: str) -> dict[str, Any]:
        hendrycks, sym = self.judge(ex, completion)
        return {"correct_hendrycks": hendrycks, "correct_sympy": sym}

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        n = len(records) or 1
        hen = sum(bool(r.get("correct_hendrycks")) for r in records)
        # Disagreements only where sympy gave a verdict (None: it could not read an answer).
        sym_only = sum(r.get("correct_sympy") is True and not r.get("correct_hendrycks") for r in records)
        hen_only = sum(r.get("correct_sympy") is False and bool(r.get("correct_hendrycks")) for r in records)
        return {"accuracy_hendrycks": hen / n, "sympy_only": float(sym_only), "hendrycks_only": float(hen_only)}
