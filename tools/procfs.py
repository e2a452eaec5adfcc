"""What kasloop reads from Linux ``/proc`` about processes, and the quiet signal it sends them.

One parser of ``/proc/PID/stat`` for the shell jail (:mod:`kasloop.tools.shell`, which
kills a timed-out command's whole session), the process family
(:mod:`kasloop.tools.process`, which checks a PID's start time before signalling and
stops what a background program left in its relay's session) and the local model server
(:mod:`kasloop.models.local_server`): the ``comm`` field may hold spaces and parentheses, so the
fields are split after its *last* ``)``, and one place gets that right for all three.
Where ``/proc`` is missing (not Linux) every reader answers "gone" / "no members".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GONE_STATES", "ProcStat", "proc_stat", "session_members", "signal_quietly"]

GONE_STATES = frozenset({"Z", "X", "x"})
"""``/proc/PID/stat`` states of a process that has ended (zombie or dead): nothing left to signal."""


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` kasloop uses."""

    state: str
    """One letter: ``R``, ``S``, ``D``, ``Z`` (zombie), ``X`` (dead)..."""
    pgid: int
    sid: int
    start_ticks: int
    """Field 22: start time in clock ticks since boot; with the PID it names one process, even after PID reuse."""


def proc_stat(pid: int) -> ProcStat | None:
    """State, process group, session and start time of ``pid`` from ``/proc``; None if it is gone (or unreadable)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcStat(state=fields[0].decode(), pgid=int(fields[2]), sid=int(fields[3]), start_ticks=int(fields[19]))
    except (IndexError, ValueError):
        return None


def session_members(sid: int, *, exclude: Iterable[int] = ()) -> list[int]:
    """Live (not ended) processes of session ``sid``, less the PIDs in ``exclude``; [] where ``/proc`` is missing.

    The shell jail wants the leader too (it is the command itself); the process family
    excludes it (the leader is the log relay, which must outlive the program).
    """
    skip = set(exclude)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    members = []
    for entry in entries:
        if entry.isdigit() and int(entry) not in skip:
            stat = proc_stat(int(entry))
            if stat is not None and stat.sid == sid and stat.state not in GONE_STATES:
                members.append(int(entry))
    return members


def signal_quietly(pid: int, sig: int, *, group: bool = False) -> None:
    """Send ``sig`` to ``pid`` (its process group with ``group``); a process that is gone or not ours is not an error.

    Callers signal what they found in ``/proc`` a moment ago: it may have ended since.
    """
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
