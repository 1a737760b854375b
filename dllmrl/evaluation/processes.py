"""Process bookkeeping for the sandbox, read from /proc by the caller (never by the program).

A session is identified by the id of the process that started it (``start_new_session``); its
members are found by the session field of ``/proc/PID/stat``, so nothing the program does to its own
interpreter can hide them.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def process_limit(extra: int) -> int:
    """An RLIMIT_NPROC for a program run as the caller's uid, which counts every process of that uid: what
    the caller already runs plus ``extra``; -1 (leave unset) for root, which the limit does not bind."""
    if os.geteuid() == 0:
        return -1
    mine = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == os.geteuid():
                mine += 1
        except OSError:
            continue
    return mine + extra


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
    except (OSError, IndexError):
        return None


def session_members(sid: int, exclude: int = -1) -> list[int]:
    """Live (not zombie) processes of session ``sid``, read from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != exclude:
            fields = _stat_fields(name)
            if fields and fields[0] not in "ZX" and int(fields[3]) == sid:
                found.append(int(name))
    return found


def kill_session(sid: int) -> None:
    """SIGKILL the session's process group and any member that moved to another group, until none is left."""
    for _ in range(200):
        _signal(-sid, signal.SIGKILL)
        members = session_members(sid, exclude=sid)
        if not members:
            return
        for pid in members:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.005)
    log.warning("sandbox: processes of session %d survived 200 kill rounds", sid)


def sweep_uid(uid: int) -> None:
    """Kill any process still running as the run's uid (only if the jail's supervisor had to be killed)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue
