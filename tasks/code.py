"""Shared machinery of the code packs (HumanEval, MBPP): extraction, test programs, sandboxed scoring.

The one extractor is the reference's: the first fenced ```python block. A completion is correct when
its program, followed by the task's tests, runs to the end in ``dllmrl.evaluation.sandbox`` (10 s, 1 GB, as the
reference). Each test statement is run separately, so one sandbox run also gives the fraction of
tests passed (the reference's training reward); the run is cached, so every reward and the record's
details share it.

Deliberate differences from the reference: its code scoring does not run as shipped (the imports of
``subprocess``/``resource`` are missing, so every program scores 0); its substring blocklist
(" os", " sys", ...) is replaced by the sandbox; and "passed" needs our completion marker, not just
exit status 0.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping, Sequence

from dllmrl.tasks import formats
from dllmrl.tasks.base import Example, RewardFn, TaskBase
from dllmrl.tasks.common import first_python_block

TIMEOUT_S = 10.0
MEMORY_MB = 1024
RESULT = "__DLLMRL_TESTS__"

# The reference's code-training instruction (egspo/data_utils.py get_code_questions), for every code pack.
TRAIN_INSTRUCTION = "You are a coding expert. You will be given a coding problem to solve. Solve it step by step. \n\n"

# Runs each test statement on its own and reports how many passed; the final assert makes the
# program fail (no completion marker) unless all did.
_HARNESS = """

{setup}
_dllmrl_passed = 0
for _dllmrl_test in {tests!r}:
    try:
        exec(_dllmrl_test, globals())
        _dllmrl_passed += 1
    except Exception:
        pass
print({result!r}, _dllmrl_passed, {n})
assert _dllmrl_passed == {n}, "some tests failed"
"""


def harness_program(code: str, tests: Sequence[str], setup: str = "") -> str:
    """The solution, then the setup (imports), then each test statement counted separately."""
    return code + _HARNESS.format(setup=setup, tests=list(tests), n=len(tests), result=RESULT)


@functools.lru_cache(maxsize=4096)
def run_cached(program: str):
    """One sandbox run per distinct program (rewards, verify and details all ask for the same one)."""
    from dllmrl.evaluation.sandbox import run_program

    return run_program(program, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB)


def passed_counts(stdout: str) -> tuple[int, int] | None:
    """(passed, total) from the harness's last report line; None if it never got that far."""
    found = re.findall(rf"^{RESULT} (\d+) (\d+)$", stdout, re.MULTILINE)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def code_in_answer(completion: str) -> bool:
    """The reference's bonus condition: the first python block sits inside the answer tag."""
    code = first_python_block(completion)
    m = re.search(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    return bool(code and m and f"```python\n{code}```" in m.group(1))


class CodeTask(TaskBase):
    """A pack whose target is test code; subclasses build the program with ``program(ex, code)``."""

    prompt_styles = ("eval", "train")
    score_workers = os.cpu_count() or 1
    """Records are scored in a thread pool this wide: each check is a sandbox subprocess."""

    def program(self, ex: Example, code: str) -> str:
        raise NotImplementedError

    def extract(self, completion: str) -> str | None:
        return first_python_block(completion)

    def run(self, ex: Example, completion: str):
        """The sandbox result for this completion, or None when it holds no python block."""
        code = self.extract(completion)
        return None if code is None else run_cached(self.program(ex, code))

    def verify(self, ex: Example, completion: str) -> bool:
        res = self.run(ex, completion)
        return bool(res and res.passed)

    def tests_reward(self, ex: Example, completion: str) -> float:
        """Fraction of the task's tests that pass (the reference's coding reward, without its bonus)."""
        res = self.run(ex, completion)
        if res is None:
            return 0.0
        if res.passed:
            return 1.0
        counts = passed_counts(res.stdout)
        return counts[0] / counts[1] if counts and counts[1] else 0.0

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        # The reference's code training: xmlcount + (fraction of tests passed + 0.5 if the code is in the answer).
        return {
            "xmlcount": (lambda ex, text: formats.xml_count(text), 1.0),
            "tests": (self.tests_reward, 1.0),
            "code_in_answer": (lambda ex, text: 1.0 if code_in_answer(text) else 0.0, 0.5),
            "correct": (self.correct_reward, 0.0),
        }

    def details(self, ex: Example, completion: str) -> dict[str, Any]:
        res = self.run(ex, completion)
        if res is None:
            return {"sandbox": "no-code"}
        counts = passed_counts(res.stdout)
        return {
            "sandbox": res.status,
            "tests_passed": counts[0] if counts else None,
            "tests_total": counts[1] if counts else None,
            "stderr_tail": res.stderr[-500:],
        }

    def code_prompt(self, question: str, prompt_style: str, eval_system_prompt: str) -> str:
        """The user turn: 'eval', the pack's system prompt + "\\n\\n" + question; 'train', the reference's
        general SYSTEM_PROMPT + "\\n\\n" + the code-training instruction + question."""
        if prompt_style == "eval":
            return eval_system_prompt + "\n\n" + question
        return formats.SYSTEM_PROMPT + "\n\n" + TRAIN_INSTRUCTION + question

    def code_target(self, code: str, prompt_style: str, reasoning: str) -> str:
        body = f"\n{reasoning}\n</reasoning>\n<answer>\n```python\n{code.rstrip()}\n```\n</answer>\n"
        return body if self.prefill_for(prompt_style) else "<reasoning>" + body
