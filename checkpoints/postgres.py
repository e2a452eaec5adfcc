"""The kasloop database on PostgreSQL: LangGraph's Postgres saver plus kasloop's own tables, in one database.

``PostgresDatabase`` implements ``kasloop.checkpoints.database.Database``, as
``SqliteDatabase`` (``checkpoints/sqlite.py``) does for SQLite; ``--db
postgresql://...`` selects it. kasloop's tables are declared natively for
PostgreSQL in ``checkpoints/schema.py`` and created once per version of that
DDL. The table modules' units of work run on one sync psycopg connection in
one worker thread (``PgConnection``); the saver (``KasloopPostgresSaver``,
``checkpoints/postgres_saver.py``) and the long-term memory store
(``KasloopPostgresStore``, ``checkpoints/postgres_store.py``) share an async
connection of their own.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.adapt import Loader
from psycopg.rows import dict_row

from kasloop.checkpoints.database import DeferredRows, IntegrityError, display_db, flushed
from kasloop.checkpoints.postgres_saver import KasloopPostgresSaver
from kasloop.checkpoints.postgres_store import KasloopPostgresStore
from kasloop.checkpoints.schema import POSTGRES_SCHEMA_VERSIONS, postgres_script
from kasloop.errors import CheckpointError

__all__ = [
    "KasloopPostgresSaver",
    "KasloopPostgresStore",
    "PgConnection",
    "PgRow",
    "PostgresDatabase",
    "advisory_key",
    "open_postgres_database",
]

T = TypeVar("T")

_SETUP_LOCK = 0x6B61_736C  # pg_advisory lock key: one process at a time creates tables (CREATE IF NOT EXISTS races)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit ``pg_advisory_lock`` key for a name (e.g. ``thread:t-1``)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@functools.lru_cache(maxsize=512)
def _pg_params(sql: str) -> str:
    """A statement's qmark ``?`` parameters bound as psycopg's ``%s`` (a literal ``%`` doubled): the one parameter
    style kasloop's statements use on both engines (``kasloop.checkpoints.database``). The SQL itself is unchanged."""
    return sql.replace("%", "%%").replace("?", "%s")


def _pg_param(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value  # SQLite stores booleans as integers; so do kasloop's tables


class PgRow(tuple):  # type: ignore[type-arg]
    """A row that reads like ``sqlite3.Row``: by position, by column name, ``keys()``."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    index = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


class _NumericLoader(Loader):
    """``numeric`` (what ``sum()`` of integers gives) as an int when whole, else a float, as SQLite returns it."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class PgConnection:
    """``kasloop.checkpoints.database.Connection`` over a sync psycopg connection: what a unit of work sees.

    Integrity errors are raised as ``IntegrityError`` (``sqlite3.IntegrityError``) so callers that catch a
    duplicate key keep one ``except`` for both engines. ``raw`` is the psycopg connection, for this engine's own
    statements (advisory locks, the schema).
    """

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor(row_factory=_row_factory)
        try:
            cur.execute(_pg_params(sql), [_pg_param(p) for p in params])
        except psycopg.IntegrityError as exc:
            raise IntegrityError(str(exc).splitlines()[0]) from exc
        return cur

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        """One statement for each parameter tuple (``rowcount``: the rows all of them changed)."""
        cur = self.raw.cursor(row_factory=_row_factory)
        try:
            cur.executemany(_pg_params(sql), [[_pg_param(p) for p in row] for row in params])
        except psycopg.IntegrityError as exc:
            raise IntegrityError(str(exc).splitlines()[0]) from exc
        return cur

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()


def _apply_schema(raw: psycopg.Connection[Any]) -> None:
    """Create kasloop's tables (``schema.postgres_script()``) once per database and version of the script, one
    process at a time; the caller commits.

    Once is not only faster: DDL locks tables even when it changes nothing (``CREATE INDEX IF NOT EXISTS``
    takes a SHARE lock on the table first, ``ALTER TABLE ... IF NOT EXISTS`` an exclusive one), and taking
    those locks while other sessions write several tables in one transaction deadlocks.
    """
    ddl = postgres_script()
    version = hashlib.sha256(ddl.encode()).hexdigest()[:32]
    if _applied(raw, version):
        return
    raw.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
    if _applied(raw, version):  # another process applied it while we waited (read committed: a fresh snapshot)
        return
    raw.execute(ddl.encode())
    raw.execute(POSTGRES_SCHEMA_VERSIONS)
    raw.execute(
        "INSERT INTO kasloop_schema (version, applied_at) VALUES (%s, extract(epoch FROM now())) ON CONFLICT DO NOTHING",
        (version,),
    )


def _applied(raw: psycopg.Connection[Any], version: str) -> bool:
    """Whether this version of the script is recorded (catalog and one-row reads: no lock on kasloop's tables)."""
    if raw.execute("SELECT to_regclass('kasloop_schema')").fetchone()[0] is None:  # type: ignore[index]
        return False
    return raw.execute("SELECT 1 FROM kasloop_schema WHERE version = %s", (version,)).fetchone() is not None


class PostgresDatabase:
    """An open kasloop database on PostgreSQL (``kasloop.checkpoints.database.Database``). Create it with
    ``open_database``.

    The table modules' units of work run on one psycopg connection in one
    worker thread, as on SQLite (one hop each, ``fn(conn)`` keeps its shape);
    the saver and the long-term memory store use an async connection of
    their own. Deferred rows (the event log's) are inserted with the next
    unit of work, and before the saver writes a checkpoint or writes.
    """

    path: Path | None = None
    """No file: the inbox's change signal and the file locks are SQLite-only."""

    def __init__(self, url: str, raw: psycopg.Connection[Any], aconn: psycopg.AsyncConnection[Any]) -> None:
        self.url = url
        self.raw = raw
        self.conn = PgConnection(raw)
        self.aconn = aconn
        self.saver = KasloopPostgresSaver(aconn)
        self.saver.before_write = self.flush
        self.deferred = DeferredRows()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kasloop-pg")
        self._locks: set[str] = set()

    async def setup(self) -> None:
        """The saver's migrations and kasloop's tables, one process at a time."""

        async def migrate() -> None:
            await self.saver.setup()
            await self.write(lambda conn: _apply_schema(conn.raw))

        await self._one_at_a_time(migrate)

    async def _one_at_a_time(self, setup: Callable[[], Awaitable[None]]) -> None:
        """Run ``setup`` (LangGraph's migrations, kasloop's DDL) holding the session advisory setup lock:
        ``CREATE ... IF NOT EXISTS`` run by two processes at once races."""
        await self.call(lambda conn: conn.raw.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,)))
        try:
            await setup()
        finally:
            await self.call(lambda conn: conn.raw.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,)))

    def _commit_rows(self, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        try:
            for sql, params in rows:
                self.conn.execute(sql, params)
            self.raw.commit()
        except BaseException:
            self.raw.rollback()
            raise

    def _unit(self, fn: Callable[[PgConnection], T], together: bool) -> T:
        """One unit of work in the worker thread. ``together``: the deferred rows go into ``fn``'s transaction
        (``write``); else they are committed first (``call``: a ``rollback()`` in ``fn`` must not take them).

        The rows are taken here, when the unit runs, not when it is queued: a unit cancelled before it runs
        leaves them for the next one.
        """
        rows = self.deferred.take()
        if rows and not together:
            self._commit_rows(rows)
            rows = []
        try:
            for sql, params in rows:
                self.conn.execute(sql, params)
            result = fn(self.conn)
            self.raw.commit()  # reads too: no transaction stays open between units of work
        except BaseException:
            self.raw.rollback()
            if rows:  # a failed unit of work does not take queued rows down with it
                self._commit_rows(rows)
            raise
        return result

    async def _run(self, fn: Callable[[PgConnection], T], *, together: bool) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._unit, fn, together)

    async def call(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn(connection)`` in the database thread in one hop, then commit (deferred rows committed first)."""
        return await self._run(fn, together=False)

    async def write(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn(connection)`` and commit, in one hop; on an error nothing of it is kept (rolled back)."""
        return await self._run(fn, together=True)

    def defer(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue an insert to be committed with the next unit of work (see ``Database.defer``)."""
        self.deferred.add(sql, params)

    async def flush(self) -> None:
        if self.deferred.rows:
            await self.write(lambda conn: None)

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return await self.write(lambda conn: conn.execute(sql, params).rowcount)

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[PgRow]:
        return await self.call(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> PgRow | None:
        return await self.call(lambda conn: conn.execute(sql, params).fetchone())

    async def try_lock(self, name: str) -> bool:
        """Take the session-level advisory lock ``name`` if no other session holds it (any machine);
        PostgreSQL drops it when this connection closes, even if the process dies."""
        if name in self._locks:
            return False
        key = advisory_key(name)
        if not await self.call(lambda conn: conn.raw.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]):
            return False
        self._locks.add(name)
        return True

    async def unlock(self, name: str) -> None:
        if name not in self._locks:
            return
        self._locks.discard(name)
        key = advisory_key(name)
        await self.call(lambda conn: conn.raw.execute("SELECT pg_advisory_unlock(%s)", (key,)))

    try_advisory_lock = try_lock  # the names ``Agent._thread_lock`` calls: the same lock
    advisory_unlock = unlock

    async def open_store(self) -> KasloopPostgresStore:
        """Long-term memory's store: LangGraph's Postgres store (migrated here) on this database's async connection."""
        store = KasloopPostgresStore(self.aconn)
        # The saver and the store share one connection, which runs one command at a time: one lock for both
        # (a checkpoint write in the background and a blackboard read in a node would otherwise collide).
        store.lock = self.saver.lock
        await self._one_at_a_time(store.setup)
        return store

    async def close(self) -> None:
        """Close both connections (``open_database`` flushes the deferred rows first); the locks go with them."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, self.raw.close)
        finally:
            self._worker.shutdown(wait=False)
            await self.aconn.close()


def _connect_error(url: str, exc: Exception) -> CheckpointError:
    shown = display_db(url)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CheckpointError(f"Cannot open the kasloop database `{shown}`: {first}. Check --db.")


@asynccontextmanager
async def open_postgres_database(url: str) -> AsyncIterator[PostgresDatabase]:
    """Open (and create the tables of) the kasloop database at a ``postgresql://`` URL."""
    loop = asyncio.get_running_loop()
    try:
        raw = await loop.run_in_executor(None, functools.partial(psycopg.connect, url, connect_timeout=30))
        raw.adapters.register_loader("numeric", _NumericLoader)
        aconn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=30
        )
    except psycopg.Error as exc:
        raise _connect_error(url, exc) from None
    db = PostgresDatabase(url, raw, aconn)
    try:
        try:
            await db.setup()
        except psycopg.Error as exc:
            raise CheckpointError(f"The kasloop database on PostgreSQL could not be set up: {exc}.") from None
        async with flushed(db, psycopg.Error):
            yield db
    finally:
        await db.close()
