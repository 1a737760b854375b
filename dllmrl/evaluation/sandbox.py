"""Run model-written Python programs without trusting them.

    from dllmrl.evaluation.sandbox import run_program, run_many
    res = run_program("assert 1 + 1 == 2", timeout_s=10, memory_mb=1024)
    res.passed, res.timed_out, res.stdout, res.stderr

A program passes only when it runs to its end: after the program returns, the runner prints a
completion marker carrying a random nonce, and ``passed`` needs that marker, exit status 0 and no
process of the program still alive. So ``sys.exit(0)`` or ``os._exit(0)`` before the tests, a crash,
a timeout, an output flood or a leftover background process is never a pass. A program that
inspects the runner's own frames can find the nonce and fake the marker: this stops naive and
accidental early exits, not a program written against this harness.

In every mode ``run_program`` returns a result whatever the program does (its source need not even
be valid UTF-8), and the program runs with limits on address space (``memory_mb``), CPU time, wall
time (``timeout_s``), file size, open files and captured output.

Namespace mode (``isolation() == "namespaces"``: root, Linux x86_64/aarch64, ``ldd``; probed once
by running a program). Each run gets fresh mount, PID, network, IPC and UTS namespaces and an
unused uid (see ``sandbox_jail``). Guaranteed:

- it sees only the Python installation (read-only, site-packages hidden: the standard library
  only), the directories of the shared libraries the interpreter links (read-only), five device
  files, its own /proc, and one private tmpfs of MAX_SCRATCH_BYTES / MAX_SCRATCH_INODES mounted at
  /work (its directory, the only one it owns), /tmp, /var/tmp and /dev/shm. The repository, the
  task data, the host's /tmp and every other file of the host are not in its filesystem at all;
- nothing it writes reaches the host: the tmpfs disappears with the mount namespace, and no host
  directory is created for the run;
- at most MAX_PROCESSES processes; liveness is decided by the namespace's PID 1 and the kernel, not
  by code the program can patch, and when ``run_program`` returns every process of the run is gone
  (the kernel kills the whole PID namespace and the wait on its init returns only after that);
- no network interface is up; it cannot signal, ptrace or write anything of anyone else.

Fallback mode (``"process-group"``: anything else; a warning is logged once). The program runs as
the caller's user in a fresh host temporary directory (cwd, HOME, TMPDIR, TMP, TEMP), in its own
session, with the same limits plus a process limit (which root ignores). Guaranteed: a result is
returned; the directory is removed afterwards however deep or chmod-ed its tree is; processes still
in the program's session when it ends fail the run and are killed (checked from here, in /proc).
Not prevented: files written by absolute path anywhere the caller may write (/tmp, /dev/shm,
/var/tmp, the caller's home) stay; it can read every file the caller can (the repository, the task
data, others' files in /tmp); a process that leaves the session (``setsid``) escapes both the check
and the kill; the network is reachable. Run code RL in a container (as root) there.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import selectors
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from dllmrl.evaluation.processes import kill_session, process_limit, session_members, sweep_uid
from dllmrl.evaluation.remove_tree import remove_tree

log = logging.getLogger(__name__)

MARKER = "__DLLMRL_SANDBOX_DONE__"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
MAX_OUTPUT_BYTES = 1 << 20
"""Captured stdout + stderr; a program that writes more is killed (output flood)."""
MAX_PROCESSES = 32
MAX_FILE_BYTES = 16 << 20
MAX_OPEN_FILES = 64
MAX_SCRATCH_BYTES = 64 << 20
"""Namespace mode: all of /work, /tmp, /var/tmp and /dev/shm together."""
MAX_SCRATCH_INODES = 4096
_UID_RANGE = (200_000, 260_000)  # uids no account uses; one fresh uid per run
_HERE = Path(__file__).resolve().parent
_JAIL = _HERE / "sandbox_jail.py"
_PIVOT_ROOT_ARCHS = ("x86_64", "aarch64")  # the syscall numbers sandbox_jail knows
_GRACE_S = 10.0  # how long the jail's supervisor gets to tear the namespace down once asked


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    """The program ran to its end: the completion marker, exit status 0, nothing of it left running."""
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
    left_processes: bool = False
    """Some process of the program was still alive after it ended (killed, and the run fails)."""

    @property
    def status(self) -> str:
        """One word for records: passed, timeout, output-limit, failed."""
        if self.passed:
            return "passed"
        if self.timed_out:
            return "timeout"
        return "output-limit" if self.output_exceeded else "failed"


@dataclass(frozen=True)
class _Layout:
    exe: str
    """The base interpreter (not a venv's), by its real path."""
    read_only: tuple[str, ...]
    """Host directories bound read-only at the same path: the installation, the shared-library folders."""
    hide: tuple[str, ...]
    """site-packages folders inside the installation, covered by an empty read-only tmpfs."""


@dataclass(frozen=True)
class _Outcome:
    out: bytes
    err: bytes
    timed_out: bool
    flooded: bool
    returncode: int | None
    cpu_s: float
    left: bool


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """'namespaces' when runs get their own namespaces, root and uid (probed once), else 'process-group'."""
    why = _namespace_blocker()
    if why is None:
        probe = _run("print('ok')", 10.0, 256, "namespaces")
        if not (probe.passed and probe.stdout.strip() == "ok"):
            why = "the probe run failed: " + ((probe.stderr.strip().splitlines() or ["no output"])[-1])
    if why is None:
        return "namespaces"
    log.warning("sandbox: namespaces are not available (%s); programs run as your user with limits only and can "
                "read your files and leave files in /tmp. Run code RL inside a container, as root.", why)
    return "process-group"


def _namespace_blocker() -> str | None:
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "not root"
    if os.uname().machine not in _PIVOT_ROOT_ARCHS:
        return f"pivot_root syscall number unknown for {os.uname().machine}"
    if _layout() is None:
        return "could not resolve the interpreter's installation and shared libraries (needs ldd)"
    return None


@functools.lru_cache(maxsize=1)
def _layout() -> _Layout | None:
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(sys.executable)
    if not exe.startswith(prefix + os.sep):  # a venv with a copied interpreter: use the base one
        exe = os.path.join(prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    stdlib = sysconfig.get_path("stdlib", vars={"installed_base": prefix, "base": prefix})
    dynload = Path(stdlib) / "lib-dynload"
    objects = [exe, *map(str, sorted(dynload.glob("*.so")))]
    try:
        out = subprocess.run(["ldd", *objects], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    libs = {word for line in out.splitlines() for word in line.split() if word.startswith("/") and "(0x" in line}
    dirs = sorted({os.path.dirname(p) for p in libs} - {""})
    dirs = [d for d in dirs if not (d + os.sep).startswith(prefix + os.sep)]
    if not os.path.isfile(exe) or not dirs or any(p == "/tmp" or p.startswith("/tmp/") for p in [prefix, *dirs]):
        return None  # the jail builds its root over /tmp: nothing it binds may live there
    hide = {sysconfig.get_path(k, vars={"base": prefix, "platbase": prefix}) for k in ("purelib", "platlib")}
    hide = sorted(h for h in hide if h.startswith(prefix + os.sep) and os.path.isdir(h))
    return _Layout(exe, (prefix, *dirs), tuple(hide))


@functools.lru_cache(maxsize=1)
def _runner_text() -> str:
    return (_HERE / "sandbox_runner.py").read_text(encoding="utf-8")


def run_program(source: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox; see the module docstring for the guarantees."""
    return _run(source, timeout_s, memory_mb, isolation())


def _run(source: str, timeout_s: float, memory_mb: int, mode: str) -> SandboxResult:
    start = time.monotonic()
    data = source.encode("utf-8", "surrogatepass")  # a lone surrogate becomes the program's SyntaxError
    nonce = secrets.token_hex(16)
    # CPU time is a backstop behind the wall clock, generous enough never to fire first for one thread.
    cpu_s = int(2 * timeout_s) + 5
    if mode == "namespaces":
        res = _run_jailed(data, nonce, timeout_s, memory_mb, cpu_s)
    else:
        res = _run_fallback(data, nonce, timeout_s, memory_mb, cpu_s)
    stdout = res.out.decode("utf-8", "replace")
    marker = f"\n{MARKER}{nonce}\n"
    finished = marker in stdout
    stdout = stdout.replace(marker, "")
    stderr = res.err.decode("utf-8", "replace")
    if res.left:
        stderr += "\nsandbox: the program left processes running (killed)\n"
    passed = finished and res.returncode == 0 and not res.timed_out and not res.flooded and not res.left
    timed_out = res.timed_out or res.cpu_s >= cpu_s - 0.5  # a CPU-time kill is a timeout too
    return SandboxResult(passed, timed_out, stdout, stderr, res.returncode, res.flooded,
                         time.monotonic() - start, mode, res.left)


def _run_jailed(data: bytes, nonce: str, timeout_s: float, memory_mb: int, cpu_s: int) -> _Outcome:
    layout = _layout()
    assert layout is not None  # isolation() checked it
    uid = random.randint(*_UID_RANGE)
    status_r, status_w = os.pipe()
    limits = [uid, memory_mb << 20, cpu_s, MAX_PROCESSES, MAX_FILE_BYTES, MAX_OPEN_FILES]
    args = [uid, layout.exe, status_w, MAX_SCRATCH_BYTES, MAX_SCRATCH_INODES, timeout_s + 2 * _GRACE_S,
            _runner_text(), " ".join(map(str, limits)), "\n".join(layout.read_only), "\n".join(layout.hide)]
    with open(status_r, "rb") as status:
        try:
            proc = subprocess.Popen(
                [layout.exe, "-I", "-S", str(_JAIL), *map(str, args)], env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(status_w,),
                start_new_session=True, cwd="/",
            )
        finally:
            os.close(status_w)
        _send(proc, nonce.encode() + b"\n" + data)
        out, err, timed_out, flooded = _collect(proc, timeout_s, stop=lambda: _signal(proc.pid, signal.SIGTERM))
        try:
            proc.wait(timeout=_GRACE_S)
        except subprocess.TimeoutExpired:  # never seen: the supervisor is ours; the init dies with it anyway
            proc.kill()
            proc.wait()
            sweep_uid(uid)
        report = status.read().decode("ascii", "replace").split()
    if len(report) != 3:  # the runner never ended normally: setup failed or we stopped it
        return _Outcome(out, err, timed_out, flooded, None, 0.0, False)
    return _Outcome(out, err, timed_out, flooded, int(report[0]), float(report[1]), report[2] == "1")


def _run_fallback(data: bytes, nonce: str, timeout_s: float, memory_mb: int, cpu_s: int) -> _Outcome:
    work = tempfile.mkdtemp(prefix=f"dllmrl-sandbox-{os.getpid()}-")  # the pid: whose run it was
    try:
        program = os.path.join(work, "program.py")
        with open(program, "wb") as f:
            f.write(data)
        limits = [-1, memory_mb << 20, cpu_s, process_limit(MAX_PROCESSES), MAX_FILE_BYTES, MAX_OPEN_FILES]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work, "TMP": work, "TEMP": work,
               "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _runner_text(), program, *map(str, limits)], cwd=work, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        _send(proc, nonce.encode() + b"\n")
        out, err, timed_out, flooded = _collect(proc, timeout_s, stop=lambda: _signal(-proc.pid, signal.SIGKILL))
        # Decided here, from /proc, while the (unreaped) runner keeps its session id reserved.
        left = bool(session_members(proc.pid, exclude=proc.pid))
        kill_session(proc.pid)
        rc, cpu = _reap(proc)
    finally:
        remove_tree(work)
    return _Outcome(out, err, timed_out, flooded, rc, cpu, left)


def _send(proc: subprocess.Popen, data: bytes) -> None:
    try:
        proc.stdin.write(data)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except BrokenPipeError:
        pass


def _signal(pid: int, sig: int) -> None:
    """os.kill (a negative pid: its process group), ignoring a target already gone."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the process has ended, without reaping it (its pid stays reserved for the group kill)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _collect(proc: subprocess.Popen, timeout_s: float, stop: Callable[[], None]) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr until the process exits, the deadline or the output cap (calling ``stop`` on the
    last two). Does not reap the process."""
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
        if exited_at is None and _exited(proc):
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break  # a child left behind still holds the pipes: stop reading, it is killed next
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
        stop()
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
