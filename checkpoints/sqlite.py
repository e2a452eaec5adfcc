"""The kasloop database: LangGraph's async SQLite saver plus kasloop's own tables, in one file.

One aiosqlite connection serves the saver, the act ledger, the event log,
the approvals and the thread registry, so writes from one process never
fight each other; WAL and a busy timeout let other processes (``kasloop
approve`` while a daemon runs) share the file. The saver is ``KasloopSaver``
(``checkpoints/saver.py``): LangGraph's SQLite saver with one thread hop per
operation instead of three or four. Every unit of work is one hop to the
connection's thread; the event log's inserts are deferred to the next one.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from kasloop.checkpoints.saver import KasloopSaver, in_worker, write_in_worker
from kasloop.errors import CheckpointError

__all__ = ["Database", "display_db", "flushed", "is_postgres_url", "lock_base", "open_database", "sqlite_path"]

BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")

_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS kasloop_threads (
    thread_id TEXT PRIMARY KEY,
    goal TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kasloop_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL,
    ts REAL NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kasloop_events_thread ON kasloop_events(thread_id, id);
CREATE TRIGGER IF NOT EXISTS kasloop_events_no_update BEFORE UPDATE ON kasloop_events
BEGIN SELECT RAISE(ABORT, 'the kasloop event log is append-only'); END;
CREATE TABLE IF NOT EXISTS kasloop_ledger (
    key TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arg_hash TEXT NOT NULL,
    idempotent INTEGER NOT NULL,
    intent_at REAL NOT NULL,
    result TEXT,
    result_at REAL
);
CREATE INDEX IF NOT EXISTS kasloop_ledger_thread ON kasloop_ledger(thread_id);
CREATE TABLE IF NOT EXISTS kasloop_approvals (
    approval_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    tool TEXT NOT NULL,
    args TEXT NOT NULL,
    risk TEXT NOT NULL,
    reason TEXT NOT NULL,
    arg_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    decided_at REAL,
    decided_by TEXT,
    channel TEXT,
    path TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS kasloop_approvals_thread ON kasloop_approvals(thread_id, status);
CREATE TABLE IF NOT EXISTS kasloop_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at REAL NOT NULL,
    taken_at REAL
);
CREATE INDEX IF NOT EXISTS kasloop_inbox_pending ON kasloop_inbox(thread_id, taken_at, id);
CREATE TABLE IF NOT EXISTS kasloop_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kasloop_announcements (
    approval_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    ref TEXT NOT NULL,
    code TEXT NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (approval_id, channel)
);
CREATE TABLE IF NOT EXISTS kasloop_spend (
    day TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    model_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, thread_id)
);
CREATE TABLE IF NOT EXISTS kasloop_daemon (
    name TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    next_wake_at REAL,
    cycles INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    last_error TEXT,
    stopped_at REAL
);
"""


_ADDED_COLUMNS = (("kasloop_approvals", "path", "TEXT NOT NULL DEFAULT ''"),)
"""(table, column, declaration) added after the first release of a table."""


def is_postgres_url(db: object) -> bool:
    """Whether ``db`` names a PostgreSQL database (``checkpoints/postgres.py``) rather than a SQLite file."""
    return str(db).startswith(("postgresql://", "postgres://"))


def display_db(db: str | Path) -> str:
    """``db`` as shown in messages: a URL's password is never printed."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", str(db))


def lock_base(db: str | Path, home: Path) -> Path:
    """The file next to which per-database lock files go (``NAME.locks/``, ``NAME.daemon.lock``).

    A SQLite database is a file: its own path. A Postgres database has none: a
    name under ``home`` derived from the URL, so every process on this machine
    using that database takes the same locks.
    """
    if is_postgres_url(db):
        return home / f"postgres-{hashlib.sha256(str(db).encode()).hexdigest()[:16]}.db"
    return Path(db)


def sqlite_path(db: str | Path) -> Path:
    """Accept a path or a ``sqlite:///path`` URL."""
    text = str(db)
    if text.startswith("sqlite:///"):
        return Path(text.removeprefix("sqlite:///"))
    if "://" in text:
        raise CheckpointError(
            f"Database URL `{text}` is not supported here; use a file path, sqlite:///PATH or postgresql://..."
        )
    return Path(text)


class Database:
    """An open kasloop database. Create it with ``open_database``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.saver = KasloopSaver(conn)
        self.deferred = self.saver.deferred
        """Inserts (the event log's) that go with the next unit of work of this connection: see ``defer``."""

    async def setup(self) -> None:
        await self.saver.setup()
        await self.conn.executescript(_SCHEMA)
        await self._add_missing_columns()
        await self.conn.commit()

    async def _add_missing_columns(self) -> None:
        """Columns added since a database was created (``CREATE TABLE IF NOT EXISTS`` keeps old tables as they were)."""
        for table, column, decl in _ADDED_COLUMNS:
            async with self.conn.execute(f"PRAGMA table_info({table})") as cursor:
                present = {row[1] for row in await cursor.fetchall()}
            if column not in present:
                await self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection's worker thread in one hop.

        aiosqlite's public API costs a thread hop per execute, fetch, cursor
        close and commit; the loop writes a few rows per iteration, so kasloop
        runs each unit of work (statement + commit, or a read) as one call.
        ``fn`` must commit what it writes (or use ``write``). Deferred rows
        are committed first, so a read sees them.
        """
        return await in_worker(self.conn, fn, self.deferred)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` and commit, in one hop; on an error nothing of it is kept (rolled back)."""
        return await write_in_worker(self.conn, fn, self.deferred)

    def defer(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue an insert to be committed with the next unit of work (any read or write, the saver's too).

        For rows that must not cost a hop and a commit of their own but need
        no commit at this very moment: the event log's, whose rows then
        commit together with the node's writes. ``flush`` (and closing the
        database) commits what is queued.
        """
        self.deferred.add(sql, params)

    async def flush(self) -> None:
        """Commit the deferred rows now (no hop when there are none)."""
        if self.deferred.rows:
            await self.write(lambda conn: None)

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one write and commit it; returns the number of changed rows."""
        return await self.write(lambda conn: conn.execute(sql, params).rowcount)

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return await self.call(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        return await self.call(lambda conn: conn.execute(sql, params).fetchone())


@asynccontextmanager
async def flushed(db: T, errors: type[Exception]) -> AsyncIterator[T]:
    """Yield an open database, then commit its deferred rows (the event log's). If the block fails they are
    committed best effort (``errors`` of the engine suppressed): the error in flight is what matters."""
    try:
        yield db
    except BaseException:
        with suppress(errors):
            await db.flush()  # type: ignore[attr-defined]
        raise
    await db.flush()  # type: ignore[attr-defined]


@asynccontextmanager
async def open_database(path: str | Path) -> AsyncIterator[Database]:
    """Open (and create if needed) the kasloop database at ``path`` (a file, ``sqlite:///PATH``, or a
    ``postgresql://`` URL: then the database is a ``PgDatabase`` with the same interface)."""
    if is_postgres_url(path):
        from kasloop.checkpoints.postgres import open_pg_database  # psycopg is imported only for Postgres

        async with open_pg_database(str(path)) as pg:
            yield pg  # type: ignore[misc]
        return
    file = sqlite_path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(file), timeout=BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as exc:
        raise CheckpointError(f"Cannot open the kasloop database `{file}`: {exc}. Check --home / --db.") from None
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db = Database(conn, file)
        try:
            await db.setup()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"`{file}` is not a usable kasloop database: {exc}.") from None
        async with flushed(db, sqlite3.Error):
            yield db
    finally:
        await conn.close()
