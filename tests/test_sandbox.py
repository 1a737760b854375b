"""The sandbox against hostile programs: each ends "not passed", the caller survives, nothing is left behind.

Outcomes are asserted, never wall time. Cases needing namespaces (root + unshare) skip elsewhere,
saying so: the fallback mode does not claim those protections.
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

from dllmrl.evaluation.sandbox import MAX_OUTPUT_BYTES, isolation, run_many, run_program

isolated = pytest.mark.skipif(isolation() != "namespaces", reason="needs root and unshare (namespace isolation)")


def _sandbox_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("dllmrl-sandbox-*")}


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
