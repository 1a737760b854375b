"""Per-call overhead of the code sandbox: median wall time of run_program on a trivial program, and the
CPU time (user + system) its subprocesses used per call, which a loaded machine disturbs less.

    OMP_NUM_THREADS=1 python scripts/sandbox_overhead.py [runs]
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

from dllmrl.evaluation.sandbox import isolation, run_program


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    mode = isolation()
    run_program("pass")  # warm the caches (probe, interpreter files)
    times = []
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        t = time.perf_counter()
        res = run_program("assert 1 + 1 == 2")
        times.append(time.perf_counter() - t)
        assert res.passed, res
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / runs
    print(f"mode={mode} runs={runs} median={1000 * statistics.median(times):.1f} ms "
          f"min={1000 * min(times):.1f} ms max={1000 * max(times):.1f} ms cpu/call={1000 * cpu:.1f} ms")


if __name__ == "__main__":
    main()
