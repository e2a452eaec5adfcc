"""Exclusive, crash-safe locks between processes: one daemon per database, one driver per thread."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

__all__ = ["try_lock"]


def try_lock(path: Path) -> IO[str] | None:
    """Take an exclusive ``flock`` on ``path``, held while the returned handle stays open; None if another holds it.

    The kernel drops the lock when the holder's process dies, so a ``kill -9``
    never leaves a stale lock behind (unlike a pid file checked by hand).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
