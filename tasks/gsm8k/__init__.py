"""GSM8K (grade-school maths word problems).

    from dllmrl.tasks.gsm8k import GSM8K
    ex = GSM8K().load("test")[0]        # ex.target == "18"

Splits: ``test`` (1319, as the paper), ``train`` (6973) and ``validation`` (500 training rows held
out with a fixed seed, for checkpoint selection).

Rewards, as the reference's GSM8K training (weights in brackets): ``xmlcount`` [1.0],
``soft_format`` [0.5], ``strict_format`` [0.5], ``integer`` [0.5], ``correct`` [2.0].
"""

from __future__ import annotations

import random
from functools import cached_property
from typing import Any, Mapping, Sequence

from dllmrl.errors import DataError

from dllmrl.tasks import formats
from dllmrl.tasks.base import Example, RewardFn, TaskBase
from dllmrl.tasks.common import data_file, read_jsonl, require
from dllmrl.tasks.gsm8k import prompts
from dllmrl.tasks.gsm8k.verify import extract, gold_answer, same_number, strip_calculator

N_VALIDATION = 500


class GSM8K(TaskBase):
    name = "gsm8k"
    version = "1"  # bump when the prompts, the parser or the verifier change
    prompt_styles = ("eval", "train")
    split_sizes = {"test": 1319, "train": 7473 - N_VALIDATION, "validation": N_VALIDATION}

    def _rows(self, name: str) -> list[Example]:
        path = data_file(__file__, name)
        out = []
        for n, row in enumerate(read_jsonl(path), 1):
            require(row, ("question", "answer"), f"{path}:{n}")
            gold = gold_answer(row["answer"])
            if gold is None:
                raise DataError(f"{path}:{n} has no '#### <number>' answer; reinstall dllmrl")
            out.append(Example(f"{name.split('.')[0]}-{n - 1}", "", gold,
                               {"question": row["question"], "solution": row["answer"]}))
        return out

    @cached_property
    def _train_file(self) -> tuple[list[Example], list[Example]]:
        rows = self._rows("train.jsonl.gz")
        held = set(random.Random(0).sample(range(len(rows)), N_VALIDATION))
        return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]

    def _load(self, split: str) -> Sequence[Example]:
        if split == "test":
            return self._rows("test.jsonl.gz")
        train, validation = self._train_file
        return train if split == "train" else validation

    def from_fields(self, fields: Mapping[str, Any]) -> Example:
        """An example from a ``dllmrl score`` line: needs ``answer`` (a number, or a '#### n' solution)."""
        answer = str(fields.get("answer", ""))
        gold = gold_answer(answer) if "####" in answer else extract(f"<answer>{answer}</answer>")
        if gold is None:
            raise DataError("a gsm8k line needs 'answer': the gold number (or a worked solution ending '#### n')")
        return Example(str(fields.get("id", "")), "", gold, {"question": fields.get("question", "")})

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        return {"answer": ex.target}

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, ex: Example, prompt_style: str) -> str:
        system = prompts.EVAL_SYSTEM_PROMPT if prompt_style == "eval" else prompts.TRAIN_SYSTEM_PROMPT
        return system + "\n\n" + ex.meta["question"]

    def sft_target(self, ex: Example, prompt_style: str) -> str:
        reasoning = strip_calculator(ex.meta["solution"].split("####")[0]).strip()
        template = prompts.EVAL_TARGET if self.check_style(prompt_style) == "eval" else prompts.TRAIN_TARGET
        return template.format(reasoning=reasoning, answer=ex.target)

    # ------------------------------------------------------------------ scoring
    def extract(self, completion: str) -> str | None:
        return extract(completion)

    def verify(self, ex: Example, completion: str) -> bool:
        return same_number(extract(completion), ex.target)

    def integer_reward(self, ex: Example, completion: str) -> float:
        """1.0 when the extracted answer is a whole number (the reference: the answer tag holds only digits)."""
        answer = extract(completion)
        return 1.0 if answer is not None and float(answer).is_integer() else 0.0

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        return {
            "xmlcount": (lambda ex, text: formats.xml_count(text), 1.0),
            "soft_format": (lambda ex, text: formats.soft_format(text), 0.5),
            "strict_format": (lambda ex, text: formats.strict_format(text), 0.5),
            "integer": (self.integer_reward, 0.5),
            "correct": (self.correct_reward, 2.0),
        }
