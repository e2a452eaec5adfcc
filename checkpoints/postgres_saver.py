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

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncCursor

__all__ = ["KasloopPostgresSaver"]

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
    # for the setup lock (``PostgresDatabase.setup``): a deadlock. Same migrations, same version numbers.
    MIGRATIONS = [m.replace("CONCURRENTLY ", "") for m in AsyncPostgresSaver.MIGRATIONS]

    before_write: Callable[[], Awaitable[None]] | None = None
    """Run before each checkpoint and each batch of writes: ``PostgresDatabase`` commits its deferred event rows there,
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
