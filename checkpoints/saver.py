"""KasloopSaver: LangGraph's async SQLite saver with every operation in one hop to the connection's thread.

Why: aiosqlite runs each ``execute``, ``fetch``, cursor ``close`` and
``commit`` as a separate hop to its worker thread, and every hop costs a
thread switch plus an event-loop wake-up. ``AsyncSqliteSaver.aput`` takes 3
hops and ``aput_writes`` 4; with ``durability="sync"`` (kasloop's default)
LangGraph calls both after every node, so the hops, not SQLite, were most of
the agent loop's time. Here each operation is one plain ``sqlite3`` function
run on the worker thread: the same SQL, tables, serializer and semantics
(``WRITES_IDX_MAP`` → ``INSERT OR REPLACE`` else ``INSERT OR IGNORE``,
``task_path``, parent configs, ``writes_sort_key`` order), so databases
written by either saver are read by the other.

Because each operation is a single function on the single worker thread,
operations never interleave and the stock saver's ``asyncio.Lock`` is not
needed for them; a failing write is rolled back before the hop returns, so
no half-finished transaction is left on the shared connection for the next
commit (the act ledger's or the event log's) to pick up.

It also implements LangGraph's optional capabilities ``aprune``,
``acopy_thread`` and ``adelete_for_runs`` (checked by
``langgraph-checkpoint-conformance`` in ``tests/test_saver.py``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.checkpoint.sqlite.utils import load_pending_writes, pending_writes_sql, search_where

from kasloop.checkpoints.database import DeferredRows
from kasloop.checkpoints.serde import MessageCachingSerializer

__all__ = ["DeferredRows", "KasloopSaver", "in_worker", "write_in_worker"]

T = TypeVar("T")
LIST_BATCH = 64
"""Checkpoints (with their pending writes) fetched per hop by ``alist``."""

_CHECKPOINT_COLUMNS = "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata"
_INSERT_CHECKPOINT = f"INSERT OR REPLACE INTO checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_WRITE_COLUMNS = "thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value"
_ORPHANED_WRITES = (
    "DELETE FROM writes WHERE thread_id = ? AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = writes.thread_id"
    " AND c.checkpoint_ns = writes.checkpoint_ns AND c.checkpoint_id = writes.checkpoint_id)"
)


def _insert(conn: sqlite3.Connection, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
    for sql, params in rows:
        conn.execute(sql, params)


async def in_worker(
    conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T], deferred: DeferredRows | None = None
) -> T:
    """Run ``fn(connection)`` on aiosqlite's worker thread: one hop, whatever ``fn`` does.

    Deferred rows, if any, are inserted and committed first, in the same hop.
    aiosqlite has no public API for this; ``_execute`` is what each of its own
    methods uses for its hop.
    """
    rows = deferred.take() if deferred is not None else []
    if not rows:
        return await conn._execute(fn, conn._conn)  # noqa: SLF001 - see docstring

    def unit(raw: sqlite3.Connection) -> T:
        _commit(raw, lambda c: _insert(c, rows))
        return fn(raw)

    return await conn._execute(unit, conn._conn)  # noqa: SLF001


def _commit(raw: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    try:
        result = fn(raw)
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    return result


async def write_in_worker(
    conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T], deferred: DeferredRows | None = None
) -> T:
    """Like ``in_worker``, then commit; on any error roll back, so no partial write lingers.

    Deferred rows go into the same transaction; if ``fn`` fails they are
    committed on their own, so a failed write never loses them.
    """
    rows = deferred.take() if deferred is not None else []

    def unit(raw: sqlite3.Connection) -> T:
        try:
            return _commit(raw, lambda c: (_insert(c, rows), fn(c))[1])
        except BaseException:
            if rows:
                _commit(raw, lambda c: _insert(c, rows))
            raise

    return await in_worker(conn, unit)


def _plain_cursor(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor returning tuples whatever the connection's ``row_factory`` (kasloop sets ``sqlite3.Row``)."""
    cur = conn.cursor()
    cur.row_factory = None
    return cur


def _parent(thread_id: str, checkpoint_ns: str, parent_id: str | None) -> RunnableConfig | None:
    if not parent_id:
        return None
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": parent_id}}


class KasloopSaver(AsyncSqliteSaver):
    """Drop-in ``AsyncSqliteSaver`` whose operations each take one thread hop (see the module docstring)."""

    deferred: DeferredRows
    """Rows (the event log's) to insert with this saver's next write; ``Database`` shares it."""

    def __init__(self, conn: aiosqlite.Connection, **kwargs: Any) -> None:
        kwargs.setdefault("serde", MessageCachingSerializer())
        super().__init__(conn, **kwargs)
        self.deferred = DeferredRows()

    async def _ready(self) -> None:
        if not self.is_setup:
            await self.setup()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await write_in_worker(self.conn, fn, self.deferred)

    async def aflush(self) -> None:
        """Commit deferred rows (node writes, events) now, e.g. before another connection reads the file."""
        if self.deferred.rows:
            await self._write(lambda conn: None)

    def _tuple(self, config: RunnableConfig, row: Sequence[Any], writes: list[Any]) -> CheckpointTuple:
        thread_id, checkpoint_ns, _, parent_id, type_, checkpoint, metadata = row
        return CheckpointTuple(
            config,
            self.serde.loads_typed((type_, checkpoint)),
            cast(CheckpointMetadata, json.loads(metadata) if metadata is not None else {}),
            _parent(thread_id, checkpoint_ns, parent_id),
            load_pending_writes(writes, self.serde),
        )

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        await self._ready()
        thread_id = str(config["configurable"]["thread_id"])
        checkpoint_ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        writes_sql = pending_writes_sql(self._has_task_path)

        def read(conn: sqlite3.Connection) -> tuple[Any, list[Any]] | None:
            cur = _plain_cursor(conn)
            if checkpoint_id:
                cur.execute(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                    (thread_id, checkpoint_ns, checkpoint_id),
                )
            else:
                cur.execute(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ?"
                    " ORDER BY checkpoint_id DESC LIMIT 1",
                    (thread_id, checkpoint_ns),
                )
            row = cur.fetchone()
            if row is None:
                return None
            writes = cur.execute(writes_sql, (thread_id, checkpoint_ns, row[2])).fetchall()
            return row, writes

        found = await in_worker(self.conn, read, self.deferred)
        if found is None:
            return None
        row, writes = found
        if not checkpoint_id:
            config = {"configurable": {"thread_id": row[0], "checkpoint_ns": checkpoint_ns, "checkpoint_id": row[2]}}
        return self._tuple(config, row, writes)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's signature
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Newest first, ``LIST_BATCH`` checkpoints with their writes per hop (the stock saver: two hops each)."""
        await self._ready()
        where, params = search_where(config, filter, before)
        query = f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints {where} ORDER BY checkpoint_id DESC"
        if limit is not None:
            query += " LIMIT ?"
            params = (*params, limit)
        writes_sql = pending_writes_sql(self._has_task_path)
        cursor = await in_worker(self.conn, lambda conn: _plain_cursor(conn).execute(query, params), self.deferred)

        def batch(conn: sqlite3.Connection) -> list[tuple[Any, list[Any]]]:
            rows = cursor.fetchmany(LIST_BATCH)
            wcur = _plain_cursor(conn)
            return [(row, wcur.execute(writes_sql, (row[0], row[1], row[2])).fetchall()) for row in rows]

        try:
            while chunk := await in_worker(self.conn, batch):
                for row, writes in chunk:
                    stored = {"configurable": {"thread_id": row[0], "checkpoint_ns": row[1], "checkpoint_id": row[2]}}
                    yield self._tuple(stored, row, writes)
        finally:
            await in_worker(self.conn, lambda _conn: cursor.close())

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        await self._ready()
        thread_id = config["configurable"]["thread_id"]
        checkpoint_ns = config["configurable"].get("checkpoint_ns", "")
        type_, blob = self.serde.dumps_typed(checkpoint)
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False).encode("utf-8", "ignore")
        params = (str(thread_id), checkpoint_ns, checkpoint["id"], config["configurable"].get("checkpoint_id"), type_, blob, meta)
        await self._write(lambda conn: conn.execute(_INSERT_CHECKPOINT, params))
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint["id"]}}

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        # Special channels (errors, interrupts, ...) have a fixed index and replace; ordinary writes never overwrite.
        verb = "INSERT OR REPLACE" if all(w[0] in WRITES_IDX_MAP for w in writes) else "INSERT OR IGNORE"
        query = f"{verb} INTO writes ({_WRITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        await self._ready()
        configurable = config["configurable"]
        key = (str(configurable["thread_id"]), str(configurable["checkpoint_ns"]), str(configurable["checkpoint_id"]))
        rows = [
            (*key, task_id, task_path, WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value))
            for idx, (channel, value) in enumerate(writes)
        ]
        # A node's writes ride with the checkpoint that follows it (same superstep, next hop): one commit per
        # superstep instead of two. A crash in between re-runs that node, which kasloop's act ledger makes safe;
        # any read (get_tuple, a resume) commits them first.
        for row in rows:
            self.deferred.add(query, row)

    async def adelete_thread(self, thread_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (str(thread_id),))
            conn.execute("DELETE FROM writes WHERE thread_id = ?", (str(thread_id),))

        await self._ready()
        await self._write(delete)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: the newest checkpoint per thread and namespace stays (with its writes); ``delete``: all go."""
        if strategy == "delete":
            for thread_id in thread_ids:
                await self.adelete_thread(thread_id)
            return
        if strategy != "keep_latest":
            raise ValueError(f"Unknown prune strategy {strategy!r}; use 'keep_latest' or 'delete'.")
        await self._ready()
        await self._write(lambda conn: sum(keep_newest(conn, str(t), 1) for t in thread_ids))

    async def aprune_keep(self, thread_id: str, keep: int) -> int:
        """Keep the newest ``keep`` checkpoints of ``thread_id`` per namespace, and none of finished subgraph
        runs (``drop_finished_subgraphs``); returns how many were deleted."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        await self._ready()
        return await self._write(lambda conn: drop_finished_subgraphs(conn, thread_id) + keep_newest(conn, thread_id, keep))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint (the whole parent chain) and every write; metadata is copied verbatim."""

        def copy(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO checkpoints ({_CHECKPOINT_COLUMNS}) SELECT ?, checkpoint_ns, checkpoint_id,"
                " parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints WHERE thread_id = ?",
                (str(target_thread_id), str(source_thread_id)),
            )
            columns = _WRITE_COLUMNS if self._has_task_path else _WRITE_COLUMNS.replace("task_path, ", "")
            copied = columns.replace("thread_id", "?", 1)
            conn.execute(
                f"INSERT OR REPLACE INTO writes ({columns}) SELECT {copied} FROM writes WHERE thread_id = ?",
                (str(target_thread_id), str(source_thread_id)),
            )

        await self._ready()
        await self._write(copy)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata names one of ``run_ids``, and their writes."""
        runs = [str(r) for r in run_ids]
        if not runs:
            return

        def delete(conn: sqlite3.Connection) -> None:
            marks = ", ".join("?" * len(runs))
            gone = conn.execute(
                f"DELETE FROM checkpoints WHERE json_extract(CAST(metadata AS TEXT), '$.run_id') IN ({marks})"
                " RETURNING thread_id",
                runs,
            ).fetchall()
            for thread_id in {row[0] for row in gone}:
                conn.execute(_ORPHANED_WRITES, (thread_id,))

        await self._ready()
        await self._write(delete)


def drop_finished_subgraphs(conn: sqlite3.Connection, thread_id: str) -> int:
    """Delete the checkpoints of subgraph runs that are over (a team's finished delegations).

    A subgraph (namespace other than ``""``) writes its checkpoints while the parent's node runs;
    once that node is done the parent writes a newer checkpoint, and nothing reads the subgraph's
    again. A subgraph paused by an interrupt is newer than the parent's newest, and stays.
    Checkpoint ids are time-ordered (uuid6), so "older" is a string comparison.
    """
    return conn.execute(
        "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns IN ("
        " SELECT checkpoint_ns FROM checkpoints WHERE thread_id = ? AND checkpoint_ns != '' GROUP BY checkpoint_ns"
        " HAVING MAX(checkpoint_id) < (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''))",
        (thread_id, thread_id, thread_id),
    ).rowcount


def keep_newest(conn: sqlite3.Connection, thread_id: str, keep: int) -> int:
    """Delete all but the newest ``keep`` checkpoints of a thread per namespace, and writes left without a checkpoint.

    Runs inside the caller's transaction (the caller commits). Returns how many checkpoints went.
    """
    gone = conn.execute(
        "DELETE FROM checkpoints WHERE rowid IN ("
        " SELECT rowid FROM (SELECT rowid, ROW_NUMBER() OVER (PARTITION BY checkpoint_ns ORDER BY checkpoint_id DESC) AS newest"
        " FROM checkpoints WHERE thread_id = ?) WHERE newest > ?)",
        (thread_id, keep),
    ).rowcount
    if gone:
        conn.execute(_ORPHANED_WRITES, (thread_id,))
    return gone
