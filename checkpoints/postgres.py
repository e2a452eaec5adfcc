"""KasloopPostgresSaver: LangGraph's ``AsyncPostgresSaver`` plus the capabilities kasloop's SQLite saver has.

The stock saver already stores, lists, deletes and prunes (``keep_latest`` /
``delete``); this subclass adds what kasloop relies on with the same meaning as
``checkpoints/saver.py``:

* ``aprune_keep(thread_id, keep)``: drop the checkpoints of finished subgraph
  runs (a namespace other than ``""`` whose newest checkpoint is older than the
  root namespace's newest), then keep the newest ``keep`` checkpoints per
  namespace. Returns how many checkpoints went.
* ``acopy_thread`` and ``adelete_for_runs`` (LangGraph's extended capabilities).

Unlike SQLite, Postgres keeps channel values in ``checkpoint_blobs`` shared by
the checkpoints of a namespace. Deleting checkpoints therefore also deletes the
writes of exactly those checkpoints and the blobs they referenced that no kept
checkpoint references: writes and blobs of checkpoints being saved meanwhile
(a run saves writes before their checkpoint) are never touched. Each operation
is one transaction.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.store.base import Result, SearchItem, SearchOp
from langgraph.store.postgres.aio import AsyncPostgresStore
from psycopg import AsyncCursor
from psycopg.adapt import Loader
from psycopg.rows import dict_row

from kasloop.checkpoints.saver import DeferredRows
from kasloop.checkpoints.sqlite import display_db, flushed
from kasloop.errors import CheckpointError

__all__ = ["KasloopPostgresSaver", "KasloopPostgresStore", "PgDatabase", "advisory_key", "open_pg_database", "pg_schema"]

T = TypeVar("T")

_DROP_FINISHED_SUBGRAPHS = """
DELETE FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns IN (
    SELECT checkpoint_ns FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns <> ''
    GROUP BY checkpoint_ns
    HAVING MAX(checkpoint_id) < (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = '')
)
RETURNING thread_id, checkpoint_ns, checkpoint_id, checkpoint -> 'channel_versions' AS versions
"""

_KEEP_NEWEST = """
DELETE FROM checkpoints c USING (
    SELECT checkpoint_ns, checkpoint_id,
           ROW_NUMBER() OVER (PARTITION BY checkpoint_ns ORDER BY checkpoint_id DESC) AS newest
    FROM checkpoints WHERE thread_id = %(t)s
) r
WHERE c.thread_id = %(t)s AND c.checkpoint_ns = r.checkpoint_ns AND c.checkpoint_id = r.checkpoint_id AND r.newest > %(keep)s
RETURNING c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.checkpoint -> 'channel_versions' AS versions
"""

_DELETE_FOR_RUNS = """
DELETE FROM checkpoints WHERE metadata ->> 'run_id' = ANY(%(runs)s)
RETURNING thread_id, checkpoint_ns, checkpoint_id, checkpoint -> 'channel_versions' AS versions
"""

_DELETE_WRITES = """
DELETE FROM checkpoint_writes w USING unnest(%s::text[], %s::text[], %s::text[]) AS g(thread_id, ns, id)
WHERE w.thread_id = g.thread_id AND w.checkpoint_ns = g.ns AND w.checkpoint_id = g.id
"""

# A freed blob goes unless a checkpoint left in its thread and namespace still references its version.
_DELETE_FREED_BLOBS = """
DELETE FROM checkpoint_blobs b USING unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS f(thread_id, ns, channel, version)
WHERE b.thread_id = f.thread_id AND b.checkpoint_ns = f.ns AND b.channel = f.channel AND b.version = f.version
AND NOT EXISTS (
    SELECT 1 FROM checkpoints c
    WHERE c.thread_id = f.thread_id AND c.checkpoint_ns = f.ns AND c.checkpoint -> 'channel_versions' ->> f.channel = f.version
)
"""

_COPY = (
    """INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata
    FROM checkpoints WHERE thread_id = %(source)s
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET parent_checkpoint_id = EXCLUDED.parent_checkpoint_id,
        type = EXCLUDED.type, checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata""",
    """INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(target)s, checkpoint_ns, channel, version, type, blob FROM checkpoint_blobs WHERE thread_id = %(source)s
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO UPDATE SET type = EXCLUDED.type, blob = EXCLUDED.blob""",
    """INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
    FROM checkpoint_writes WHERE thread_id = %(source)s
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
        task_path = EXCLUDED.task_path, channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob""",
)


async def _clean_after(cur: AsyncCursor[Any], gone: Iterable[dict[str, Any]]) -> int:
    """Delete the writes of the deleted checkpoints and the blobs only they referenced; returns how many went."""
    rows = list(gone)
    if not rows:
        return 0
    await cur.execute(
        _DELETE_WRITES,
        ([r["thread_id"] for r in rows], [r["checkpoint_ns"] for r in rows], [r["checkpoint_id"] for r in rows]),
        prepare=False,
    )
    freed = sorted({(r["thread_id"], r["checkpoint_ns"], ch, str(v)) for r in rows for ch, v in (r["versions"] or {}).items()})
    if freed:
        await cur.execute(_DELETE_FREED_BLOBS, tuple(list(col) for col in zip(*freed, strict=True)), prepare=False)
    return len(rows)


class KasloopPostgresSaver(AsyncPostgresSaver):
    """The stock async Postgres saver with kasloop's pruning, thread copy and per-run deletion."""

    # Plain CREATE INDEX: CONCURRENTLY waits for every older snapshot, including another process's waiting
    # for the setup lock (``PgDatabase.setup``): a deadlock. Same migrations, same version numbers.
    MIGRATIONS = [m.replace("CONCURRENTLY ", "") for m in AsyncPostgresSaver.MIGRATIONS]

    before_write: Callable[[], Awaitable[None]] | None = None
    """Run before each checkpoint and each batch of writes: ``PgDatabase`` commits its deferred event rows there,
    so a node's events are committed before (never after) the node's writes, as on SQLite."""

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        if self.before_write is not None:
            await self.before_write()
        return await super().aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        if self.before_write is not None:
            await self.before_write()
        await super().aput_writes(config, writes, task_id, task_path)

    async def aprune_keep(self, thread_id: str, keep: int) -> int:
        """Keep the newest ``keep`` checkpoints of ``thread_id`` per namespace, none of finished subgraph
        runs; returns how many were deleted."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        params = {"t": str(thread_id), "keep": keep}
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute(_DROP_FINISHED_SUBGRAPHS, params, prepare=False)
            finished = await cur.fetchall()
            await cur.execute(_KEEP_NEWEST, params, prepare=False)
            old = await cur.fetchall()
            return await _clean_after(cur, [*finished, *old])

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of a thread to another thread id (metadata verbatim)."""
        params = {"source": str(source_thread_id), "target": str(target_thread_id)}
        async with self._cursor() as cur, cur.connection.transaction():
            for sql in _COPY:
                await cur.execute(sql, params, prepare=False)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata names one of ``run_ids``, with their writes and freed blobs."""
        runs = [str(r) for r in run_ids]
        if not runs:
            return
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute(_DELETE_FOR_RUNS, {"runs": runs}, prepare=False)
            await _clean_after(cur, await cur.fetchall())


# --------------------------------------------------------------------------- the kasloop tables on Postgres


def pg_schema(sqlite_ddl: str) -> str:
    """kasloop's SQLite DDL in Postgres' dialect, so each table is declared once.

    ``REAL`` becomes ``DOUBLE PRECISION`` (Postgres' ``REAL`` is 4 bytes),
    ``INTEGER`` becomes ``BIGINT`` (SQLite's integers are 8 bytes), an
    ``AUTOINCREMENT`` key a ``BIGSERIAL``; tables without one get a ``rowid``
    ``BIGSERIAL`` so ``ORDER BY rowid`` (insertion order) reads the same on
    both. ``PRAGMA`` lines and SQLite triggers are dropped (``_PG_TRIGGERS``
    has the event log's).
    """
    text = re.sub(r"(?m)^PRAGMA [^;]*;\n?", "", sqlite_ddl)
    text = re.sub(r"(?s)CREATE TRIGGER .*?END;\n?", "", text)
    text = text.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    text = re.sub(r"\bREAL\b", "DOUBLE PRECISION", text)
    text = re.sub(r"\bINTEGER\b", "BIGINT", text)

    def add_rowid(match: re.Match[str]) -> str:
        body = match.group(2)
        return match.group(0) if "BIGSERIAL PRIMARY KEY" in body else f"{match.group(1)}\n    rowid BIGSERIAL NOT NULL,{body}"

    return re.sub(r"(CREATE TABLE IF NOT EXISTS \w+ \()((?:[^;])*?\);)", add_rowid, text)


_PG_TRIGGERS = """
CREATE OR REPLACE FUNCTION kasloop_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the kasloop event log is append-only'; END $$;
CREATE OR REPLACE TRIGGER kasloop_events_no_update BEFORE UPDATE ON kasloop_events
FOR EACH ROW EXECUTE FUNCTION kasloop_events_append_only();
"""

_SETUP_LOCK = 0x6B61_736C  # pg_advisory lock key: one process at a time creates tables (CREATE IF NOT EXISTS races)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit ``pg_advisory_lock`` key for a name (e.g. ``thread:t-1``)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """sqlite3's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
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
    """The part of ``sqlite3.Connection`` kasloop's table modules use, over a sync psycopg connection.

    Integrity errors are raised as ``sqlite3.IntegrityError`` so callers that
    catch a duplicate key keep one ``except`` for both engines.
    """

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor(row_factory=_row_factory)
        try:
            cur.execute(_pg_sql(sql), [_pg_param(p) for p in params])
        except psycopg.IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc).splitlines()[0]) from exc
        return cur

    def executescript(self, script: str, *, postgres_ddl: str = "") -> None:
        """Run SQLite DDL (``CREATE ... IF NOT EXISTS``) translated by ``pg_schema``, then ``postgres_ddl``: once per
        database and version of the script, one process at a time.

        Once is not only faster: DDL locks tables even when it changes nothing (``CREATE INDEX IF NOT EXISTS``
        takes a SHARE lock on the table first, ``ALTER TABLE ... IF NOT EXISTS`` an exclusive one), and taking
        those locks while other sessions write several tables in one transaction deadlocks.
        """
        ddl = pg_schema(script) + postgres_ddl
        version = hashlib.sha256(ddl.encode()).hexdigest()[:32]
        if self._applied(version):
            return
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
        if self._applied(version):  # another process applied it while we waited (read committed: a fresh snapshot)
            return
        self.raw.execute(ddl.encode())
        self.raw.execute("CREATE TABLE IF NOT EXISTS kasloop_schema (version TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        self.raw.execute(
            "INSERT INTO kasloop_schema (version, applied_at) VALUES (%s, extract(epoch FROM now())) ON CONFLICT DO NOTHING",
            (version,),
        )

    def _applied(self, version: str) -> bool:
        """Whether this version of a script is recorded (catalog and one-row reads: no lock on kasloop's tables)."""
        if self.raw.execute("SELECT to_regclass('kasloop_schema')").fetchone()[0] is None:  # type: ignore[index]
            return False
        return self.raw.execute("SELECT 1 FROM kasloop_schema WHERE version = %s", (version,)).fetchone() is not None

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()


class PgDatabase:
    """An open kasloop database on PostgreSQL, with ``Database``'s interface. Create it with ``open_database``.

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

    async def setup(self) -> None:
        """The saver's migrations and kasloop's tables, one process at a time (a session advisory lock)."""
        from kasloop.checkpoints.sqlite import _ADDED_COLUMNS, _SCHEMA

        def create(conn: PgConnection) -> None:
            added = "".join(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {decl};\n" for t, c, decl in _ADDED_COLUMNS)
            conn.executescript(_SCHEMA, postgres_ddl=_PG_TRIGGERS + added)

        await self.call(lambda conn: conn.raw.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,)))
        try:
            await self.saver.setup()
            await self.write(create)
        finally:
            await self.call(lambda conn: conn.raw.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,)))

    def _unit(self, fn: Callable[[PgConnection], T]) -> T:
        rows = self.deferred.take()
        try:
            for sql, params in rows:
                self.conn.execute(sql, params)
            result = fn(self.conn)
            self.raw.commit()  # reads too: no transaction stays open between units of work
        except BaseException:
            self.raw.rollback()
            if rows:
                for sql, params in rows:  # a failed unit of work does not take queued rows down with it
                    self.conn.execute(sql, params)
                self.raw.commit()
            raise
        return result

    async def try_advisory_lock(self, name: str) -> bool:
        """Take the session-level advisory lock ``name`` if no other session holds it (any machine);
        PostgreSQL drops it when this connection closes, even if the process dies."""
        key = advisory_key(name)
        return bool(await self.call(lambda conn: conn.raw.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]))

    async def advisory_unlock(self, name: str) -> None:
        key = advisory_key(name)
        await self.call(lambda conn: conn.raw.execute("SELECT pg_advisory_unlock(%s)", (key,)))

    async def call(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn(connection)`` in the database thread in one hop, then commit (deferred rows first)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._unit, fn)

    async def write(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn(connection)`` and commit, in one hop; on an error nothing of it is kept (rolled back)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._unit, fn)

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

    async def close(self) -> None:
        """Close both connections (``open_database`` flushes the deferred rows first)."""
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
async def open_pg_database(url: str) -> AsyncIterator[PgDatabase]:
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
    db = PgDatabase(url, raw, aconn)
    try:
        try:
            await db.setup()
        except psycopg.Error as exc:
            raise CheckpointError(f"The kasloop database on PostgreSQL could not be set up: {exc}.") from None
        async with flushed(db, psycopg.Error):
            yield db
    finally:
        await db.close()


# --------------------------------------------------------------------------- long-term memory on Postgres

# Every string in an item's value except its kind (which the namespace already says) is searchable, as on SQLite.
_KEYWORD_SEARCH = """
SELECT prefix, key, value, created_at, updated_at, ts_rank_cd(doc, q) AS score
FROM store,
     to_tsvector('english', coalesce((
         SELECT string_agg(s #>> '{}', ' ')
         FROM jsonb_path_query(value - 'kind', 'strict $.** ? (@.type() == "string")') AS s
     ), '')) AS doc,
     to_tsquery('english', %(query)s) AS q
WHERE (prefix = %(ns)s OR prefix LIKE %(like)s) AND doc @@ q
ORDER BY score DESC, key
LIMIT %(limit)s OFFSET %(offset)s
"""


def ts_query(text: str) -> str | None:
    """Free text as a safe tsquery: its words (``fts_query``'s, stopwords dropped) joined by OR; None if none."""
    from kasloop.checkpoints.store import fts_query

    match = fts_query(text)
    return None if match is None else " | ".join(term.strip('"') for term in match.split(" OR "))


class KasloopPostgresStore(AsyncPostgresStore):
    """LangGraph's async Postgres store with ``KasloopStore``'s keyword ``query`` (Postgres full-text search).

    ``asearch(prefix, query="...")`` ranks items whose strings match the
    query's words (English stemming, like SQLite's porter tokenizer) by
    ``ts_rank_cd``, higher first; without ``query`` it is the stock search.
    ``limit=-1`` means no limit, as on SQLite. No embedding index, no TTLs.
    """

    MIGRATIONS = [m.replace("CONCURRENTLY ", "") for m in AsyncPostgresStore.MIGRATIONS]  # see KasloopPostgresSaver

    @classmethod
    async def open(cls, db: PgDatabase) -> KasloopPostgresStore:
        store = cls(db.aconn)
        # The saver and the store share one connection, which runs one command at a time: one lock for both
        # (a checkpoint write in the background and a blackboard read in a node would otherwise collide).
        store.lock = db.saver.lock
        await db.call(lambda conn: conn.raw.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,)))
        try:
            await store.setup()
        finally:
            await db.call(lambda conn: conn.raw.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,)))
        return store

    async def _batch_search_ops(self, search_ops: Sequence[tuple[int, SearchOp]], results: list[Result], cur: Any) -> None:
        plain = [(i, op._replace(limit=_NO_LIMIT) if op.limit < 0 else op) for i, op in search_ops if not op.query]
        if plain:
            await super()._batch_search_ops(plain, results, cur)
        for i, op in search_ops:
            if not op.query:
                continue
            query = ts_query(op.query)
            if query is None:
                results[i] = []
                continue
            ns = ".".join(op.namespace_prefix)
            like = ns.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"
            limit = None if op.limit < 0 else op.limit
            await cur.execute(
                _KEYWORD_SEARCH, {"query": query, "ns": ns, "like": like, "limit": limit, "offset": op.offset}, prepare=False
            )
            rows = await cur.fetchall()
            results[i] = [
                SearchItem(
                    namespace=tuple(r["prefix"].split(".")), key=r["key"], value=r["value"],
                    created_at=r["created_at"], updated_at=r["updated_at"], score=float(r["score"]),
                )
                for r in rows
            ]  # fmt: skip

    def close(self) -> None:
        """Nothing runs in the background (no TTL sweeper); the connection is ``PgDatabase``'s."""


_NO_LIMIT = 2**62
