"""The daemon: keep every thread of a kasloop home moving, for days, one cycle at a time.

A cycle visits each thread that has work: one that is running (a crash or a
stop left it mid-way), one whose approvals were decided without being
resumed or expired unanswered, and one with unread inbox messages (``kasloop tell``, Telegram,
webhooks). Threads waiting for a human, paused by a budget, or finished with
nothing new are skipped. Between cycles the daemon sleeps ``interval``
seconds with jitter, backing off exponentially (capped) after cycles that
failed, so a broken model endpoint is not hammered.

One daemon per database: an exclusive ``flock`` on ``<db>.daemon.lock``
refuses a second one with a clear message (the lock dies with the process,
so a ``kill -9`` never leaves a stale lock). A heartbeat row
(``kasloop_daemon``) says when it last cycled and when it wakes next;
``kasloop status`` shows it. SIGTERM or SIGINT stops it after the current
node: that node's writes are saved and the next cycle (or ``kasloop
resume``) continues from there; the daemon exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kasloop.support.backoff import backoff_delay
from kasloop.runtime.polling import poll_approvals, poll_inbox
from kasloop.checkpoints import ApprovalStore, Inbox, ThreadStore, open_database
from kasloop.checkpoints.database import Database, display_db, is_postgres_url, lock_base
from kasloop.errors import KasloopError, ThreadBusy, UsageError
from kasloop.support.locks import try_lock
from kasloop.runtime.sessions import Sessions
from kasloop.tools.base import ToolFailure

__all__ = ["Daemon", "daemon_status"]

DAEMON_ROW = "daemon"
IDLE_STATUSES = ("done", "escalated", "failed", "paused_budget")


@dataclass(frozen=True)
class CycleReport:
    visited: list[str]
    errors: list[str]


def _lock(sessions: Sessions) -> IO[str]:
    """Hold ``<db>.daemon.lock`` for the life of this process (it records our pid), or say who holds it."""
    base = lock_base(sessions.db_path, sessions.home)
    path = base.with_name(base.name + ".daemon.lock")
    handle = try_lock(path)
    if handle is None:
        holder = path.read_text().strip() or "?"
        raise UsageError(
            f"Another kasloop daemon (pid {holder}) is already running on `{display_db(sessions.db_path)}`; stop it first (kill -TERM {holder})."
        )
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


async def _threads_with_work(db: Database, only: list[str] | None) -> list[str]:
    inbox, approvals = Inbox(db), ApprovalStore(db)
    chosen: list[str] = []
    for record in await ThreadStore(db).all():
        thread = record["thread"]
        if only is not None and thread not in only:
            continue
        status = record["status"]
        if status == "waiting_approval":
            # Waiting for a human: nothing to do (inbox messages wait too) unless the requests were
            # decided with --no-resume or expired, which resume applies.
            if not await approvals.pending(thread) or await approvals.expired(thread, time.time()):
                chosen.append(thread)
        elif status == "paused_budget":
            # Paused until a person raises the limit; go on when one did without resuming it (a signed
            # webhook callback, `approve --no-resume`, `kasloop budget` answering the request).
            if await approvals.budget_granted(thread):
                chosen.append(thread)
        elif status not in IDLE_STATUSES or await inbox.pending(thread):
            chosen.append(thread)
    return chosen


async def _register(db: Database) -> None:
    """A fresh heartbeat row for this daemon (replacing an earlier daemon's)."""
    now = time.time()
    await db.execute(
        "INSERT INTO kasloop_daemon (name, pid, started_at, heartbeat_at, next_wake_at, cycles, errors, last_error, stopped_at)"
        " VALUES (?, ?, ?, ?, NULL, 0, 0, NULL, NULL) ON CONFLICT (name) DO UPDATE SET pid = excluded.pid,"
        " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, next_wake_at = NULL, cycles = 0, errors = 0,"
        " last_error = NULL, stopped_at = NULL",
        (DAEMON_ROW, os.getpid(), now, now),
    )


async def _beat(db: Database, **fields: Any) -> None:
    """Update the heartbeat and ``fields`` of this daemon's row."""
    sets = "".join(f", {key} = ?" for key in fields)
    await db.execute(f"UPDATE kasloop_daemon SET heartbeat_at = ?{sets} WHERE name = ?", (time.time(), *fields.values(), DAEMON_ROW))


async def daemon_status(db_path: str | Path) -> dict[str, Any] | None:
    """The heartbeat row (pid, started_at, heartbeat_at, next_wake_at, cycles, errors, last_error, stopped_at), or None."""
    if not is_postgres_url(db_path) and not Path(db_path).exists():
        return None
    async with open_database(db_path) as db:
        row = await db.fetchone("SELECT * FROM kasloop_daemon WHERE name = ?", (DAEMON_ROW,))
    return None if row is None else {k: row[k] for k in row.keys() if k != "name"}


class Daemon:
    """Drive the threads of a home's database until stopped.

    Args:
        sessions: the home (database, config, extra tools) whose threads to serve: ``Agent(...).sessions``.
        threads: only these thread ids (default: every thread).
        interval: seconds between cycles.
        jitter: fraction of ``interval`` added or removed at random, so many daemons do not wake together.
        max_backoff: cap, in seconds, of the sleep after failing cycles (doubling from ``interval``).
    """

    def __init__(
        self, sessions: Sessions, *, threads: list[str] | None = None, interval: float = 30.0, jitter: float = 0.1, max_backoff: float = 600.0
    ) -> None:
        if interval <= 0:
            raise UsageError(f"--interval must be > 0 seconds, got {interval:g}.")
        self.sessions = sessions
        self.threads = threads
        self.interval = interval
        self.jitter = jitter
        self.max_backoff = max_backoff
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Finish the current node, then exit (what SIGTERM and SIGINT do)."""
        self.sessions.stop_requested = True
        self._stop.set()

    async def cycle(self) -> CycleReport:
        """Take decisions from the approval channels, then visit every thread with work once."""
        errors: list[str] = []
        for name, poll in (("approval channels", poll_approvals), ("inbox feeds", poll_inbox)):
            try:
                await poll(self.sessions)
            except (KasloopError, ToolFailure) as exc:
                errors.append(f"{name}: {exc}")
        async with open_database(self.sessions.db_path) as db:
            todo = await _threads_with_work(db, self.threads)
        for thread in todo:
            if self._stop.is_set():
                break
            try:
                await self.sessions.resume(thread)
            except ThreadBusy:
                continue  # a `kasloop run` or `resume` is driving it now; it is not a failure
            except KasloopError as exc:
                errors.append(f"{thread}: {exc}")
        return CycleReport(visited=todo, errors=errors)

    def _delay(self, failures: int) -> float:
        """``interval`` after a good cycle; after failing ones doubling from it up to ``max_backoff``; spread by ``jitter``."""
        return backoff_delay(failures, base=self.interval, cap=self.max_backoff if failures else None, jitter=self.jitter)

    async def run(self, *, once: bool = False, on_start: Callable[[], None] | None = None) -> int:
        """Cycle until stopped (or once); returns the exit code (0). ``on_start`` runs once the lock is held."""
        lock = _lock(self.sessions)
        if on_start is not None:
            on_start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        try:
            async with open_database(self.sessions.db_path) as db:
                await _register(db)
            failures = cycles = errors = 0
            while not self._stop.is_set():
                report = await self.cycle()
                cycles += 1
                errors += len(report.errors)
                failures = failures + 1 if report.errors else 0
                delay = self._delay(failures)
                async with open_database(self.sessions.db_path) as db:
                    await _beat(
                        db, cycles=cycles, errors=errors, next_wake_at=None if once else time.time() + delay,
                        last_error=report.errors[-1][:500] if report.errors else None,
                    )
                if once:
                    break
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
            async with open_database(self.sessions.db_path) as db:
                await _beat(db, next_wake_at=None, stopped_at=time.time())
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            lock.close()
