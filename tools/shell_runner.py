"""Running one checked ``shell_run`` command: in the sandbox, in a session of its own, until none of it is left.

The policy (:mod:`kasloop.tools.shell_policy`) has decided that the command may run; this module runs
it and owns everything about the running process: what to start (bubblewrap around the program,
:func:`sandboxed_command`, shared with the process family), starting it in a new session with stdin
closed and the scrubbed environment, the record that lets a later start reap it if kasloop dies
(:data:`SANDBOX_RECORDS`), reading stdout and stderr head + tail, the timeout (SIGTERM to the whole
session, SIGKILL after ``kill_grace``), killing what is left of the session and rendering the result.
The behaviour is described in :mod:`kasloop.tools.shell`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from kasloop.tools.base import ToolContext, ToolFailure, ToolResult
from kasloop.tools.procfs import session_members, signal_quietly  # not psutil: it has no session id to find a session's members by
from kasloop.tools.sandbox import absent_protected, bwrap_argv, record_sandbox, remove_created, require_sandbox, sandbox_shells
from kasloop.tools.shell_policy import ShellPolicy, child_env

__all__ = ["SANDBOX_RECORDS", "STDERR_KEEP", "STDOUT_KEEP", "run_checked", "sandboxed_command"]

SANDBOX_RECORDS = "sandboxes"
"""Folder (in the tools home) of records of running ``shell_run`` sandboxes (see :func:`kasloop.tools.sandbox.reap_orphans`)."""
# Per-stream head/tail kept while reading: together they fit the 4,000-character output limit.
STDOUT_KEEP = (1400, 700)
STDERR_KEEP = (600, 400)
_READ_CHUNK = 65536


class _Capture:
    """Keeps the first ``head`` and last ``tail`` bytes of a stream and counts the rest."""

    def __init__(self, head: int, tail: int) -> None:
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        if b"\x00" in self.head or b"\x00" in self.tail:
            return f"[binary output, {self.total} bytes; not shown]"
        if self.dropped == 0:
            return (bytes(self.head) + bytes(self.tail)).decode(errors="replace")
        return f"{self.head.decode(errors='replace')}\n[... {self.dropped} bytes dropped while reading ...]\n{self.tail.decode(errors='replace')}"


async def _pump(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_READ_CHUNK):
        capture.feed(chunk)


def _signal_session(sid: int, sig: int, *, group: bool = True, sandboxed: bool = False) -> list[int]:
    """Send ``sig`` to every process of the session (and its process group); return who got it.

    The leader is a member (it is the command itself, or its sandbox). ``group=False`` once the
    leader has been reaped: its id might then name someone else's group. ``sandboxed`` and a
    signal other than SIGKILL: the sandbox's own processes are spared (see :func:`kasloop.tools.sandbox.sandbox_shells`).
    """
    spared = sandbox_shells(sid) if sandboxed and sig != signal.SIGKILL else set()
    if group and not spared:
        signal_quietly(sid, sig, group=True)
    members = session_members(sid)
    for pid in members:
        if pid not in spared:
            signal_quietly(pid, sig)
    return members


async def _kill_session(proc: asyncio.subprocess.Process, deadline: float = 2.0) -> list[int]:
    """SIGKILL the session until nothing of it runs; return survivors (normally [])."""
    end = time.monotonic() + deadline
    while True:
        members = _signal_session(proc.pid, signal.SIGKILL, group=proc.returncode is None)
        if not members or time.monotonic() > end:
            return members
        await asyncio.sleep(0.01)


def _close_transport(proc: asyncio.subprocess.Process) -> None:
    """Close the pipes now rather than when the transport is garbage-collected (maybe after the loop closed).

    asyncio exposes no public close for a ``Process``; ``_transport`` has been stable since Python 3.4.
    """
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


def _render(exit_code: int | None, out: _Capture, err: _Capture) -> str:
    head = f"exit code {exit_code}" if exit_code is not None else "no exit code (killed)"
    return f"{head}\n--- stdout ({out.total} bytes) ---\n{out.text()}\n--- stderr ({err.total} bytes) ---\n{err.text()}"


def sandboxed_command(argv: Sequence[str], executable: str, policy: ShellPolicy, ctx: ToolContext, cwd: Path) -> tuple[list[str], str]:
    """What to start for a checked command: bubblewrap around it (the default), or the program itself
    when a person set ``shell.sandbox = "none"``. Returns ``(argv, executable)``.

    Raises:
        ToolFailure: ``permanent``, naming the fix, when the sandbox is on and cannot run here.
    """
    name = os.path.basename(argv[0])
    if policy.sandbox == "none":
        return [name, *argv[1:]], executable
    bwrap = require_sandbox()
    command = bwrap_argv(
        bwrap, [name, *argv[1:]], workspace=ctx.workspace, cwd=cwd, protected=ctx.resources.protected, network=policy.network,
        search_path=policy.search_path,
    )
    return command, bwrap


async def run_checked(
    argv: list[str], executable: str, policy: ShellPolicy, ctx: ToolContext, cwd: Path, timeout: float, *, requested: float | None
) -> ToolResult:
    """Run a command :func:`~kasloop.tools.shell_policy.check_command` passed (``executable`` is what it
    returned) in ``cwd`` for at most ``timeout`` seconds; the call's result. ``requested`` is the
    ``timeout`` the model asked for (``None``: none), reported as capped when it exceeds ``timeout``.

    Raises:
        ToolFailure: ``permanent`` (the sandbox cannot run here), ``denied`` or ``bad_args`` (the program cannot start).
    """
    command, executable = sandboxed_command(argv, executable, policy, ctx, cwd)
    absent = absent_protected(ctx.resources.protected, ctx.workspace) if policy.sandbox != "none" else []
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, executable=executable,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=cwd, env=child_env(policy), start_new_session=True,
        )  # fmt: skip
    except PermissionError as exc:
        raise ToolFailure("denied", f"cannot execute `{argv[0]}`: {exc.strerror}") from None
    except OSError as exc:
        raise ToolFailure("bad_args", f"cannot start `{argv[0]}`: {exc.strerror or exc}") from None
    record = record_sandbox(ctx.resources.home / SANDBOX_RECORDS, proc.pid) if policy.sandbox != "none" else None
    try:
        return await _supervise(proc, argv, requested, policy, timeout, started, absent)
    finally:
        if record is not None:
            record.unlink(missing_ok=True)


async def _supervise(
    proc: asyncio.subprocess.Process, argv: list[str], requested: float | None, policy: ShellPolicy, timeout: float, started: float, absent: list[Path]
) -> ToolResult:
    """Read the output, enforce the timeout, kill what is left; the call's result."""
    out, err = _Capture(*STDOUT_KEEP), _Capture(*STDERR_KEEP)
    tasks = {asyncio.create_task(_pump(proc.stdout, out)), asyncio.create_task(_pump(proc.stderr, err)), asyncio.create_task(proc.wait())}
    killed: str | None = None
    survivors: list[int] = []
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            killed = "SIGTERM"
            _signal_session(proc.pid, signal.SIGTERM, group=proc.returncode is None, sandboxed=policy.sandbox != "none")
            _, pending = await asyncio.wait(tasks, timeout=policy.kill_grace)
            if pending or session_members(proc.pid):
                killed = "SIGKILL"
        survivors = await _kill_session(proc)  # leftovers of a normal exit too
        _, pending = await asyncio.wait(tasks, timeout=1.0)
        if pending:  # a pipe still held by a process that left the session (setsid): stop listening
            for task in pending:
                task.cancel()
            _close_transport(proc)
    except BaseException:
        _signal_session(proc.pid, signal.SIGKILL, group=proc.returncode is None)
        for task in tasks:
            task.cancel()
        _close_transport(proc)
        raise
    exit_code = proc.returncode
    if policy.sandbox != "none" and exit_code is not None and 128 < exit_code <= 192:
        exit_code = 128 - exit_code  # bubblewrap exits 128+N when the program died of signal N
    metadata = {
        "argv": argv,
        "exit_code": exit_code,
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "stdout_dropped": out.dropped,
        "stderr_dropped": err.dropped,
        "seconds": round(time.monotonic() - started, 3),
        "timeout": timeout,
    }
    if requested is not None and requested > timeout:
        metadata["timeout_capped"] = True
    if survivors:
        metadata["survivors"] = survivors
    removed = remove_created(absent)
    if removed:
        metadata["removed_protected"] = [str(p) for p in removed]
        names = ", ".join(p.name for p in removed)
        return ToolResult(
            ok=False, error_kind="denied", metadata=metadata,
            output=f"Error: `{argv[0]}` created {names}, which is kasloop's own state; it was removed. Write your files elsewhere.\n" + _render(exit_code, out, err),
        )
    if killed is not None:
        metadata["killed"] = killed
        text = f"Error: `{argv[0]}` timed out after {timeout:g} s; its processes were stopped ({killed}).\n" + _render(None, out, err)
        return ToolResult(ok=False, output=text, error_kind="timeout", metadata=metadata)
    return ToolResult(ok=True, output=_render(exit_code, out, err), metadata=metadata)
