"""JSON Lines that survive a crash mid-write: one reader and one appender for every ``*.jsonl`` of dllmrl.

    rows = read_jsonl(path)                  # a torn final line is skipped with a warning
    with JsonlAppender(path) as out:         # a torn tail is cut off before the first append
        out.write({"id": "a", "correct": True})

A process killed while writing (or a full disk) leaves the last line without its newline. Readers skip
such a fragment; the appender cuts it off first, so the next record never lands on the end of it. A bad
line anywhere else is a ``DataError`` naming the file and the line. A disk that fills up while appending
is an ``OutputError`` that names the directory: every whole line written so far stays, so a rerun resumes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from dllmrl.errors import DataError, OutputError

log = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one per line; empty lines are ignored, a torn final line is skipped.

    Torn means: the last line does not parse and has no newline after it (every writer ends each line
    with one, so only a write cut short leaves such a line). Any other bad line is a ``DataError``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; pass a JSONL file") from None
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; pass a JSONL file") from None
    if b"\0" in data:
        raise DataError(f"{path} is a binary file, not JSON Lines (one JSON object per line)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); pass a JSONL file") from None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last and i == len(lines) - 1:  # no newline after it: the write was cut short
                log.warning("%s:%d: skipping a partly written last line (a run stopped mid-write)", path, i + 1)
                continue
            raise DataError(f"{path}:{i + 1} is not valid JSON ({e.msg}); fix or delete that line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i + 1} is not a JSON object; each line must be one {{...}} object")
        rows.append(row)
    return rows


def repair_tail(path: Path) -> None:
    """Make ``path`` end in a newline: a whole last line gets one, a torn one is cut off (with a warning)."""
    if not path.is_file():
        return
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Read back from the end until the last newline; lines are short enough to read the tail at once.
        back = min(size, 1 << 20)
        while True:
            f.seek(size - back)
            tail = f.read(back)
            cut = tail.rfind(b"\n")
            if cut >= 0 or back == size:
                break
            back = min(size, back * 4)
        start = size - back + cut + 1  # first byte of the unterminated line (0 when the file has one line)
        fragment = tail[cut + 1:]
        try:
            json.loads(fragment.decode("utf-8"))
            whole = True
        except (UnicodeDecodeError, json.JSONDecodeError):
            whole = False
        if whole:
            f.seek(size)
            f.write(b"\n")
        else:
            log.warning("%s: cutting off a partly written last line (%d bytes) before appending", path, len(fragment))
            f.truncate(start)


RERUN = "rerun the same command to resume (whole lines already written are kept)"


def disk_error(e: OSError, directory: Path, rerun: str = RERUN) -> OutputError:
    """An OSError while writing run output, as one line that names the directory and the way out."""
    if e.errno == errno.ENOSPC:
        why = "the disk is full"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "it is not writable"
    else:
        why = e.strerror or str(e)
    return OutputError(f"cannot write to {directory}: {why}; free space or pick another directory, then {rerun}")


class JsonlAppender:
    """Appends one JSON object per line to ``path``, after repairing a torn tail; ``flush()`` after each batch."""

    def __init__(self, path: str | Path, *, rerun: str = RERUN):
        self.path = Path(path)
        self.rerun = rerun
        self._f = None

    def __enter__(self) -> "JsonlAppender":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            repair_tail(self.path)
            self._f = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise disk_error(e, self.path.parent, self.rerun) from None
        return self

    def write(self, row: Mapping[str, Any]) -> None:
        assert self._f is not None, "use JsonlAppender as a context manager"
        try:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        except OSError as e:
            raise disk_error(e, self.path.parent, self.rerun) from None

    def flush(self) -> None:
        assert self._f is not None
        try:
            self._f.flush()
        except OSError as e:
            raise disk_error(e, self.path.parent, self.rerun) from None

    def __exit__(self, *exc: Any) -> None:
        f, self._f = self._f, None
        if f is None:
            return
        try:
            f.close()
        except OSError as e:
            if exc[0] is None:
                raise disk_error(e, self.path.parent, self.rerun) from None


def append_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]], *, rerun: str = RERUN) -> None:
    """Append ``rows`` to ``path`` (see ``JsonlAppender``)."""
    with JsonlAppender(path, rerun=rerun) as out:
        for row in rows:
            out.write(row)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]], *, rerun: str = RERUN) -> None:
    """Replace ``path`` with ``rows`` atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path.parent, rerun) from None
