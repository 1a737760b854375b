"""The sandbox against hostile programs: each ends "not passed", the caller survives, nothing is left behind.

Outcomes are asserted, never wall time. Cases needing namespaces (root, Linux) skip elsewhere,
saying so: the fallback mode does not claim those protections. The hostile cases taking the ``mode``
fixture run in both modes where this machine has namespaces (the fallback is forced by patching
``isolation``) and assert in each mode exactly what the module docstring guarantees for it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from dllmrl.evaluation import sandbox
from dllmrl.evaluation.sandbox import MAX_OUTPUT_BYTES, isolation, run_many, run_program

NAMESPACES, FALLBACK = "namespaces", "process-group"
isolated = pytest.mark.skipif(isolation() != NAMESPACES, reason="needs namespace isolation (root, Linux)")
REPO = Path(__file__).resolve().parents[1]


def _sandbox_dirs() -> set[str]:
    # Ours only: other processes on the machine may be running sandboxes at the same time.
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"dllmrl-sandbox-{os.getpid()}-*")}


def _procs_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(params=[NAMESPACES, FALLBACK])
def mode(request, monkeypatch):
    """Run the test in namespace mode (where available) and in the forced fallback mode."""
    if request.param == NAMESPACES and isolation() != NAMESPACES:
        pytest.skip("namespace mode is not available on this machine (needs root, Linux x86_64/aarch64, ldd)")
    if request.param == FALLBACK:
        monkeypatch.setattr(sandbox, "isolation", lambda: FALLBACK)
    return request.param


@pytest.fixture(autouse=True)
def leaves_no_trace():
    before = _sandbox_dirs()
    yield
    assert _sandbox_dirs() <= before, "a sandbox directory was left behind"


def test_honest_program_passes():
    res = run_program("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')", timeout_s=10, memory_mb=512)
    assert res.passed and not res.timed_out and res.stdout.strip() == "ok" and res.status == "passed"


def test_failing_assert_is_not_a_pass():
    res = run_program("assert 1 + 1 == 3", timeout_s=10, memory_mb=512)
    assert not res.passed and "AssertionError" in res.stderr


@pytest.mark.parametrize("exit_call", ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit"])
def test_exiting_zero_before_the_tests_is_not_a_pass(exit_call):
    res = run_program(f"{exit_call}\nassert False, 'never reached'", timeout_s=10, memory_mb=512)
    assert not res.passed and res.returncode == 0  # the status alone would have faked a pass


def test_printing_a_fake_marker_is_not_a_pass():
    # The marker carries a per-run nonce the program does not know.
    from dllmrl.evaluation.sandbox import MARKER

    res = run_program(f"print('\\n{MARKER}' + '0' * 32)\nimport os; os._exit(0)", timeout_s=10, memory_mb=512)
    assert not res.passed


def test_endless_loop_times_out():
    res = run_program("while True:\n    pass", timeout_s=2, memory_mb=512)
    assert not res.passed and res.timed_out and res.status == "timeout"


def test_memory_bomb_fails():
    res = run_program("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))", timeout_s=10, memory_mb=256)
    assert not res.passed and "MemoryError" in res.stderr


def test_output_flood_is_cut():
    res = run_program("while True:\n    print('x' * 10000)", timeout_s=10, memory_mb=512)
    assert not res.passed and res.output_exceeded
    assert len(res.stdout) <= MAX_OUTPUT_BYTES


@isolated
def test_fork_bomb_is_contained():
    token = f"forkbomb-{uuid.uuid4().hex}"
    src = (
        "import os, sys\n"
        "while True:\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-S', '-c', 'import os\\nwhile True: os.fork()', '{token}'])\n"
    )
    res = run_program(src, timeout_s=5, memory_mb=256)
    assert not res.passed
    assert _procs_with(token) == []


@isolated
def test_child_left_behind_is_killed_and_fails():
    token = f"orphan-{uuid.uuid4().hex}"
    src = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{token}'], start_new_session=True)\n"
        "assert True\n"
    )
    res = run_program(src, timeout_s=10, memory_mb=512)
    assert not res.passed and "left processes running" in res.stderr
    assert _procs_with(token) == []


@isolated
def test_cannot_delete_or_write_outside(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    precious = keep / "precious.txt"
    precious.write_text("data")
    src = (
        "import os, shutil\n"
        f"shutil.rmtree({str(keep)!r}, ignore_errors=True)\n"
        f"os.remove({str(precious)!r})\n"
    )
    res = run_program(src, timeout_s=10, memory_mb=512)
    assert not res.passed
    assert precious.read_text() == "data"
    res = run_program(f"open({str(keep / 'new.txt')!r}, 'w').write('x')", timeout_s=10, memory_mb=512)
    assert not res.passed and not (keep / "new.txt").exists()


@isolated
def test_cannot_kill_its_parent_or_anything_else():
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        src = (
            "import os, signal\n"
            "os.kill(os.getppid(), signal.SIGKILL)\n"
            "os.kill(-1, signal.SIGKILL)\n"
            f"os.kill({os.getpid()}, signal.SIGKILL)\n"
            f"os.kill({sentinel.pid}, signal.SIGKILL)\n"
        )
        res = run_program(src, timeout_s=10, memory_mb=512)
        assert not res.passed
        assert sentinel.poll() is None  # still running; and so are we
    finally:
        sentinel.kill()
        sentinel.wait()


@isolated
def test_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted = []

    def serve():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=serve)
    t.start()
    try:
        res = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", timeout_s=10, memory_mb=512)
        assert not res.passed
    finally:
        t.join()
        server.close()
    assert accepted == []


def test_run_many_keeps_order_and_runs_all():
    progs = ["assert True", "assert False", "while True: pass", "print(7)"]
    res = run_many(progs, timeout_s=2, memory_mb=512, workers=2)
    assert [r.passed for r in res] == [True, False, False, True]
    assert res[2].timed_out and res[3].stdout.strip() == "7"


def _pids_of_uid(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_deep_directory_tree_is_removed(mode):
    # mkdir + chdir 3000 deep, the last levels locked: shutil.rmtree recursed into a RecursionError here.
    src = (
        "import os\n"
        "for i in range(3000):\n"
        "    os.mkdir('d')\n"
        "    os.chdir('d')\n"
        "open('f', 'w').write('x')\n"
        "os.chmod('..', 0)\n"
        "os.chmod('.', 0)\n"
        "print('deep')\n"
    )
    res = run_program(src, timeout_s=30, memory_mb=512)
    assert res.passed and res.stdout.strip() == "deep" and res.isolation == mode  # and no directory left (fixture)


def test_lone_surrogate_in_the_source_is_a_failed_run(mode):
    res = run_program("x = '\ud800'\nprint('never')\n", timeout_s=10, memory_mb=512)
    assert not res.passed and "SyntaxError" in res.stderr and "never" not in res.stdout


def test_files_left_in_temporary_directories(mode):
    token = f"dllmrl-left-{uuid.uuid4().hex}"
    places = [Path(d) / token for d in ("/tmp", "/dev/shm", "/var/tmp")]
    src = (
        "import tempfile\n"
        f"for p in {[str(p) for p in places]!r}:\n"
        "    open(p, 'w').write('left')\n"
        "fd, path = tempfile.mkstemp()\n"
        "print(path)\n"
    )
    try:
        res = run_program(src, timeout_s=10, memory_mb=512)
        assert res.passed
        assert not Path(res.stdout.strip()).exists()  # TMPDIR is its own directory in both modes
        left = [p for p in places if p.exists()]
    finally:
        for p in places:
            p.unlink(missing_ok=True)
    if mode == FALLBACK:
        pytest.skip("process-group mode: files written by absolute path to /tmp, /dev/shm, /var/tmp stay (documented)")
    assert left == []


def test_reads_nothing_of_the_host(mode):
    if mode == FALLBACK:
        pytest.skip("process-group mode: the program runs as the caller's user and can read the caller's files")
    with tempfile.NamedTemporaryFile("w", dir="/tmp", prefix="dllmrl-secret-", suffix=".txt") as other:
        other.write("secret")
        other.flush()
        os.chmod(other.name, 0o644)
        private = [REPO / "README.md", REPO / "tasks" / "sudoku" / "data" / "4x4_test_sudoku.csv",
                   REPO / "dllmrl" / "evaluation" / "sandbox.py", Path(other.name)]
        assert all(p.is_file() for p in private)
        src = (
            "import os\n"
            f"for p in {[str(p) for p in private]!r} + ['/etc/passwd']:\n"
            "    try:\n"
            "        open(p).read(1)\n"
            "        print('READ', p)\n"
            "    except OSError:\n"
            "        pass\n"
            f"print(sorted(os.listdir('/tmp')), os.path.exists({str(REPO)!r}))\n"
        )
        res = run_program(src, timeout_s=10, memory_mb=512)
    assert res.passed and "READ" not in res.stdout
    assert res.stdout.strip() == "[] False"


def test_patched_listdir_cannot_hide_a_background_child(mode):
    token = f"hidden-{uuid.uuid4().hex}"
    leave_session = mode == NAMESPACES  # the fallback does not claim to catch a child that leaves the session
    src = (
        "import os, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{token}'], "
        f"start_new_session={leave_session})\n"
        "os.listdir = lambda path='.': []\n"
        "os.scandir = lambda path='.': iter([])\n"
    )
    res = run_program(src, timeout_s=10, memory_mb=512)
    assert not res.passed and "left processes running" in res.stderr
    assert _procs_with(token) == []


def test_fork_bomb_is_reaped_before_return(mode):
    if mode == FALLBACK and os.geteuid() == 0:
        pytest.skip("process-group mode as root: RLIMIT_NPROC does not bind root, so a fork bomb is not contained")
    token = f"bomb-{uuid.uuid4().hex}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    # The bombers leave the session; the program itself ends normally with the bomb still running.
    src = (
        "import os, sys, time\n"
        "print(os.getuid(), flush=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-S', '-c', {bomb!r}, '{token}'])\n"
        "time.sleep(1)\n"
        "os.listdir = lambda path='.': []\n"
    )
    res = run_program(src, timeout_s=10, memory_mb=256)
    assert not res.passed and "left processes running" in res.stderr
    assert _procs_with(token) == []
    if mode == NAMESPACES:
        assert _pids_of_uid(int(res.stdout.split()[0])) == []


def test_remove_tree_is_iterative_and_follows_no_symlink(tmp_path):
    from dllmrl.evaluation.remove_tree import remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    top = tmp_path / "top"
    top.mkdir()
    here, name = os.open(tmp_path, os.O_RDONLY), "top"
    for _ in range(3000):  # deeper than a path may be long: built through directory fds
        deeper = os.open(name, os.O_RDONLY, dir_fd=here)
        os.close(here)
        here, name = deeper, "d"
        os.mkdir(name, dir_fd=here)
    os.symlink(outside, "link", dir_fd=here)
    os.chmod("d", 0, dir_fd=here)
    os.close(here)
    assert remove_tree(str(top)) and not top.exists()
    assert (outside / "keep.txt").read_text() == "keep"
