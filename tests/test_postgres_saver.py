"""KasloopPostgresSaver on a real PostgreSQL server: the conformance suite and kasloop's pruning."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

from kasloop.checkpoints.postgres import KasloopPostgresSaver
from conftest import assert_conformant
from pgserver import PgServer


async def test_the_server_fixture_gives_a_fresh_database_on_127_0_0_1(pg_server: PgServer) -> None:
    first, second = pg_server.create_database(), pg_server.create_database()
    assert first != second and "@127.0.0.1:" in first
    async with await psycopg.AsyncConnection.connect(first, autocommit=True) as conn:
        await conn.execute("CREATE TABLE only_here (x int)")
    async with await psycopg.AsyncConnection.connect(second, autocommit=True) as conn:
        found = await (await conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'")).fetchone()
        assert found == (0,)


@pytest.fixture
async def saver(pg_url: str) -> AsyncIterator[KasloopPostgresSaver]:
    async with KasloopPostgresSaver.from_conn_string(pg_url) as made:
        await made.setup()
        yield made  # type: ignore[misc]


async def test_passes_langgraph_checkpoint_conformance_with_all_eight_capabilities(pg_server: PgServer) -> None:
    async def fresh_saver() -> AsyncIterator[KasloopPostgresSaver]:
        async with KasloopPostgresSaver.from_conn_string(pg_server.create_database()) as made:
            await made.setup()
            yield made  # type: ignore[misc]

    report = await validate(checkpointer_test(name="KasloopPostgresSaver")(fresh_saver))
    assert_conformant(report)


async def _chain(saver: KasloopPostgresSaver, thread: str, ns: str, steps: int, run: str = "run") -> list[dict[str, Any]]:
    """``steps`` chained checkpoints in one namespace, each with a new blob of channel ``v``, the first blob of
    ``same`` shared by all, and one write."""
    stored: list[dict[str, Any]] = []
    parent: dict[str, Any] | None = None
    for step in range(steps):
        config = generate_config(thread, checkpoint_ns=ns)
        if parent:
            config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
        checkpoint = generate_checkpoint(channel_values={"v": [ns, step], "same": ["kept"]})  # lists go to blobs
        checkpoint["channel_versions"] = {"v": str(step + 1), "same": "1"}
        new_versions = {"v": str(step + 1), **({"same": "1"} if step == 0 else {})}
        parent = await saver.aput(config, checkpoint, generate_metadata(step=step, run_id=f"{run}-{step}"), new_versions)
        await saver.aput_writes(parent, [("w", step)], f"task-{step}")
        stored.append(parent)
    return stored


async def _count(saver: KasloopPostgresSaver, table: str, thread: str) -> int:
    async with saver._cursor() as cur:  # noqa: SLF001
        await cur.execute(f"SELECT count(*) AS n FROM {table} WHERE thread_id = %s", (thread,))
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_prune_keep_keeps_newest_per_namespace_with_their_writes_and_blobs(saver: KasloopPostgresSaver) -> None:
    stored = await _chain(saver, "t", "", 4)
    await _chain(saver, "other", "", 3)
    assert await saver.aprune_keep("t", 2) == 2
    left = [t async for t in saver.alist(generate_config("t"))]
    assert [t.config["configurable"]["checkpoint_id"] for t in left] == [
        stored[3]["configurable"]["checkpoint_id"], stored[2]["configurable"]["checkpoint_id"]
    ]
    assert [t.checkpoint["channel_values"] for t in left] == [{"v": ["", 3], "same": ["kept"]}, {"v": ["", 2], "same": ["kept"]}]
    assert [[w[1:] for w in t.pending_writes or []] for t in left] == [[("w", 3)], [("w", 2)]]
    assert await _count(saver, "checkpoint_writes", "t") == 2
    assert await _count(saver, "checkpoint_blobs", "t") == 3  # v@3, v@4 and the shared "same"@1; v@1, v@2 went
    assert await _count(saver, "checkpoints", "other") == 3 and await _count(saver, "checkpoint_blobs", "other") == 4
    with pytest.raises(ValueError):
        await saver.aprune_keep("t", 0)


async def test_prune_keep_drops_finished_subgraph_runs_but_not_a_paused_one(saver: KasloopPostgresSaver) -> None:
    await _chain(saver, "t", "delegate:1", 2)  # finished: the root saved after it
    await _chain(saver, "t", "", 2)
    await _chain(saver, "t", "delegate:2", 2)  # paused: newer than the root's newest
    assert await saver.aprune_keep("t", 5) == 2
    everything = {"configurable": {"thread_id": "t"}}  # every namespace
    namespaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist(everything)}
    assert namespaces == {"", "delegate:2"}
    assert await _count(saver, "checkpoint_writes", "t") == 4


async def test_delete_for_runs_and_copy_thread(saver: KasloopPostgresSaver) -> None:
    await _chain(saver, "src", "", 3, run="a")
    await saver.acopy_thread("src", "dst")
    copied = [t async for t in saver.alist(generate_config("dst"))]
    assert [t.metadata["run_id"] for t in copied] == ["a-2", "a-1", "a-0"]
    assert copied[0].checkpoint["channel_values"] == {"v": ["", 2], "same": ["kept"]}
    await saver.adelete_for_runs(["a-2"])
    assert [t.metadata["run_id"] async for t in saver.alist(generate_config("src"))] == ["a-1", "a-0"]
    assert [t.metadata["run_id"] async for t in saver.alist(generate_config("dst"))] == ["a-1", "a-0"]
    assert await _count(saver, "checkpoint_writes", "src") == 2 and await _count(saver, "checkpoint_blobs", "src") == 3
