"""One writer per run directory: an exclusive lock held for the whole run.

    with DirLock("runs/eval/x", "dllmrl eval"):   # a second writer gets an OutputError naming the holder
        ...

The lock is ``fcntl.flock`` on ``<dir>/.dllmrl.lock``; the file holds the holder's pid, host and command.
The kernel drops a flock when its process dies, so the lock of a killed run is free again; the file's
leftover content (a dead pid) is reported and overwritten. Under ``torchrun`` / ``accelerate launch`` only
rank 0 takes the lock: when rank 0 stops, the launcher stops the other ranks.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from dllmrl.errors import OutputError
from dllmrl.io.jsonl import disk_error

log = logging.getLogger(__name__)

LOCK_FILE = ".dllmrl.lock"


def prepare_dir(path: str | Path, option: str) -> Path:
    """Create the output directory ``path``, or say in one line why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a directory; pass a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{option} {path}: a part of that path is a file; pass a directory path") from None
    except OSError as e:
        raise OutputError(f"{option} {path} cannot be created ({e.strerror}); pass a writable directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path} is not writable; pass a writable directory")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _read_holder(f) -> dict[str, Any]:
    f.seek(0)
    try:
        holder = json.loads(f.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


class DirLock:
    """Exclusive lock on ``directory`` for one run; ``option`` names the flag in messages (e.g. '--out')."""

    def __init__(self, directory: str | Path, command: str, *, option: str = "--out", lock_file: str = LOCK_FILE):
        self.directory = Path(directory)
        self.command = command
        self.option = option
        self.path = self.directory / lock_file
        self._f = None

    def acquire(self) -> "DirLock":
        prepare_dir(self.directory, self.option)
        try:
            f = self.path.open("a+", encoding="utf-8")
        except OSError as e:
            raise disk_error(e, self.directory) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(f)
            f.close()
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock {self.path} ({e.strerror}); this file system may not support "
                                  f"locks: pass a local {self.option} directory") from None
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} ({holder.get('command', 'dllmrl')})"
            raise OutputError(f"{self.directory} is in use by {who}; wait for it to finish, stop it, or pass "
                              f"another {self.option}") from None
        old = _read_holder(f)
        if old.get("pid") and old.get("pid") != os.getpid():
            state = "no longer running" if not _pid_alive(int(old["pid"])) else "not holding it"
            log.warning("%s: taking over the stale lock of pid %s on %s (%s)", self.directory, old.get("pid"),
                        old.get("host"), state)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps(me) + "\n")
            f.flush()
        except OSError as e:
            f.close()
            raise disk_error(e, self.directory) from None
        self._f = f
        return self

    def release(self) -> None:
        f, self._f = self._f, None
        if f is None:
            return
        try:  # an empty file means "free"; a later run then has no stale holder to report
            f.seek(0)
            f.truncate()
        except OSError:
            pass
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def is_rank_zero() -> bool:
    """True unless this process is a non-zero rank of a launch: of a joined process group, else by ``RANK``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


class RunDirLock(DirLock):
    """``DirLock`` taken by rank 0 only (the other ranks of one launch share rank 0's directory)."""

    def acquire(self) -> "RunDirLock":
        if is_rank_zero():
            super().acquire()
        return self
