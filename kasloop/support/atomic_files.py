"""Writing a file so that a crash never leaves half of it: the one helper every writer of whole files uses.

The files tools (:mod:`kasloop.tools.files`, :mod:`kasloop.tools.browser`), the memory export
(:mod:`kasloop.memory.long_term`) and the report (:mod:`kasloop.reporting.report`) import it from here. Standard library
only, so any layer can.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same folder, which is fsynced and renamed over ``target``;
    then the folder is fsynced. On a failure the temporary file is removed and ``target`` is unchanged.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
