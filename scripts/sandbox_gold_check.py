"""Every gold HumanEval and MBPP solution must pass in the sandbox (stdlib-only tests, MBPP setup code).

    OMP_NUM_THREADS=1 python scripts/sandbox_gold_check.py [workers]
"""

from __future__ import annotations

import sys

from dllmrl.evaluation.sandbox import isolation, run_many
from dllmrl.tasks.base import response_text
from dllmrl.tasks.humaneval import HumanEval
from dllmrl.tasks.mbpp import MBPP


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    print(f"mode={isolation()}")
    for task in (HumanEval(), MBPP()):
        examples = list(task.load("test", "eval"))
        programs = [task.program(e, task.extract(response_text(task, task.sft_target(e, "eval"), "eval")))
                    for e in examples]
        results = run_many(programs, workers=workers)
        failed = [(e.id, r.stderr.strip().splitlines()[-1:]) for e, r in zip(examples, results) if not r.passed]
        print(f"{task.name}: {len(examples) - len(failed)}/{len(examples)} gold solutions pass", failed[:5])


if __name__ == "__main__":
    main()
