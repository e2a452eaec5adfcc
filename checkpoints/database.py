"""The interface both kasloop database engines implement, and the few pieces they share.

kasloop keeps its tables next to LangGraph's checkpoints, in one SQLite file
(``kasloop.checkpoints.sqlite``, the embedded default) or one PostgreSQL
database (``kasloop.checkpoints.postgres``, ``--db postgresql://...``). The
table modules (threads, events, ledger, approvals, inbox, ...), the tools and
the channels take a :class:`Database` and never ask which engine is behind
it; each engine implements the protocol in its own module and depends on this
one, never on the other engine (httpx's ``BaseTransport``: transports import
the interface, not each other). ``kasloop.checkpoints.backends.open_database``
picks the engine from the URL.

**A unit of work is a function of a connection.** ``call(fn)`` / ``write(fn)``
run ``fn(connection)`` in the engine's one database thread in one hop: the
loop writes a few rows per iteration, and a hop per statement (aiosqlite's
API, an async round trip per psycopg call) was most of its time. ``fn`` sees a
:class:`Connection`, the part of ``sqlite3.Connection`` kasloop uses.

**Statements are written once**, in the SQL both engines speak:

* parameters are sqlite3's qmark ``?``; the PostgreSQL connection binds them
  as psycopg's ``%s`` (a literal ``%`` is doubled; kasloop's statements hold
  no literal ``?``). Booleans are stored as 0/1 integers on both.
* insert-or-ignore is ``INSERT ... ON CONFLICT (key) DO NOTHING`` and upsert
  ``... ON CONFLICT (key) DO UPDATE SET col = excluded.col`` (SQLite 3.24+),
  never SQLite's ``INSERT OR IGNORE`` / ``INSERT OR REPLACE``; the new id of a
  row comes from ``RETURNING id`` (SQLite 3.35+), never ``lastrowid``; a
  subquery in ``FROM`` has an alias; a broken constraint raises
  :data:`IntegrityError` on both.

What does differ is written natively in each engine's module: the DDL
(``kasloop.checkpoints.schema``, both dialects side by side), locks, the
checkpoint saver and the long-term memory store.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.store.base import BaseStore

__all__ = [
    "Connection",
    "Cursor",
    "Database",
    "DeferredRows",
    "IntegrityError",
    "Row",
    "display_db",
    "flushed",
    "is_postgres_url",
    "lock_base",
]

T = TypeVar("T")
D = TypeVar("D", bound="Database")

IntegrityError = sqlite3.IntegrityError
"""Raised by both engines when a statement breaks a constraint (a duplicate key): callers keep one ``except``."""


class Row(Protocol):
    """A result row: by position or by column name (``sqlite3.Row``, ``PgRow``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """What a statement gives back inside a unit of work."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of ``sqlite3.Connection`` kasloop's units of work use; the PostgreSQL engine provides the same."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class Database(Protocol):
    """An open kasloop database: LangGraph's checkpoint saver plus kasloop's tables, on either engine.

    Open one with ``kasloop.checkpoints.open_database``; the engines are
    ``SqliteDatabase`` and ``PostgresDatabase``.
    """

    path: Path | None
    """The SQLite file, or None when the database is no file (PostgreSQL): the inbox's change signal and the
    file locks next to the database need one."""

    saver: BaseCheckpointSaver[Any]
    """LangGraph's checkpointer on this database, with kasloop's ``aprune_keep(thread_id, keep)`` and the extended
    capabilities (``aprune``, ``acopy_thread``, ``adelete_for_runs``)."""

    async def call(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in the database thread in one hop and return its result.

        Rows queued by ``defer`` are committed first, in a transaction of their own, so ``fn`` reads them and a
        ``rollback()`` in ``fn`` cannot take them down. ``fn`` commits what it writes (or use ``write``).
        """
        ...

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` and commit, in one hop and one transaction with the deferred rows; on an error
        nothing of ``fn`` is kept (rolled back) and the deferred rows are committed on their own."""
        ...

    def defer(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue an insert to be committed with the next unit of work (any read or write, the saver's too).

        For rows that need no commit of their own at this moment: the event log's, whose rows then commit with
        the node's writes, at no extra hop. ``flush`` (and closing the database) commits what is queued.
        """

    async def flush(self) -> None:
        """Commit the deferred rows now (nothing happens when there are none)."""
        ...

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one write and commit it; returns the number of changed rows."""
        ...

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """The rows (:class:`Row`) of one read."""
        ...

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """The first row (:class:`Row`) of one read, or None."""
        ...

    async def try_lock(self, name: str) -> bool:
        """Take the exclusive lock ``name`` (e.g. ``thread:t-1``) if no other process holds it; False if one does.

        Held until ``unlock`` or until this database closes, and dropped by the system when the holder dies
        (a ``flock`` next to a SQLite file; a session advisory lock on PostgreSQL, which holds across machines).
        """
        ...

    async def unlock(self, name: str) -> None:
        """Release a lock taken with ``try_lock`` (nothing happens if this database does not hold it)."""
        ...

    async def open_store(self) -> BaseStore:
        """kasloop's LangGraph ``BaseStore`` on this database (long-term memory, the team's blackboard), ranking
        ``asearch(query=...)`` by keywords on both engines."""
        ...


class DeferredRows:
    """Inserts that ride along with the next unit of work on the connection instead of costing a hop and a commit each.

    The event log's appends are queued here; the next write (a checkpoint, a
    node's writes, a ledger row) inserts them in its own transaction, and the
    next read commits them first, so this process reads its own rows. A
    node's events are therefore committed together with (or before) the
    node's writes: if the process dies in between, the node itself is re-run
    and logs them again. The database flushes what is left when it closes.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, sql: str, params: tuple[Any, ...]) -> None:
        self.rows.append((sql, params))

    def take(self) -> list[tuple[str, tuple[Any, ...]]]:
        rows, self.rows = self.rows, []
        return rows


@asynccontextmanager
async def flushed(db: D, errors: type[Exception] | tuple[type[Exception], ...]) -> AsyncIterator[D]:
    """Yield an open database, then commit its deferred rows (the event log's). If the block fails they are
    committed best effort (``errors`` of the engine suppressed): the error in flight is what matters."""
    try:
        yield db
    except BaseException:
        with suppress(errors):
            await db.flush()
        raise
    await db.flush()


def is_postgres_url(db: object) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file."""
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
