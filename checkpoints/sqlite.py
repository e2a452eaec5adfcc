"""The kasloop database on SQLite: LangGraph's saver plus kasloop's own tables, in one file.

``SqliteDatabase`` implements ``kasloop.checkpoints.database.Database``, as
``PostgresDatabase`` (``checkpoints/postgres.py``) does for PostgreSQL. One
aiosqlite connection serves the saver, the act ledger, the event log, the
approvals and the thread registry, so writes from one process never fight
each other; WAL and a busy timeout let other processes (``kasloop approve``
while a daemon runs) share the file. The saver is ``KasloopSaver``
(``checkpoints/saver.py``): LangGraph's SQLite saver with one thread hop per
operation instead of three or four. Every unit of work is one hop to the
connection's thread; the event log's inserts are deferred to the next one.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import aiosqlite

from kasloop.checkpoints.database import display_db, flushed, is_postgres_url, lock_base
from kasloop.checkpoints.saver import KasloopSaver, in_worker, write_in_worker
from kasloop.checkpoints.schema import TABLES, sqlite_script
from kasloop.checkpoints.store import KasloopStore
from kasloop.errors import CheckpointError
from kasloop.support.locks import try_lock

# display_db, flushed, is_postgres_url and lock_base live in ``database.py`` (both engines use them); they stay
# importable from here for the modules that imported them from this one.
__all__ = [
    "BUSY_TIMEOUT_MS",
    "Database",
    "SqliteDatabase",
    "display_db",
    "flushed",
    "is_postgres_url",
    "lock_base",
    "open_sqlite_database",
    "sqlite_path",
]

BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


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


class SqliteDatabase:
    """An open kasloop database in a SQLite file (``kasloop.checkpoints.database.Database``).

    Create it with ``open_database``; ``conn`` is the aiosqlite connection every unit of work runs on.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.saver = KasloopSaver(conn)
        self.deferred = self.saver.deferred
        """Inserts (the event log's) that go with the next unit of work of this connection: see ``defer``."""
        self._locks: dict[str, IO[str] | None] = {}
        """Locks this database holds (``try_lock``): the open lock file, None for an in-memory database."""

    async def setup(self) -> None:
        """LangGraph's saver tables and every kasloop table (``kasloop.checkpoints.schema``), WAL on."""
        await self.saver.setup()
        await self.conn.executescript(sqlite_script())
        await self._add_missing_columns()
        await self.conn.commit()

    async def _add_missing_columns(self) -> None:
        """Columns added since a database was created (``CREATE TABLE IF NOT EXISTS`` keeps old tables as they were)."""
        for table in TABLES:
            if not table.added:
                continue
            async with self.conn.execute(f"PRAGMA table_info({table.name})") as cursor:
                present = {row[1] for row in await cursor.fetchall()}
            for column in table.added:
                if column.name not in present:
                    await self.conn.execute(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.sqlite}")

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection's worker thread in one hop (see ``Database.call``).

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
        """Queue an insert to be committed with the next unit of work (see ``Database.defer``)."""
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

    async def try_lock(self, name: str) -> bool:
        """Take the lock ``name``: an exclusive ``flock`` on ``NAME.locks/<hash>.lock`` next to the file, which the
        kernel drops when this process dies. In-memory (``:memory:``), the lock is this object's alone."""
        if name in self._locks:
            return False
        if self.path.name == ":memory:":
            self._locks[name] = None
            return True
        digest = hashlib.sha256(name.encode()).hexdigest()[:24]
        handle = try_lock(self.path.with_name(self.path.name + ".locks") / f"{digest}.lock")
        if handle is None:
            return False
        self._locks[name] = handle
        return True

    async def unlock(self, name: str) -> None:
        handle = self._locks.pop(name, None)
        if handle is not None:
            handle.close()

    async def open_store(self) -> KasloopStore:
        """Long-term memory's store: LangGraph's SQLite store on this connection, with an FTS5 keyword index."""
        return await KasloopStore.open(self)

    async def close(self) -> None:
        """Release the locks and close the connection (``open_database`` flushes the deferred rows first)."""
        for name in list(self._locks):
            await self.unlock(name)
        await self.conn.close()


Database = SqliteDatabase
"""The name the table modules' callers imported before the engines shared a protocol; new code annotates with
``kasloop.checkpoints.database.Database`` (either engine)."""


@asynccontextmanager
async def open_sqlite_database(path: str | Path) -> AsyncIterator[SqliteDatabase]:
    """Open (and create if needed) the kasloop database in the SQLite file ``path`` (or ``sqlite:///PATH``)."""
    file = sqlite_path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(file), timeout=BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as exc:
        raise CheckpointError(f"Cannot open the kasloop database `{file}`: {exc}. Check --home / --db.") from None
    db = SqliteDatabase(conn, file)
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            await db.setup()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"`{file}` is not a usable kasloop database: {exc}.") from None
        async with flushed(db, sqlite3.Error):
            yield db
    finally:
        await db.close()

