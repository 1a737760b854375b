"""The runner that executes one untrusted program: stdlib only, never imported by dllmrl.

``dllmrl.evaluation.sandbox`` passes this file's text to ``python -I -S -c`` with the arguments
``PROGRAM UID MEMORY_BYTES CPU_S NPROC FSIZE NOFILE`` (-1: leave as is) and the per-run nonce on stdin.
It drops to UID (when not -1), sets the limits, runs PROGRAM as ``__main__`` and, only when the
program returned, prints the completion marker with the nonce. The source is compiled from bytes,
so text that is not valid UTF-8 (a lone surrogate) is a SyntaxError of the program, not of ours.
"""

import os
import resource
import sys

MARKER = "__DLLMRL_SANDBOX_DONE__"


def _main():
    uid, mem, cpu, nproc, fsize, nofile = (int(a) for a in sys.argv[2:8])
    nonce = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if uid >= 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_NPROC, nproc),
                     (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
        if val >= 0:
            resource.setrlimit(lim, (val, val))
    path = sys.argv[1]
    os.chdir(os.path.dirname(path))
    with open(path, "rb") as f:
        code = compile(f.read(), "program.py", "exec")
    sys.argv = ["program.py"]
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, ("\n" + MARKER + nonce + "\n").encode())


if __name__ == "__main__":
    _main()
