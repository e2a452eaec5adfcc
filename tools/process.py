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
import secrets
import time
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field

from kasloop.checkpoints.processes import ProcessConflict, ProcessRecord, ProcessStoreProtocol
from kasloop.tools.base import DEFAULT_OUTPUT_LIMIT, Tool, ToolContext, ToolFailure, ToolResult, ToolSettings
from kasloop.tools.files import resolve_in_workspace
from kasloop.tools.process_control import (
    KILL_WAIT,
    RELAY_PATH,
    SPAWN_TIMEOUT,
    _kill_untracked,
    _reap_relays,
    _spawn,
    stop_record,
    stop_thread_processes,
)
from kasloop.tools.process_records import (
    EXIT_STATUS_WAIT,
    _describe,
    _log_size,
    _metadata,
    _owned,
    _read_state,
    _refresh,
    _status_word,
    _store,
    start_ticks,
    tail_log,
)
from kasloop.tools.shell_policy import ShellPolicy, check_command, child_env, split_command
from kasloop.tools.shell_runner import sandboxed_command

# The family is two modules besides this one, each with one job: what kasloop knows about a process (the
# store, /proc checks, exit status, the log) in process_records, starting relays and signalling processes in
# process_control. This module keeps the family's description (above), its settings, the tools and their
# arguments, and re-exports the names importers use.
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

START_LOCK_KEY = "process_start_lock"
LIST_LIMIT = 50


class ProcessSettings(ToolSettings):
    """``[tool_settings.process]`` (see the module docstring); read with ``ProcessSettings.from_context(ctx)``."""

    family: ClassVar[str] = "process"

    max_running: int = Field(default=8, ge=1, le=1000, description="Processes of one thread running at once.")
    kill_grace: float = Field(default=5.0, gt=0, le=30, description="Seconds between SIGTERM and SIGKILL on stop.")
    log_limit_bytes: int = Field(default=1 << 20, ge=4096, le=1 << 30, description="Disk kept per process log, bytes.")
    max_lifetime: float | None = Field(default=None, gt=0, description="Seconds a process may run before it is stopped; None: no limit.")


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
    text = f"started {record.id}: {' '.join(argv)}\nUse process_status, process_tail or process_stop with id {record.id}."
    return ToolResult(ok=True, output=text, metadata=_metadata(record, log_path=record.log_path))


async def _new_lock() -> asyncio.Lock:
    return asyncio.Lock()


def _reused(record: ProcessRecord) -> ToolResult:
    text = f"already started by this call (retry): {_describe(record)}"
    return ToolResult(ok=True, output=text, metadata=_metadata(record, reused=True, log_path=record.log_path))


# --------------------------------------------------------------------------- process_stop


class ProcessIdArgs(BaseModel):
    id: str = Field(max_length=64, description="Process id returned by process_start (like p-1a2b3c), not a PID.")


async def _stop(args: ProcessIdArgs, ctx: ToolContext) -> ToolResult:
    settings = ProcessSettings.from_context(ctx)
    store = await _store(ctx)
    return await stop_record(store, await _owned(store, ctx, args.id), settings.kill_grace)


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
    processes = [{"id": r.id, "status": _status_word(r), "exit_code": r.exit_code} for r in records]
    return ToolResult(ok=True, output=text, metadata={"processes": processes, "observed": processes})


class ProcessTailArgs(ProcessIdArgs):
    lines: int = Field(default=50, ge=1, le=500, description="How many of the last log lines to show.")


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
