"""MBPP (Mostly Basic Python Problems), scored in our sandbox.

    from dllmrl.tasks.mbpp import MBPP
    ex = MBPP().load("test")[0]

Splits: ``test`` = the sanitized test split (257 problems, as the paper); ``train`` (627) and
``validation`` (90) come from the full MBPP rows that are NOT in the sanitized test split, because
the reference's code training set (KodCode-Light-RL-10K) could not be obtained: code RL here trains
on MBPP, which the paper did not do.

Protocol (the reference's): the prompt is the task text, then "Your code should pass the following
tests:" and the asserts; the completion's first python block, then the test imports and asserts,
must run to the end.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Mapping, Sequence

from dllmrl.errors import DataError

from dllmrl.tasks.base import Example
from dllmrl.tasks.code import CodeTask, harness_program
from dllmrl.tasks.common import data_file, read_json, read_jsonl, require
from dllmrl.tasks.mbpp import prompts

VALIDATION_IDS = range(511, 601)


class MBPP(CodeTask):
    name = "mbpp"
    version = "1"  # bump when the prompts, the parser or the verifier change
    split_sizes = {"test": 257, "train": 627, "validation": 90}

    @cached_property
    def _sanitized_test(self) -> list[Example]:
        path = data_file(__file__, "sanitized-mbpp.json.gz")
        rows = read_json(path)
        if not isinstance(rows, list):
            raise DataError(f"{path} should hold a JSON list; reinstall dllmrl")
        out = []
        for row in rows:
            require(row, ("task_id", "prompt", "code", "test_imports", "test_list"), f"{path} task {row.get('task_id')}")
            if 11 <= int(row["task_id"]) <= 510:
                out.append(self._example(row["task_id"], row["prompt"], row["code"], row["test_list"],
                                         "\n".join(row["test_imports"])))
        return out

    @cached_property
    def _full(self) -> tuple[list[Example], list[Example]]:
        path = data_file(__file__, "mbpp.jsonl.gz")
        test_ids = {int(e.target["task_id"]) for e in self._sanitized_test}
        train, validation = [], []
        for n, row in enumerate(read_jsonl(path), 1):
            require(row, ("task_id", "text", "code", "test_list", "test_setup_code"), f"{path}:{n}")
            tid = int(row["task_id"])
            if tid in test_ids:
                continue  # never train on a problem of the sanitized test split
            ex = self._example(tid, row["text"], row["code"], row["test_list"], row["test_setup_code"])
            (validation if tid in VALIDATION_IDS else train).append(ex)
        return train, validation

    @staticmethod
    def _example(task_id: int, text: str, code: str, tests: list[str], setup: str) -> Example:
        return Example(f"mbpp/{task_id}", "", {"task_id": int(task_id), "tests": list(tests), "setup": setup},
                       {"text": text, "code": code})

    def _load(self, split: str) -> Sequence[Example]:
        if split == "test":
            return self._sanitized_test
        train, validation = self._full
        return train if split == "train" else validation

    def from_fields(self, fields: Mapping[str, Any]) -> Example:
        """An example from a ``dllmrl score`` line: needs ``task_id`` (a sanitized-test or full MBPP id)."""
        try:
            task_id = int(str(fields.get("task_id", "")).rsplit("/", 1)[-1])
        except ValueError:
            task_id = -1
        for ex in [*self._sanitized_test, *self._full[0], *self._full[1]]:
            if ex.target["task_id"] == task_id:
                return ex
        raise DataError(f"a mbpp line needs 'task_id' of an MBPP problem (e.g. 11), got '{fields.get('task_id')}'")

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        return {"task_id": ex.target["task_id"]}

    def build_prompt(self, ex: Example, prompt_style: str) -> str:
        question = prompts.QUESTION.format(text=ex.meta["text"], tests="\n".join(ex.target["tests"]))
        return self.code_prompt(question, prompt_style, prompts.EVAL_SYSTEM_PROMPT)

    def sft_target(self, ex: Example, prompt_style: str) -> str:
        self.check_style(prompt_style)
        return self.code_target(ex.meta["code"].replace("\r\n", "\n"), prompt_style, prompts.REASONING)

    def program(self, ex: Example, code: str) -> str:
        return harness_program(code, ex.target["tests"], setup=ex.target["setup"])
