"""What kasloop knows about a background process of the ``process`` family, and how it is read back.

A process is a record in the process store (:mod:`kasloop.checkpoints.processes`) plus what its relay writes
beside its log (``<id>.state.json``: exit status, bytes dropped, the relay's own PID) plus ``/proc``. This
module reads all three: the store of a call and the ownership check, whether a recorded PID is still the
program kasloop started (same start time), the exit status once it ended, a process described in one line,
and the end of its rotated log. Starting and stopping processes is :mod:`kasloop.tools.process_control`;
the tools are :mod:`kasloop.tools.process` (whose docstring describes the family as a whole).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kasloop.checkpoints.processes import MemoryProcessStore, ProcessRecord, ProcessStore, ProcessStoreProtocol
from kasloop.tools.contract import ToolContext, ToolFailure
from kasloop.tools.procfs import GONE_STATES, ProcStat, proc_stat, session_members

__all__ = ["EXIT_STATUS_WAIT", "PROCESS_ID", "TAIL_READ_BYTES", "start_ticks", "tail_log"]

PROCESS_ID = re.compile(r"^p-[0-9a-f]{6}$")
STORE_KEY = "process_store"
EXIT_STATUS_WAIT = 2.0
"""Seconds to wait for a live relay to record the exit status of a program that just ended."""
TAIL_READ_BYTES = 65536
"""At most this much of the log end is read for ``process_tail`` (memory stays flat for any log size)."""
_POLL = 0.02


# --------------------------------------------------------------------------- /proc
# Through tools/procfs.py, not psutil: records hold the raw start ticks the stdlib-only relay reads (psutil only
# gives create_time() in seconds), and psutil has no session id to find what a program left in its relay's session.


def start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot), or None if ``pid`` is gone."""
    stat = proc_stat(pid)
    return None if stat is None else stat.start_ticks


def _verified(record: ProcessRecord) -> ProcStat | None:
    """The live process of ``record``: same PID *and* same start time, not a zombie; else None."""
    if record.start_ticks is None:
        return None
    stat = proc_stat(record.pid)
    if stat is None or stat.state in GONE_STATES or stat.start_ticks != record.start_ticks:
        return None
    return stat


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` except its leader (the relay)."""
    return session_members(sid, exclude=(sid,))


# --------------------------------------------------------------------------- what the relay records


def _state_path(record: ProcessRecord) -> Path:
    return Path(record.log_path).with_suffix(".state.json")


def _read_state(record: ProcessRecord) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(record).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _relay_alive(state: dict[str, Any]) -> bool:
    """The relay recorded in ``state`` still runs: same PID, same start time, leader of its own session."""
    pid = state.get("relay_pid")
    stat = proc_stat(pid) if isinstance(pid, int) else None
    return (
        stat is not None and stat.sid == pid and stat.state not in GONE_STATES
        and stat.start_ticks == state.get("relay_ticks")
    )  # fmt: skip


# --------------------------------------------------------------------------- the store and records


async def _store(ctx: ToolContext) -> ProcessStoreProtocol:
    database = ctx.resources.database

    async def make() -> ProcessStoreProtocol:
        return ProcessStore(database) if database is not None else MemoryProcessStore()

    return await ctx.resources.shared(STORE_KEY, make)


async def _owned(store: ProcessStoreProtocol, ctx: ToolContext, given: str) -> ProcessRecord:
    """The record of ``given`` if this thread started it; PIDs and other threads' ids are refused."""
    text = given.strip()
    if text.isdigit():
        raise ToolFailure("denied", f"`{text}` is a PID; only processes started with process_start can be managed, by their id (like p-1a2b3c); process_list shows yours")
    if not PROCESS_ID.match(text):
        raise ToolFailure("bad_args", f"`{given}` is not a process id; ids look like p-1a2b3c (see process_list)")
    record = await store.get(text)
    if record is None:
        raise ToolFailure("bad_args", f"no process `{text}`; process_list shows the processes you started")
    if record.thread_id != ctx.thread_id:
        raise ToolFailure("denied", f"process `{text}` was not started by this agent thread; you may only manage your own processes")
    return record


async def _refresh(store: ProcessStoreProtocol, record: ProcessRecord, *, wait: float = EXIT_STATUS_WAIT) -> ProcessRecord:
    """``record`` with its end filled in when the process is no longer running (and stored)."""
    if record.stopped_at is not None and record.exit_code is not None:
        return record
    if record.stopped_at is None and _verified(record) is not None:
        return record
    state = _read_state(record)
    deadline = time.monotonic() + wait
    while state.get("returncode") is None and _relay_alive(state) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL)  # the relay records the status right after the program ends
        state = _read_state(record)
    raw_code, raw_ended = state.get("returncode"), state.get("ended_at")
    code = raw_code if isinstance(raw_code, int) else None
    ended = float(raw_ended) if isinstance(raw_ended, (int, float)) else time.time()
    await store.mark_ended(record.id, ended, code)
    return replace(
        record,
        stopped_at=record.stopped_at if record.stopped_at is not None else ended,
        exit_code=code if code is not None else record.exit_code,
    )


def _ended(code: int | None) -> str:
    if code is None:
        return "exited (exit code unknown)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _status_word(record: ProcessRecord) -> str:
    return "running" if record.stopped_at is None else "exited"


def _describe(record: ProcessRecord, now: float | None = None) -> str:
    now = time.time() if now is None else now
    label = f" [{record.name}]" if record.name else ""
    command = " ".join(record.command)
    if record.stopped_at is None:
        # No PID in the text: no tool takes one, and a small model copied it instead of the id (metadata has it).
        state = f"running (for {max(0.0, now - record.started_at):.0f} s)"
    else:
        state = f"{_ended(record.exit_code)} after {max(0.0, record.stopped_at - record.started_at):.0f} s"
    return f"{record.id}{label} {state}: {command}"


def _log_files(record: ProcessRecord) -> tuple[Path, Path]:
    log = Path(record.log_path)
    return log.with_name(log.name + ".1"), log


def _log_size(record: ProcessRecord) -> int:
    size = 0
    for path in _log_files(record):
        try:
            size += path.stat().st_size
        except OSError:  # not written yet, or renamed by a rotation this instant
            pass
    return size


def _metadata(record: ProcessRecord, **extra: Any) -> dict[str, Any]:
    data = {
        "id": record.id, "status": _status_word(record), "pid": record.pid, "argv": record.command,
        "name": record.name, "exit_code": record.exit_code, "started_at": record.started_at,
        "stopped_at": record.stopped_at,
    }  # fmt: skip
    data.update(extra)
    # What counts as news when this is polled (kasloop.nodes.observations): the text's "for 12 s" does not.
    data["observed"] = {k: data[k] for k in ("status", "exit_code", "log_bytes", "dropped_bytes") if k in data}
    if record.stopped_at is not None:
        data["final"] = True  # an exited process's status never changes again: polling it is over
    return data


# --------------------------------------------------------------------------- the log


def _read_end(path: Path, budget: int) -> tuple[bytes, bool]:
    """The last ``budget`` bytes of ``path`` and whether that is the whole file."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - budget)
            fh.seek(start)
            return fh.read(budget), start == 0
    except OSError:
        return b"", True


def tail_log(log_path: str | Path, lines: int, budget: int = TAIL_READ_BYTES) -> str:
    """The last ``lines`` lines of a rotated log (``.log.1`` + ``.log``), reading at most ``budget`` bytes."""
    log = Path(log_path)
    data, whole = _read_end(log, budget)
    if whole and len(data) < budget and data.count(b"\n") <= lines:
        older, whole = _read_end(log.with_name(log.name + ".1"), budget - len(data))
        data = older + data
    if b"\x00" in data:
        return "[the log holds binary data; not shown]"
    text = data.decode(errors="replace")
    parts = text.splitlines()
    if not whole and parts:
        parts = parts[1:]  # the first line read was cut in the middle
    return "\n".join(parts[-lines:])
