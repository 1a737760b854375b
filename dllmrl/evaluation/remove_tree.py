"""Remove a directory tree written by an untrusted program, however deep or locked down it is.

``shutil.rmtree`` recurses once per level (a tree thousands deep raises RecursionError) and walks
paths that can outgrow PATH_MAX. Here every subdirectory is first renamed to a fresh name directly
under the top, so no loop recurses and no path is longer than two components below the top; each
directory gets its owner permissions back before it is listed (a program may chmod 000 its own
directories); symlinks are removed, never followed. ``rm -rf`` is the last resort.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import subprocess

log = logging.getLogger(__name__)


def remove_tree(top: str) -> bool:
    """Delete ``top`` and everything under it; True when nothing is left."""
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            os.unlink(top)
            return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        _flatten_and_remove(top)
    except OSError as e:
        log.debug("sandbox cleanup of %s: %s; trying rm -rf", top, e)
    if os.path.lexists(top):
        subprocess.run(["rm", "-rf", "--one-file-system", "--", top], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if os.path.lexists(top):
        log.warning("sandbox: could not remove %s", top)
        return False
    return True


def _flatten_and_remove(top: str) -> None:
    tag = secrets.token_hex(6)
    pending, emptied, count = [top], [], 0
    while pending:
        here = pending.pop()
        os.chmod(here, 0o700)
        with os.scandir(here) as it:
            entries = list(it)  # listed before renaming anything into the top
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                count += 1
                flat = os.path.join(top, f".rm-{tag}-{count}")
                os.rename(entry.path, flat)
                pending.append(flat)
            else:
                os.unlink(entry.path)
        emptied.append(here)
    for path in reversed(emptied):
        os.rmdir(path)
