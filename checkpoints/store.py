"""kasloop's LangGraph store: the SQLite ``BaseStore`` on the kasloop connection, with keyword search.

Long-term memory (``kasloop/memory.py``) keeps its items here. LangGraph's
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

import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, cast

from langgraph.store.base import GetOp, ListNamespacesOp, Op, PutOp, Result, SearchItem, SearchOp
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

from kasloop.checkpoints.sqlite import Database

__all__ = ["MAX_QUERY_TERMS", "STOPWORDS", "KasloopStore", "fts_query", "open_store"]

MAX_QUERY_TERMS = 32

# Words that match nearly every item; dropping them keeps bm25 on the words that matter.
STOPWORDS = frozenset(
    """a about after again all also am an and any are as at be because been before being but by can could did do does
    doing done for from had has have having he her here hers him his how i if in into is it its itself just me more most
    my no nor not now of off on once only or other our ours out over own same she should so some such than that the
    their theirs them then there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours""".split()
)

_FTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kasloop_memory_fts_keys ("
    " id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, key TEXT NOT NULL, UNIQUE (prefix, key))",
    "CREATE VIRTUAL TABLE IF NOT EXISTS kasloop_memory_fts USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')",
)
# Every string in an item's value except its kind (which the namespace already says) is searchable.
_BODY = "(SELECT group_concat(j.value, ' ') FROM json_tree(CAST({v}.value AS TEXT)) AS j WHERE j.type = 'text' AND j.fullkey <> '$.kind')"
_ID = "(SELECT id FROM kasloop_memory_fts_keys WHERE prefix = {v}.prefix AND key = {v}.key)"
_INDEX_NEW = (
    "INSERT OR IGNORE INTO kasloop_memory_fts_keys (prefix, key) VALUES (new.prefix, new.key);"
    f" DELETE FROM kasloop_memory_fts WHERE rowid = {_ID.format(v='new')};"
    f" INSERT INTO kasloop_memory_fts (rowid, body) VALUES ({_ID.format(v='new')}, coalesce({_BODY.format(v='new')}, ''));"
)
_UNINDEX_OLD = (
    f"DELETE FROM kasloop_memory_fts WHERE rowid = {_ID.format(v='old')};"
    " DELETE FROM kasloop_memory_fts_keys WHERE prefix = old.prefix AND key = old.key;"
)
# INSERT OR REPLACE fires only the insert trigger (recursive_triggers is off), so it re-indexes too.
_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS kasloop_memory_fts_ai AFTER INSERT ON store BEGIN {_INDEX_NEW} END",
    f"CREATE TRIGGER IF NOT EXISTS kasloop_memory_fts_ad AFTER DELETE ON store BEGIN {_UNINDEX_OLD} END",
    f"CREATE TRIGGER IF NOT EXISTS kasloop_memory_fts_au AFTER UPDATE ON store BEGIN {_UNINDEX_OLD} {_INDEX_NEW} END",
)
_BACKFILL = (
    "INSERT OR IGNORE INTO kasloop_memory_fts_keys (prefix, key) SELECT prefix, key FROM store",
    "DELETE FROM kasloop_memory_fts",
    f"INSERT INTO kasloop_memory_fts (rowid, body) SELECT {_ID.format(v='s')}, coalesce({_BODY.format(v='s')}, '') FROM store AS s",
)


def fts_query(text: str) -> str | None:
    """Turn free text into a safe FTS5 query: quoted terms joined by OR, or ``None`` if nothing is left.

    User text like ``foo"bar OR (`` is never parsed as FTS syntax: only word
    characters survive, each term is double-quoted, stopwords are dropped.
    bm25 then ranks items matching more (and rarer) terms first.
    """
    terms: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if word not in STOPWORDS and word not in terms:
            terms.append(word)
        if len(terms) >= MAX_QUERY_TERMS:
            break
    return " OR ".join(f'"{term}"' for term in terms) if terms else None


class KasloopStore(AsyncSqliteStore):
    """LangGraph's async SQLite store on the kasloop connection, with keyword-ranked ``query``.

    ``asearch(prefix, query="...")`` returns items whose strings match the
    query's words, best bm25 score first (``SearchItem.score``: higher is
    better); without ``query`` it behaves like the stock store. Each batch
    runs as one unit on the connection's worker thread (see
    ``Database.call``), inside ``BEGIN IMMEDIATE`` when it writes.
    No embedding index and no TTLs.
    """

    def __init__(self, db: Database) -> None:
        super().__init__(db.conn)
        self.db = db

    @classmethod
    async def open(cls, db: Database) -> KasloopStore:
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
            for sql in (*_FTS_SCHEMA, *_TRIGGERS):
                conn.execute(sql)
            if fresh:  # items written before kasloop indexed this file
                for sql in _BACKFILL:
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


async def open_store(db: Any) -> Any:
    """kasloop's ``BaseStore`` on an open database: ``KasloopStore`` on SQLite, ``KasloopPostgresStore`` on PostgreSQL.

    Both rank ``asearch(query=...)`` by keywords; long-term memory and the collaboration blackboard live there.
    """
    if db.path is None:  # a PgDatabase: no file
        from kasloop.checkpoints.postgres import KasloopPostgresStore  # psycopg is imported only for Postgres

        return await KasloopPostgresStore.open(db)
    return await KasloopStore.open(db)
