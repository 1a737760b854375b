"""Run model-written Python programs without trusting them.

    from dllmrl.evaluation.sandbox import run_program, run_many
    res = run_program("assert 1 + 1 == 2", timeout_s=10, memory_mb=1024)
    res.passed, res.timed_out, res.stdout, res.stderr

A program passes only when it runs to its end: after the program returns, our runner prints a
completion marker carrying a random nonce, and ``passed`` needs that marker plus exit status 0.
So ``sys.exit(0)`` or ``os._exit(0)`` before the tests, a crash, a timeout or an output flood is
never a pass.

What is covered. Every program runs in a fresh temporary directory (its working directory and
HOME), in its own session / process group, with limits on address space (``memory_mb``), CPU time,
wall time (``timeout_s``), processes, open files, file size and captured output. When the machine
allows it (root and ``unshare``: checked once, see ``isolation()``), the program also gets:

- its own PID namespace: it cannot see or signal anything outside, and when the run ends the whole
  namespace is killed by the kernel, so no process is ever left behind (double-daemonised ones too);
- its own network namespace with no interfaces up: no sockets reach anything;
- its own mount namespace and an unprivileged, otherwise unused uid: it cannot delete, write or
  kill anything that belongs to anyone else. The Python installation is bind-mounted (read-only by
  permissions) inside the namespace so that the unprivileged uid can run it, and the interpreter
  starts with ``-I -S`` (no user site, no site-packages: programs get the standard library only).

What is not covered. World-writable directories (``/tmp``, ``/dev/shm``) stay writable by the
program (each file is capped by the file-size limit). A program that inspects the runner's own
frames can find the nonce and fake the marker: this stops naive and accidental early exits, not a
program written against this harness. Without root or without ``unshare`` the fallback keeps the
process group, limits and temporary directory but runs as the caller's user, with the network
and the caller's files reachable, and a child that leaves the session can survive: run RL on code
inside a container then (``isolation()`` says which mode is active; a warning is logged once).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)

MARKER = "__DLLMRL_SANDBOX_DONE__"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
MAX_OUTPUT_BYTES = 1 << 20
"""Captured stdout + stderr; a program that writes more is killed (output flood)."""
MAX_PROCESSES = 32
MAX_FILE_BYTES = 16 << 20
MAX_OPEN_FILES = 64
_UID_RANGE = (200_000, 260_000)  # uids no account uses; one fresh uid per run

# The runner: started as root inside the namespaces when isolation is full, it drops to the run's
# uid, sets the limits, reads the nonce from stdin, runs the program as __main__, then prints the
# marker. Kept as text so that it runs under `python -I -S` with nothing of ours imported.
_RUNNER = r'''
import os, resource, sys
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
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), "program.py", "exec")
    sys.argv = ["program.py"]
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    sys.stdout.flush()
    sys.stderr.flush()
    left = _left_behind(uid >= 0)
    if left:
        os.write(2, ("sandbox: the program left processes running: %s\n" % left).encode())
        os._exit(3)
    os.write(1, ("\n" + MARKER + nonce + "\n").encode())
def _left_behind(own_pid_namespace):
    # In its own PID namespace every other live process is the program's; otherwise look at our session.
    me, sid, out = os.getpid(), os.getsid(0), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and (own_pid_namespace or int(fields[3]) == sid):
            out.append(int(name))
    return out
_main()
'''.replace("MARKER", repr(MARKER))


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    """The program ran to its end: the runner's completion marker was printed and the exit status was 0."""
    timed_out: bool
    """Killed at the wall-clock limit (or by the CPU-time limit)."""
    stdout: str
    """What the program printed (marker removed; cut at the output limit)."""
    stderr: str
    returncode: int | None
    output_exceeded: bool = False
    """Killed for writing more than MAX_OUTPUT_BYTES."""
    seconds: float = 0.0
    isolation: str = ""
    """'namespaces' (full) or 'process-group' (fallback); see the module docstring."""

    @property
    def status(self) -> str:
        """One word for records: passed, timeout, output-limit, failed."""
        if self.passed:
            return "passed"
        if self.timed_out:
            return "timeout"
        return "output-limit" if self.output_exceeded else "failed"


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """'namespaces' when runs get PID/net/mount namespaces and their own uid, else 'process-group'."""
    if os.name != "posix" or shutil.which("unshare") is None or shutil.which("mount") is None or os.geteuid() != 0:
        mode = "process-group"
    else:
        try:
            ok = subprocess.run(
                ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
                 "--propagation", "private", "true"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
            ).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        mode = "namespaces" if ok else "process-group"
    if mode != "namespaces":
        log.warning(
            "sandbox: namespaces are not available here (needs root and unshare); programs run as your user "
            "with limits only. Run code RL inside a container."
        )
    return mode


def _python_layout() -> tuple[Path, Path] | None:
    """(installation prefix, interpreter path inside it), for bind-mounting; None if not resolvable."""
    prefix = Path(os.path.realpath(sys.base_prefix))
    exe = Path(os.path.realpath(sys.executable))
    try:
        return prefix, exe.relative_to(prefix)
    except ValueError:
        return None


def _command(root: Path, program: Path, uid: int, memory_mb: int, cpu_s: int) -> list[str]:
    limits = [str(uid), str(memory_mb << 20), str(cpu_s), str(_process_limit(uid)), str(MAX_FILE_BYTES),
              str(MAX_OPEN_FILES)]
    runner = root / "runner.py"
    layout = _python_layout() if uid >= 0 else None
    if layout is None:
        return [sys.executable, "-I", "-S", str(runner), str(program), *limits]
    prefix, rel = layout
    mnt = root / "py"
    # As root inside the new mount namespace: expose the interpreter where the run's uid can reach it.
    script = 'mount --bind "$0" "$1" && m="$1" && exe="$2" && shift 2 && exec "$m/$exe" -I -S "$@"'
    return ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
            "sh", "-c", script, str(prefix), str(mnt), str(rel), str(runner), str(program), *limits]


def _process_limit(uid: int) -> int:
    """RLIMIT_NPROC counts every process of the real uid: a fresh uid gets MAX_PROCESSES; the caller's
    own uid (fallback) gets what it already runs plus MAX_PROCESSES; root ignores the limit (-1: unset)."""
    if uid >= 0:
        return MAX_PROCESSES
    if os.geteuid() == 0:
        return -1
    mine = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == os.geteuid():
                mine += 1
        except OSError:
            continue
    return mine + MAX_PROCESSES


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _sweep_uid(uid: int) -> None:
    """Kill any process still running as the run's uid (belt and braces: the PID namespace already did)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if int(line.split()[1]) == uid:
                    try:
                        os.kill(int(entry.name), signal.SIGKILL)
                    except OSError:
                        pass
                break


def run_program(source: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox; see the module docstring for the guarantees."""
    mode = isolation()
    start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="dllmrl-sandbox-"))
    uid = random.randint(*_UID_RANGE) if mode == "namespaces" else -1
    try:
        os.chmod(root, 0o755)
        work = root / "work"
        work.mkdir()
        (root / "py").mkdir()
        (root / "runner.py").write_text(_RUNNER)
        program = work / "program.py"
        program.write_text(source, encoding="utf-8")
        if uid >= 0:
            os.chown(work, uid, uid)  # its own directory is the one place it may write
        nonce = secrets.token_hex(16)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        # CPU time is a backstop behind the wall clock, generous enough never to fire first for one
        # thread (unshare reports a child killed by it only as "sigprocmask unblock failed", exit 1).
        cpu_s = int(2 * timeout_s) + 5
        proc = subprocess.Popen(
            _command(root, program, uid, memory_mb, cpu_s), cwd=work, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        try:
            proc.stdin.write((nonce + "\n").encode())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        out, err, timed_out, flooded = _collect(proc, timeout_s)
        _kill_group(proc)  # whatever is left of the session goes, whatever happened (not yet reaped: safe)
        rc, cpu_used = _reap(proc)
        if uid >= 0:
            _sweep_uid(uid)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    stdout = out.decode("utf-8", "replace")
    marker = f"\n{MARKER}{nonce}\n"
    finished = marker in stdout
    stdout = stdout.replace(marker, "")
    passed = finished and rc == 0 and not timed_out and not flooded
    # A CPU-time kill is a timeout too; the run's CPU time (its waited-for children included) tells.
    timed_out = timed_out or cpu_used >= cpu_s - 0.5
    return SandboxResult(passed, timed_out, stdout, err.decode("utf-8", "replace"), rc, flooded,
                         time.monotonic() - start, mode)


def _reap(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for the process; (exit code as Popen reports it, CPU seconds of it and its reaped children)."""
    while True:
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:  # already reaped elsewhere
            return proc.wait(), 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _collect(proc: subprocess.Popen, timeout_s: float) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr until the program exits, the deadline or the output cap (killing on the last two).

    Does not reap the process: the caller kills the rest of its group first, while the group id
    cannot yet have been reused.
    """
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    total, timed_out, flooded, exited_at = 0, False, False, None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break  # a child left behind still holds the pipes: stop reading, the group is killed next
        for key, _ in sel.select(timeout=min(deadline - now, 0.1)):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            total += len(chunk)
            if total > MAX_OUTPUT_BYTES:
                flooded = True
                break
            bufs[key.fileobj].extend(chunk)
        if flooded:
            break
    if timed_out or flooded:
        _kill_group(proc)
    sel.close()
    for f in bufs:
        f.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, flooded


def run_many(
    sources: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
    workers: int | None = None, on_done: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
    """Run many programs in parallel (one subprocess each, ``workers`` at a time: default one per CPU core)."""
    workers = workers or os.cpu_count() or 1
    results: list[SandboxResult | None] = [None] * len(sources)

    def one(i: int) -> None:
        results[i] = run_program(sources[i], timeout_s=timeout_s, memory_mb=memory_mb)
        if on_done is not None:
            on_done(i, results[i])  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(sources))))
    return results  # type: ignore[return-value]
