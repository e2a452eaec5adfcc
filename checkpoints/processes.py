"""Background processes started by the process family, kept so a later run can find them again.

A row is written when ``process_start`` has started a process and says who
started it (``thread_id``), which process it is (``pid`` plus ``start_ticks``,
the start time in clock ticks from ``/proc/PID/stat``, so a reused PID is never
mistaken for it), what it runs and where its log is. ``stopped_at`` and
``exit_code`` are filled in once the process is seen to have ended.

Two stores share one interface: :class:`ProcessStore` over the kasloop
database (table ``kasloop_processes``, declared in ``checkpoints/schema.py``) and
:class:`MemoryProcessStore` for a graph without a database (it forgets
everything when the agent's tool resources go away).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from kasloop.checkpoints.database import Connection, Database, IntegrityError, Row

__all__ = ["MemoryProcessStore", "ProcessConflict", "ProcessRecord", "ProcessStore", "ProcessStoreProtocol"]

@dataclass(frozen=True, kw_only=True)
class ProcessRecord:
    """One process started by ``process_start``."""

    id: str
    thread_id: str
    pid: int
    start_ticks: int | None
    """Field 22 of ``/proc/PID/stat`` when it started; ``None`` if it could not be read."""
    command: list[str]
    log_path: str
    started_at: float
    idempotency_key: str | None = None
    stopped_at: float | None = None
    """When the process was seen to have ended (``None`` while it may be running)."""
    exit_code: int | None = None
    """``Popen.returncode`` style: negative = killed by that signal; ``None`` = unknown."""
    name: str | None = None


class ProcessConflict(Exception):
    """The id or the (thread, idempotency key) of a new record is already taken."""


class ProcessStoreProtocol(Protocol):
    async def add(self, record: ProcessRecord) -> None: ...
    async def get(self, process_id: str) -> ProcessRecord | None: ...
    async def find_by_key(self, thread_id: str, key: str) -> ProcessRecord | None: ...
    async def list(self, thread_id: str, *, limit: int = 50, active_only: bool = False) -> list[ProcessRecord]: ...
    async def mark_ended(self, process_id: str, stopped_at: float, exit_code: int | None) -> None: ...
    async def threads_like(self, thread_id: str) -> list[str]: ...


def _record(row: Row) -> ProcessRecord:
    return ProcessRecord(
        id=row["id"], thread_id=row["thread_id"], pid=row["pid"], start_ticks=row["start_ticks"],
        command=json.loads(row["command"]), log_path=row["log_path"], started_at=row["started_at"],
        idempotency_key=row["idempotency_key"], stopped_at=row["stopped_at"], exit_code=row["exit_code"],
        name=row["name"],
    )  # fmt: skip


class ProcessStore:
    """Process rows in the kasloop database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, record: ProcessRecord) -> None:
        """Insert ``record``.

        Raises:
            ProcessConflict: the id, or the thread's idempotency key, is already recorded.
        """
        values: tuple[Any, ...] = (
            record.id, record.thread_id, record.pid, record.start_ticks, json.dumps(record.command), record.log_path,
            record.started_at, record.idempotency_key or None, record.stopped_at, record.exit_code, record.name,
        )  # fmt: skip

        def write(conn: Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO kasloop_processes (id, thread_id, pid, start_ticks, command, log_path, started_at,"
                    " idempotency_key, stopped_at, exit_code, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                conn.commit()
            except IntegrityError as exc:
                conn.rollback()
                raise ProcessConflict(str(exc)) from None

        await self.db.call(write)

    async def get(self, process_id: str) -> ProcessRecord | None:
        row = await self.db.fetchone("SELECT * FROM kasloop_processes WHERE id = ?", (process_id,))
        return None if row is None else _record(row)

    async def find_by_key(self, thread_id: str, key: str) -> ProcessRecord | None:
        row = await self.db.fetchone(
            "SELECT * FROM kasloop_processes WHERE thread_id = ? AND idempotency_key = ?", (thread_id, key)
        )
        return None if row is None else _record(row)

    async def list(self, thread_id: str, *, limit: int = 50, active_only: bool = False) -> list[ProcessRecord]:
        """The thread's processes, newest first (``active_only``: not yet seen to have ended)."""
        where = " AND stopped_at IS NULL" if active_only else ""
        rows = await self.db.fetchall(
            f"SELECT * FROM kasloop_processes WHERE thread_id = ?{where} ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (thread_id, limit),
        )
        return [_record(r) for r in rows]

    async def threads_like(self, thread_id: str) -> list[str]:
        """``thread_id`` and its specialists' threads (``<thread_id>/...``) that have recorded processes."""
        prefix = thread_id + "/"
        rows = await self.db.fetchall(
            "SELECT DISTINCT thread_id FROM kasloop_processes WHERE thread_id = ? OR substr(thread_id, 1, ?) = ?",
            (thread_id, len(prefix), prefix),
        )
        return [row[0] for row in rows]

    async def mark_ended(self, process_id: str, stopped_at: float, exit_code: int | None) -> None:
        """Record the end; a known exit code is never replaced by an unknown one."""
        await self.db.execute(
            "UPDATE kasloop_processes SET stopped_at = COALESCE(stopped_at, ?), exit_code = COALESCE(?, exit_code) WHERE id = ?",
            (stopped_at, exit_code, process_id),
        )


class MemoryProcessStore:
    """The same interface in memory, for agents without a database (lost when the resources close)."""

    def __init__(self) -> None:
        self._rows: dict[str, ProcessRecord] = {}

    async def add(self, record: ProcessRecord) -> None:
        key = record.idempotency_key or None
        if record.id in self._rows:
            raise ProcessConflict(f"process id {record.id} is taken")
        if key is not None and await self.find_by_key(record.thread_id, key) is not None:
            raise ProcessConflict("idempotency key already recorded")
        self._rows[record.id] = replace(record, idempotency_key=key)

    async def get(self, process_id: str) -> ProcessRecord | None:
        return self._rows.get(process_id)

    async def find_by_key(self, thread_id: str, key: str) -> ProcessRecord | None:
        return next((r for r in self._rows.values() if r.thread_id == thread_id and r.idempotency_key == key), None)

    async def list(self, thread_id: str, *, limit: int = 50, active_only: bool = False) -> list[ProcessRecord]:
        rows = [r for r in self._rows.values() if r.thread_id == thread_id and not (active_only and r.stopped_at is not None)]
        return list(reversed(rows))[:limit]  # insertion order = start order

    async def threads_like(self, thread_id: str) -> list[str]:
        prefix = thread_id + "/"
        return sorted({r.thread_id for r in self._rows.values() if r.thread_id == thread_id or r.thread_id.startswith(prefix)})

    async def mark_ended(self, process_id: str, stopped_at: float, exit_code: int | None) -> None:
        row = self._rows.get(process_id)
        if row is not None:
            self._rows[process_id] = replace(
                row,
                stopped_at=row.stopped_at if row.stopped_at is not None else stopped_at,
                exit_code=exit_code if exit_code is not None else row.exit_code,
            )
