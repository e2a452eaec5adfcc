"""The ``process`` family: background programs that outlive the call (and the run) that started them.

``process_start`` runs one program in the background and returns a short
kasloop id (``p-1a2b3c``), never a PID; ``process_status``, ``process_tail``
and ``process_stop`` take that id, ``process_list`` shows the thread's
processes. The command goes through the **shell family's jail** unchanged
(:mod:`kasloop.tools.shell`: argv split with :func:`shlex.split`, no shell,
denylist, opaque programs refused unless named in ``shell.allow``, wrappers
looked through, scrubbed environment, ``cwd`` inside the workspace), so the
``shell`` settings (``ToolContext.extra["shell"]``) decide what may run here
too.

**How a process runs.** kasloop does not start the program itself: it starts
a tiny stdlib-only log relay, the script :mod:`kasloop.tools.process_relay`
run by path (``python -I -S .../process_relay.py <id>``: the interpreter
running kasloop, isolated, no site-packages, environment scrubbed like the
program's) in a new session (``start_new_session=True``). The relay starts
the program in its own process group with stdin closed and stdout + stderr
on a pipe, reports the PID and the start time (field 22 of
``/proc/PID/stat``) back, and then:

* copies the output into ``<tools home>/processes/<id>.log``, rotating to
  ``<id>.log.1`` when the file reaches half of ``process.log_limit_bytes``, so
  the two files never hold more than the limit (a program printing gigabytes
  costs ``log_limit_bytes`` of disk; the oldest output is dropped and counted);
* waits for the program and, once the pipe holds nothing more from it, writes
  its exit status to ``<id>.state.json`` (so "exited" means its whole output
  is in the log), and the exit code is known even when the kasloop process
  that started it is long gone (a relay that was killed leaves it "unknown").

The program is the relay's child, not kasloop's (kasloop reaps ended relays
on its next process call), and nothing is stopped when a run ends or the
tool resources close: background work is the point. Each relay is a small
Python process (about 10 MB of memory) that lives as long as the program. Each process is recorded in the kasloop database
(:class:`kasloop.checkpoints.processes.ProcessStore`, table
``kasloop_processes``; in memory when there is no database), so a later run
over the same database can inspect and stop it.

**Who may touch what.** A process can be inspected and stopped only by the
thread that started it (``denied`` otherwise); an unknown id is
``bad_args``; a bare number (a PID) is ``denied``: only processes started
with ``process_start`` are ever signalled. Before any signal the PID's start
time must equal the recorded one: a PID reused by another program is never
signalled and the process is reported as exited. ``process_stop`` sends
SIGTERM to the program's process group (and to any other process of its
relay's session, such as a grandchild that made its own group), waits up to
``process.kill_grace`` seconds, then sends SIGKILL, and reports the exit
status. Stopping a program that has already ended still stops what it left
running in its relay's session (a background child holding the log pipe).

**Retries.** ``process_start`` records ``ToolContext.idempotency_key``; a call
with a key already recorded for the thread returns the process it started
instead of starting a second one.

Errors: refused by the shell jail, a PID instead of an id, another thread's
process, or ``max_running`` reached → ``denied``; unknown program or id, bad
quoting, bad ``cwd`` → ``bad_args``; a broken ``process`` or ``shell``
config → ``permanent``.

Config (``[tool_settings.process]``, i.e. ``ToolContext.extra["process"]``, all
optional; validated by :class:`ProcessSettings`: an unknown key or a value of the
wrong type is one ``permanent`` line naming it; the jail itself is configured
under ``shell``):

``max_running``      processes of one thread running at once (8); starting
                     more is refused until one ends or is stopped.
``kill_grace``       seconds between SIGTERM and SIGKILL on stop (5, at most 30).
``log_limit_bytes``  disk kept per process log, both files together (1 MiB;
                     4 KiB .. 1 GiB); older output is dropped.
``max_lifetime``     seconds a process may run; past it the relay sends its
                     group SIGTERM, then SIGKILL after ``kill_grace`` (none).

**The sandbox.** Each program runs inside its own bubblewrap sandbox
(:mod:`kasloop.tools.sandbox`: read-only root, only the workspace writable,
kasloop's own files hidden, no network unless ``shell.network``, its own PID
namespace); the recorded PID is the sandbox's, and stopping it ends every
process inside. The relay starts the sandbox with ``--die-with-parent``, so a
program never outlives its relay (which records its exit).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from kasloop.checkpoints.processes import MemoryProcessStore, ProcessConflict, ProcessRecord, ProcessStore, ProcessStoreProtocol
from kasloop.tools.base import DEFAULT_OUTPUT_LIMIT, Tool, ToolContext, ToolFailure, ToolResult, ToolSettings
from kasloop.tools.files import resolve_in_workspace
from kasloop.tools.procfs import GONE_STATES, ProcStat, proc_stat, session_members, signal_quietly
from kasloop.tools.sandbox import sandbox_shells
from kasloop.tools.shell import ShellPolicy, check_command, child_env, sandboxed_command, split_command

__all__ = [
    "PROCESS_TOOLS",
    "RELAY_PATH",
    "ProcessIdArgs",
    "ProcessListArgs",
    "ProcessSettings",
    "ProcessStartArgs",
    "ProcessTailArgs",
    "start_ticks",
    "stop_record",
    "stop_thread_processes",
    "tail_log",
]

PROCESS_ID = re.compile(r"^p-[0-9a-f]{6}$")
STORE_KEY = "process_store"
START_LOCK_KEY = "process_start_lock"
SPAWN_TIMEOUT = 20.0
"""Seconds the relay may take to start the program and report its PID."""
KILL_WAIT = 3.0
"""Seconds to wait for the processes to vanish after SIGKILL."""
EXIT_STATUS_WAIT = 2.0
"""Seconds to wait for a live relay to record the exit status of a program that just ended."""
TAIL_READ_BYTES = 65536
"""At most this much of the log end is read for ``process_tail`` (memory stays flat for any log size)."""
LIST_LIMIT = 50
_POLL = 0.02


class ProcessSettings(ToolSettings):
    """``[tool_settings.process]`` (see the module docstring); read with ``ProcessSettings.from_context(ctx)``."""

    family: ClassVar[str] = "process"

    max_running: int = Field(default=8, ge=1, le=1000, description="Processes of one thread running at once.")
    kill_grace: float = Field(default=5.0, gt=0, le=30, description="Seconds between SIGTERM and SIGKILL on stop.")
    log_limit_bytes: int = Field(default=1 << 20, ge=4096, le=1 << 30, description="Disk kept per process log, bytes.")
    max_lifetime: float | None = Field(default=None, gt=0, description="Seconds a process may run before it is stopped; None: no limit.")


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
        state = f"running (pid {record.pid}, for {max(0.0, now - record.started_at):.0f} s)"
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
    return data


# --------------------------------------------------------------------------- process_start


class ProcessStartArgs(BaseModel):
    command: str | list[str] = Field(
        description="Command line (split like a shell, but no shell runs it: ; | && > are plain text) or a list of arguments.",
    )
    name: str | None = Field(default=None, max_length=64, description="Short label shown in process_list.")
    cwd: str = Field(default=".", description="Working folder relative to the workspace root.", json_schema_extra={"kasloop": "path"})


async def _new_id(store: ProcessStoreProtocol, folder: Path) -> str:
    while True:
        candidate = f"p-{secrets.token_hex(3)}"
        if await store.get(candidate) is None and not (folder / f"{candidate}.log").exists():
            return candidate


async def _running_count(store: ProcessStoreProtocol, thread_id: str) -> int:
    count = 0
    for record in await store.list(thread_id, limit=100_000, active_only=True):
        if (await _refresh(store, record, wait=0)).stopped_at is None:
            count += 1
    return count


def _kill_untracked(pid: int, ticks: int | None) -> None:
    """SIGKILL a program just started whose record could not be written (its group is its own)."""
    stat = proc_stat(pid)
    if stat is not None and ticks is not None and stat.start_ticks == ticks and stat.pgid == pid:
        signal_quietly(pid, signal.SIGKILL, group=True)


async def _start(args: ProcessStartArgs, ctx: ToolContext) -> ToolResult:
    settings = ProcessSettings.from_context(ctx)
    _reap_relays()
    policy = ShellPolicy.from_context(ctx)
    argv = split_command(args.command)
    cwd = resolve_in_workspace(ctx.workspace, args.cwd)
    if not cwd.is_dir():
        raise ToolFailure("bad_args", f"cwd `{args.cwd}` is not a folder in the workspace")
    executable = check_command(argv, policy)
    command, executable = sandboxed_command(argv, executable, policy, ctx, cwd)
    name = (" ".join(args.name.split()) or None) if args.name is not None else None
    store = await _store(ctx)
    lock = await ctx.resources.shared(START_LOCK_KEY, _new_lock)
    async with lock:
        if ctx.idempotency_key:
            existing = await store.find_by_key(ctx.thread_id, ctx.idempotency_key)
            if existing is not None:
                return _reused(await _refresh(store, existing, wait=0))
        running = await _running_count(store, ctx.thread_id)
        if running >= settings.max_running:
            raise ToolFailure("denied", f"{running} processes are already running (process.max_running = {settings.max_running}); stop one with process_stop first")
        folder = ctx.resources.home / "processes"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolFailure("permanent", f"cannot create the process log folder `{folder}`: {exc.strerror or exc}") from None
        process_id = await _new_id(store, folder)
        log = folder / f"{process_id}.log"
        env = child_env(policy)
        config = {
            "id": process_id, "argv": command, "executable": executable, "cwd": str(cwd), "env": env,
            "log": str(log), "state": str(log.with_suffix(".state.json")), "limit": settings.log_limit_bytes,
            "lifetime": settings.max_lifetime, "kill_grace": settings.kill_grace, "sandboxed": policy.sandbox != "none",
        }  # fmt: skip
        try:
            reply = await _spawn(config, env, folder)
        except TimeoutError:
            raise ToolFailure("transient", f"the process helper did not answer within {SPAWN_TIMEOUT:g} s; nothing was started, try again") from None
        if "error" in reply:
            kind = "denied" if reply.get("errno") in (1, 13) else "bad_args"
            raise ToolFailure(kind, f"cannot start `{argv[0]}`: {reply['error']}")
        record = ProcessRecord(
            id=process_id, thread_id=ctx.thread_id, pid=int(reply["pid"]), start_ticks=reply.get("start_ticks"),
            command=argv, log_path=str(log), started_at=time.time(), idempotency_key=ctx.idempotency_key or None,
            name=name,
        )  # fmt: skip
        try:
            await store.add(record)
        except ProcessConflict:
            # Another kasloop process recorded the same call meanwhile: keep its process, not ours.
            _kill_untracked(record.pid, record.start_ticks)
            existing = await store.find_by_key(ctx.thread_id, ctx.idempotency_key) if ctx.idempotency_key else None
            if existing is not None:
                return _reused(await _refresh(store, existing, wait=0))
            raise ToolFailure("transient", "could not record the new process (id clash); call process_start again") from None
    text = f"started {record.id} (pid {record.pid}): {' '.join(argv)}\nUse process_status, process_tail or process_stop with id {record.id}."
    return ToolResult(ok=True, output=text, metadata=_metadata(record, log_path=record.log_path))


async def _new_lock() -> asyncio.Lock:
    return asyncio.Lock()


def _reused(record: ProcessRecord) -> ToolResult:
    text = f"already started by this call (retry): {_describe(record)}"
    return ToolResult(ok=True, output=text, metadata=_metadata(record, reused=True, log_path=record.log_path))


# --------------------------------------------------------------------------- process_stop


class ProcessIdArgs(BaseModel):
    id: str = Field(max_length=64, description="Process id returned by process_start (like p-1a2b3c), not a PID.")


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


async def _stop(args: ProcessIdArgs, ctx: ToolContext) -> ToolResult:
    settings = ProcessSettings.from_context(ctx)
    store = await _store(ctx)
    return await stop_record(store, await _owned(store, ctx, args.id), settings.kill_grace)


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


# --------------------------------------------------------------------------- status, list, tail


async def _status(args: ProcessIdArgs, ctx: ToolContext) -> ToolResult:
    ProcessSettings.from_context(ctx)
    _reap_relays()
    store = await _store(ctx)
    record = await _refresh(store, await _owned(store, ctx, args.id))
    size = _log_size(record)
    text = f"{_describe(record)}\nlog: {size} bytes kept (process_tail shows the end)"
    return ToolResult(ok=True, output=text, metadata=_metadata(record, log_bytes=size))


class ProcessListArgs(BaseModel):
    pass  # no arguments: the thread's own processes


async def _list(args: ProcessListArgs, ctx: ToolContext) -> ToolResult:
    ProcessSettings.from_context(ctx)
    _reap_relays()
    store = await _store(ctx)
    records = [await _refresh(store, r, wait=0) for r in await store.list(ctx.thread_id, limit=LIST_LIMIT)]
    if not records:
        return ToolResult(ok=True, output="no processes started by this thread", metadata={"processes": []})
    now = time.time()
    lines = [_describe(r, now) for r in records]
    running = sum(1 for r in records if r.stopped_at is None)
    text = f"{len(records)} processes ({running} running), newest first:\n" + "\n".join(lines)
    return ToolResult(ok=True, output=text, metadata={"processes": [{"id": r.id, "status": _status_word(r), "exit_code": r.exit_code} for r in records]})


class ProcessTailArgs(ProcessIdArgs):
    lines: int = Field(default=50, ge=1, le=500, description="How many of the last log lines to show.")


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


async def _tail(args: ProcessTailArgs, ctx: ToolContext) -> ToolResult:
    ProcessSettings.from_context(ctx)
    _reap_relays()
    store = await _store(ctx)
    record = await _refresh(store, await _owned(store, ctx, args.id), wait=0)
    body = await asyncio.to_thread(tail_log, record.log_path, args.lines)
    dropped = _read_state(record).get("dropped", 0)
    size = _log_size(record)
    note = f", {dropped} older bytes dropped by the log limit" if dropped else ""
    header = f"{_describe(record)}\n--- last {args.lines} lines of the log ({size} bytes kept{note}) ---\n"
    room = TAIL_TOOL.output_limit - len(header) - 40
    if len(body) > room:  # keep the end: run_tool would cut the middle and lose the newest lines
        body = "[... earlier lines cut ...]\n" + body[-room:]
    return ToolResult(ok=True, output=header + body, metadata=_metadata(record, log_bytes=size, dropped_bytes=dropped))


TAIL_TOOL = Tool(
    name="process_tail",
    description="Show the last lines of a background process's combined stdout/stderr log.",
    args_model=ProcessTailArgs,
    func=_tail,
    risk="read",
    idempotent=True,
    timeout=30.0,
    output_limit=DEFAULT_OUTPUT_LIMIT,
    family="process",
)

PROCESS_TOOLS: tuple[Tool, ...] = (
    Tool(
        name="process_start",
        description="Start one program in the background (no shell) and return its id for the other process tools.",
        args_model=ProcessStartArgs,
        func=_start,
        risk="high",
        idempotent=False,
        timeout=60.0,
        family="process",
    ),
    Tool(
        name="process_stop",
        description="Stop a background process you started (SIGTERM, then SIGKILL) and report its exit status.",
        args_model=ProcessIdArgs,
        func=_stop,
        risk="high",
        idempotent=True,
        timeout=30.0 + KILL_WAIT + EXIT_STATUS_WAIT + 10.0,
        family="process",
    ),
    Tool(
        name="process_status",
        description="Tell whether a background process you started is running or has exited (with its exit code).",
        args_model=ProcessIdArgs,
        func=_status,
        risk="read",
        idempotent=True,
        timeout=30.0,
        family="process",
    ),
    Tool(
        name="process_list",
        description="List the background processes you started, newest first.",
        args_model=ProcessListArgs,
        func=_list,
        risk="read",
        idempotent=True,
        timeout=30.0,
        family="process",
    ),
    TAIL_TOOL,
)
