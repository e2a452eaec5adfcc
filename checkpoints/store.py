"""kasloop's LangGraph store: the SQLite ``BaseStore`` on the kasloop connection, with keyword search.

Long-term memory (``kasloop/memory/long_term.py``) keeps its items here. LangGraph's
stock SQLite store ignores ``query`` unless an embedding index is configured,
and runs each batch as several aiosqlite hops (``BEGIN`` … ``COMMIT``) that
another writer on the shared connection could split. :class:`KasloopStore`
keeps an FTS5 index in sync with triggers on ``store`` (so writes by any
LangGraph code, in any process, are indexed too), answers
``asearch(ns, query=...)`` ranked by bm25, and runs each batch in one worker
hop. It reuses the stock store's batch steps (private LangGraph helpers,
checked by the tests on every LangGraph upgrade) rather than copying them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, cast

import aiosqlite
from langgraph.store.base import BaseStore, GetOp, ListNamespacesOp, Op, PutOp, Result, SearchItem, SearchOp
from langgraph.store.sqlite.aio import AsyncSqliteStore
from langgraph.store.sqlite.base import (
    NS_MATCH_FUNCTION,
    SqliteStore,
    _decode_ns_text,
    _group_ops,
    _namespace_match,
    _namespace_prefix_condition,
    _row_to_search_item,
)

from kasloop.checkpoints.database import Database
from kasloop.checkpoints.keywords import MAX_QUERY_TERMS, STOPWORDS, fts_query
from kasloop.checkpoints.schema import MEMORY_FTS_BACKFILL, MEMORY_FTS_TABLES, MEMORY_FTS_TRIGGERS

__all__ = ["MAX_QUERY_TERMS", "STOPWORDS", "KasloopStore", "fts_query", "open_store"]


class OnSqlite(Database, Protocol):
    """A kasloop database on an aiosqlite connection (``SqliteDatabase``): what ``KasloopStore`` runs on."""

    conn: aiosqlite.Connection


class KasloopStore(AsyncSqliteStore):
    """LangGraph's async SQLite store on the kasloop connection, with keyword-ranked ``query``.

    ``asearch(prefix, query="...")`` returns items whose strings match the
    query's words, best bm25 score first (``SearchItem.score``: higher is
    better); without ``query`` it behaves like the stock store. Each batch
    runs as one unit on the connection's worker thread (see
    ``Database.call``), inside ``BEGIN IMMEDIATE`` when it writes.
    No embedding index and no TTLs.
    """

    def __init__(self, db: OnSqlite) -> None:
        super().__init__(db.conn)
        self.db = db

    @classmethod
    async def open(cls, db: OnSqlite) -> KasloopStore:
        store = cls(db)
        await store.setup()
        return store

    async def setup(self) -> None:
        """Run LangGraph's store migrations and create the FTS index (once per connection)."""
        async with self.lock:
            if not self.is_setup:
                await self.db.call(self._setup)
                self.is_setup = True

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.create_function(NS_MATCH_FUNCTION, 2, _namespace_match, deterministic=True)
        conn.execute("CREATE TABLE IF NOT EXISTS store_migrations (v INTEGER PRIMARY KEY)")
        conn.commit()
        if self._migrated(conn):
            return
        conn.execute("BEGIN IMMEDIATE")  # two processes opening a new file at once migrate one after the other
        try:
            row = conn.execute("SELECT max(v) FROM store_migrations").fetchone()
            version = -1 if row[0] is None else int(row[0])
            for v, sql in enumerate(self.MIGRATIONS[version + 1 :], start=version + 1):
                conn.execute(sql)  # each stock migration is one statement
                conn.execute("INSERT INTO store_migrations (v) VALUES (?)", (v,))
            fresh = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'kasloop_memory_fts'").fetchone() is None
            for sql in (*MEMORY_FTS_TABLES, *MEMORY_FTS_TRIGGERS):
                conn.execute(sql)
            if fresh:  # items written before kasloop indexed this file
                for sql in MEMORY_FTS_BACKFILL:
                    conn.execute(sql)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _migrated(self, conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT max(v) FROM store_migrations").fetchone()
        if row[0] is None or int(row[0]) < len(self.MIGRATIONS) - 1:
            return False
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'kasloop_memory_fts%'")}
        return {"kasloop_memory_fts", "kasloop_memory_fts_ai", "kasloop_memory_fts_ad", "kasloop_memory_fts_au"} <= names

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        if not self.is_setup:
            await self.setup()
        ops = list(ops)
        return await self.db.call(lambda conn: self._batch(conn, ops))

    def _batch(self, conn: sqlite3.Connection, ops: Sequence[Op]) -> list[Result]:
        grouped, count = _group_ops(ops)
        results: list[Result] = [None] * count
        writes = PutOp in grouped
        if writes and not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        cur = conn.cursor()
        try:
            # The stock synchronous store's batch steps, run on this thread's sqlite3 cursor.
            if GetOp in grouped:
                SqliteStore._batch_get_ops(self, grouped[GetOp], results, cur)  # type: ignore[arg-type]
            if SearchOp in grouped:
                plain = [(i, op) for i, op in grouped[SearchOp] if not cast(SearchOp, op).query]
                if plain:
                    SqliteStore._batch_search_ops(self, plain, results, cur)  # type: ignore[arg-type]
                for i, op in grouped[SearchOp]:
                    if cast(SearchOp, op).query:
                        results[i] = self._keyword_search(cur, cast(SearchOp, op))
            if ListNamespacesOp in grouped:
                SqliteStore._batch_list_namespaces_ops(self, grouped[ListNamespacesOp], results, cur)  # type: ignore[arg-type]
            if writes:
                SqliteStore._batch_put_ops(self, grouped[PutOp], cur)  # type: ignore[arg-type]
                conn.commit()
        except BaseException:
            if writes:
                conn.rollback()
            raise
        finally:
            cur.close()
        return results

    def _keyword_search(self, cur: sqlite3.Cursor, op: SearchOp) -> list[SearchItem]:
        match = fts_query(op.query or "")
        if match is None:
            return []
        # Rank inside the index first and join the store for the page only: a word found in every
        # item then costs one bm25 pass, not a join of every item.
        ns_condition, ns_args = _namespace_prefix_condition(op.namespace_prefix, column="k.prefix")
        inner = (
            "SELECT k.prefix, k.key, bm25(kasloop_memory_fts) AS rank"
            " FROM kasloop_memory_fts JOIN kasloop_memory_fts_keys AS k ON k.id = kasloop_memory_fts.rowid"
            f" WHERE kasloop_memory_fts MATCH ? AND {ns_condition}"
        )
        params: list[Any] = [match, *ns_args]
        if op.filter:
            # The stock store builds the filter SQL; its query (without LIMIT) becomes a subselect.
            [(base, base_params, _)], _ = self._prepare_batch_search_queries([(0, op._replace(query=None, limit=-1, offset=0))])
            inner += f" AND (k.prefix, k.key) IN (SELECT prefix, key FROM ({base}))"
            params.extend(base_params)
        inner += " ORDER BY rank LIMIT ? OFFSET ?"
        params.extend([op.limit, op.offset])
        sql = (
            "SELECT s.prefix, s.key, s.value, s.created_at, s.updated_at, s.expires_at, s.ttl_minutes, top.rank"
            f" FROM ({inner}) AS top JOIN store AS s ON s.prefix = top.prefix AND s.key = top.key ORDER BY top.rank"
        )
        return [
            _row_to_search_item(
                _decode_ns_text(row[0]),
                {"key": row[1], "value": row[2], "created_at": row[3], "updated_at": row[4], "score": -row[7]},
                loader=self._deserializer,
            )
            for row in cur.execute(sql, params).fetchall()
        ]

    def close(self) -> None:
        """Stop the batching task (LangGraph's store runs one per instance)."""
        if self._task is not None:
            self._task.cancel()


async def open_store(db: Database) -> BaseStore:
    """kasloop's ``BaseStore`` on an open database (``Database.open_store``): ``KasloopStore`` on SQLite,
    ``KasloopPostgresStore`` on PostgreSQL.

    Both rank ``asearch(query=...)`` by keywords; long-term memory and the collaboration blackboard live there.
    """
    return await db.open_store()
