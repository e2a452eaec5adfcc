"""Starting and signalling the ``process`` family's programs: the relay that runs each one, and stopping it.

kasloop never starts a program itself: it starts the relay (:mod:`kasloop.tools.process_relay`) and hands it
the checked command, and it signals a program only after checking that the recorded PID is still that
program (:mod:`kasloop.tools.process_records`). Both OS-facing halves live here, apart from the records
they act on and from the tools that call them (:mod:`kasloop.tools.process`, whose docstring describes the
family as a whole). :func:`stop_thread_processes` is also what deleting a thread calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kasloop.checkpoints.processes import ProcessRecord, ProcessStore, ProcessStoreProtocol
from kasloop.tools.contract import ToolFailure, ToolResult
from kasloop.tools.procfs import ProcStat, proc_stat, signal_quietly
from kasloop.tools.process_records import (
    _POLL,
    _ended,
    _metadata,
    _read_state,
    _refresh,
    _relay_alive,
    _session_members,
    _verified,
)
from kasloop.tools.sandbox import sandbox_shells

__all__ = ["KILL_WAIT", "RELAY_PATH", "SPAWN_TIMEOUT", "stop_record", "stop_thread_processes"]

SPAWN_TIMEOUT = 20.0
"""Seconds the relay may take to start the program and report its PID."""
KILL_WAIT = 3.0
"""Seconds to wait for the processes to vanish after SIGKILL."""


# --------------------------------------------------------------------------- the relay

RELAY_PATH = Path(__file__).resolve().with_name("process_relay.py")
"""The relay script (:mod:`kasloop.tools.process_relay`, stdlib only), run by path as
``python -I -S RELAY_PATH <id>`` (``ps`` shows the file and the id). stdin: one JSON object {argv,
executable, cwd, env, log, state, limit, lifetime, kill_grace, sandboxed}; stdout: one JSON line
{pid, start_ticks} or {error, errno}, then closed. See the module docstrings."""

_RELAYS: set[subprocess.Popen[bytes]] = set()
"""Relays started by this OS process; polled (reaped) on each call so none stays a zombie for long."""


def _reap_relays() -> None:
    for relay in list(_RELAYS):
        if relay.poll() is not None:
            _RELAYS.discard(relay)


def _launch(process_id: str, env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    """Start a relay (its own session, so it and the program outlive kasloop and its terminal)."""
    try:
        relay = subprocess.Popen(
            [sys.executable, "-I", "-S", str(RELAY_PATH), process_id],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=folder, env=env, start_new_session=True, close_fds=True,
        )  # fmt: skip
    except OSError as exc:
        raise ToolFailure("permanent", f"cannot start the process helper ({sys.executable}): {exc.strerror or exc}") from None
    _RELAYS.add(relay)
    return relay


def _handshake(relay: subprocess.Popen[bytes], config: dict[str, Any]) -> dict[str, Any] | None:
    """Hand the relay its command; return its one-line reply, None if it died (blocking: run in a thread)."""
    assert relay.stdin is not None and relay.stdout is not None
    try:
        try:
            relay.stdin.write(json.dumps(config).encode())
            relay.stdin.close()
        except BrokenPipeError:
            pass
        line = relay.stdout.readline()
    finally:
        relay.stdout.close()
    try:
        reply = json.loads(line) if line else None
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def _abandon(relay: subprocess.Popen[bytes]) -> None:
    """SIGKILL a relay whose reply never came, and whatever it may have started in its session."""
    for pid in _session_members(relay.pid):
        signal_quietly(pid, signal.SIGKILL)
    relay.kill()


async def _spawn(config: dict[str, Any], env: dict[str, str], folder: Path) -> dict[str, Any]:
    """Start the relay with ``config``; its reply: ``{pid, start_ticks}`` or ``{error, errno}``."""
    relay = _launch(config["id"], env, folder)
    try:
        reply = await asyncio.wait_for(asyncio.to_thread(_handshake, relay, config), SPAWN_TIMEOUT)
    except BaseException:  # timeout or cancellation: leave nothing untracked behind
        _abandon(relay)
        raise
    if reply is None:
        _abandon(relay)
        raise ToolFailure("permanent", f"the process helper ({sys.executable}) did not start the program; check that Python runs here")
    return reply


# --------------------------------------------------------------------------- stopping


def _kill_untracked(pid: int, ticks: int | None) -> None:
    """SIGKILL a program just started whose record could not be written (its group is its own)."""
    stat = proc_stat(pid)
    if stat is not None and ticks is not None and stat.start_ticks == ticks and stat.pgid == pid:
        signal_quietly(pid, signal.SIGKILL, group=True)


def _leftovers(record: ProcessRecord, sid: int | None) -> bool:
    return _verified(record) is not None or (sid is not None and bool(_session_members(sid)))


def _send(record: ProcessRecord, sig: int, *, group: bool, sid: int | None) -> None:
    """Signal the program's group (only while its PID is still verified) and the rest of its relay's session."""
    spared = sandbox_shells(record.pid) if sig != signal.SIGKILL and _verified(record) is not None else set()
    if _verified(record) is not None and not spared:
        signal_quietly(record.pid, sig, group=group)
    if sid is not None:
        for pid in _session_members(sid):
            if pid not in spared:
                signal_quietly(pid, sig)


async def _wait_gone(record: ProcessRecord, sid: int | None, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _leftovers(record, sid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


def _relay_session(record: ProcessRecord, stat: ProcStat | None) -> int | None:
    """The session of the record's relay, if that relay still runs; never kasloop's own session.

    Every other process in it was started by the program (a grandchild that made its own
    process group, or one left behind after the program ended).
    """
    state = _read_state(record)
    sid = state.get("relay_pid")
    if not isinstance(sid, int) or not _relay_alive(state) or sid == os.getsid(0):
        return None
    if stat is not None and stat.sid != sid:
        return None
    return sid


async def stop_record(store: ProcessStoreProtocol, record: ProcessRecord, kill_grace: float) -> ToolResult:
    """Stop one recorded process: SIGTERM, ``kill_grace`` seconds, SIGKILL; what ``process_stop`` reports."""
    _reap_relays()
    stat = _verified(record)
    sid = _relay_session(record, stat)
    if stat is None and (sid is None or not _session_members(sid)):
        record = await _refresh(store, record)
        text = f"{record.id} had already ended: {_ended(record.exit_code)}; nothing was signalled."
        return ToolResult(ok=True, output=text, metadata=_metadata(record, signal=None))
    # The process group is signalled as a whole only if it is the program's own (set up by the relay).
    group = stat is not None and stat.pgid == record.pid
    sent = "SIGTERM"
    _send(record, signal.SIGTERM, group=group, sid=sid)
    if not await _wait_gone(record, sid, kill_grace):
        sent = "SIGKILL"
        _send(record, signal.SIGKILL, group=group, sid=sid)
        if not await _wait_gone(record, sid, KILL_WAIT):
            raise ToolFailure("transient", f"{record.id} (pid {record.pid}) is still running after SIGKILL; try process_stop again")
    record = await _refresh(store, record)
    leftovers = " (the program had already ended; processes it left behind were stopped)" if stat is None else ""
    text = f"stopped {record.id} ({sent}): {_ended(record.exit_code)}{leftovers}."
    return ToolResult(ok=True, output=text, metadata=_metadata(record, signal=sent, leftovers_only=stat is None))


async def stop_thread_processes(database: Any, thread_id: str, *, kill_grace: float = 5.0) -> list[str]:
    """Stop every process ``thread_id`` started that still runs (when the thread is deleted); their ids.

    Processes of the thread's specialists (threads ``<thread_id>/...``) are stopped too.
    """
    store = ProcessStore(database)
    stopped: list[str] = []
    for owner in await store.threads_like(thread_id):
        for record in await store.list(owner, limit=100_000, active_only=True):
            result = await stop_record(store, record, kill_grace)
            if result.metadata.get("signal") is not None:
                stopped.append(record.id)
    return stopped
