"""KasloopPostgresStore: LangGraph's async Postgres store with keyword search, the mirror of ``checkpoints/store.py``.

``asearch(prefix, query="...")`` ranks items by PostgreSQL full-text search
over the strings of each item's value (``ts_rank_cd``, English stemming like
SQLite's porter tokenizer); no table of its own, where SQLite keeps an FTS5
index. ``PostgresDatabase.open_store`` opens it on the database's async
connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.store.base import Result, SearchItem, SearchOp
from langgraph.store.postgres.aio import AsyncPostgresStore

from kasloop.checkpoints.keywords import ts_query

__all__ = ["KasloopPostgresStore"]

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


class KasloopPostgresStore(AsyncPostgresStore):
    """LangGraph's async Postgres store with ``KasloopStore``'s keyword ``query`` (Postgres full-text search).

    ``asearch(prefix, query="...")`` ranks items whose strings match the
    query's words (English stemming, like SQLite's porter tokenizer) by
    ``ts_rank_cd``, higher first; without ``query`` it is the stock search.
    ``limit=-1`` means no limit, as on SQLite. No embedding index, no TTLs.
    """

    MIGRATIONS = [m.replace("CONCURRENTLY ", "") for m in AsyncPostgresStore.MIGRATIONS]  # see KasloopPostgresSaver

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
        """Nothing runs in the background (no TTL sweeper); the connection is ``PostgresDatabase``'s."""


_NO_LIMIT = 2**62
