"""KasloopSaver: LangGraph's checkpoint conformance suite, one hop per operation, drop-in with the stock saver's files."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from kasloop import Agent, AgentConfig, Budgets
from kasloop.checkpoints import EventLog, open_database
from kasloop.checkpoints.saver import KasloopSaver
from conftest import assert_conformant, call


async def test_passes_langgraph_checkpoint_conformance_with_all_eight_capabilities(tmp_path: Path) -> None:
    made = {"n": 0}

    async def fresh_saver() -> AsyncIterator[KasloopSaver]:
        made["n"] += 1
        async with open_database(tmp_path / f"conformance{made['n']}.db") as db:
            yield db.saver

    report = await validate(checkpointer_test(name="KasloopSaver")(fresh_saver))
    assert_conformant(report)


def _comparable(t: CheckpointTuple) -> tuple[Any, ...]:
    return (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)


async def _fill(saver: AsyncSqliteSaver, thread: str) -> list[dict[str, Any]]:
    """Three chained checkpoints in two namespaces, with ordinary and special writes."""
    stored: list[dict[str, Any]] = []
    for ns in ("", "child:1"):
        parent: dict[str, Any] | None = None
        for step in range(3):
            config = generate_config(thread, checkpoint_ns=ns)
            if parent:
                config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
            checkpoint = generate_checkpoint(channel_values={"step": step, "text": "é" * step})
            parent = await saver.aput(config, checkpoint, generate_metadata(step=step, run_id=f"run-{step}"), {})
            stored.append(parent)
        await saver.aput_writes(parent, [("b", 2), ("a", {"x": 1})], "task-2", "~__pregel_pull, b")
        await saver.aput_writes(parent, [("a", 1)], "task-1", "~__pregel_pull, a")
        await saver.aput_writes(parent, [("__error__", "boom")], "task-1")
        await saver.aput_writes(parent, [("__error__", "boom again")], "task-1")  # special channel: replaced
        await saver.aput_writes(parent, [("a", 99)], "task-1", "~__pregel_pull, a")  # ordinary: never overwritten
    return stored


async def _everything(saver: AsyncSqliteSaver, thread: str) -> list[tuple[Any, ...]]:
    listed = [_comparable(t) async for t in saver.alist({"configurable": {"thread_id": thread}})]
    latest = [await saver.aget_tuple(generate_config(thread, checkpoint_ns=ns)) for ns in ("", "child:1")]
    return listed + [_comparable(t) for t in latest if t is not None]


@pytest.mark.parametrize("writer", ["stock", "kasloop"])
async def test_reads_exactly_what_the_stock_saver_reads_from_the_same_file(tmp_path: Path, writer: str) -> None:
    """Either saver writes; both read back identical tuples (existing databases keep working, and back)."""
    async with aiosqlite.connect(str(tmp_path / "x.db")) as conn:
        stock, ours = AsyncSqliteSaver(conn), KasloopSaver(conn)
        await stock.setup()
        await _fill(stock if writer == "stock" else ours, "t1")
        await ours.aflush()  # node writes ride with the next unit of work; another saver reads only what is committed
        expected = await _everything(stock, "t1")
        assert len(expected) == 8
        assert await _everything(ours, "t1") == expected
    newest = expected[-2]  # aget_tuple of the root namespace; alist gave child:1's three, then the root's, newest first
    assert newest[1]["channel_values"] == {"step": 2, "text": "éé"} and newest[0] == expected[3][0]
    assert newest[3]["configurable"]["checkpoint_id"] == expected[4][0]["configurable"]["checkpoint_id"]  # parent
    # writes_sort_key order: task path first; the special channel kept its last value, the ordinary one its first
    assert [(task, ch, v) for task, ch, v in newest[4]] == [
        ("task-1", "__error__", "boom again"), ("task-1", "a", 1), ("task-2", "b", 2), ("task-2", "a", {"x": 1})
    ]


async def test_alist_pages_filters_and_limits(tmp_path: Path) -> None:
    async with open_database(tmp_path / "x.db") as db:
        saver = db.saver
        parent: dict[str, Any] | None = None
        ids = []
        for step in range(150):  # more than two of alist's batches
            config = generate_config("long")
            if parent:
                config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
            parent = await saver.aput(config, generate_checkpoint(), generate_metadata(step=step, even=step % 2 == 0), {})
            ids.append(parent["configurable"]["checkpoint_id"])
        everything = [t async for t in saver.alist(generate_config("long"))]
        assert [t.config["configurable"]["checkpoint_id"] for t in everything] == ids[::-1]
        assert [t.metadata["step"] for t in everything[:3]] == [149, 148, 147]
        assert [t.metadata["step"] async for t in saver.alist(None, filter={"even": True}, limit=3)] == [148, 146, 144]
        before = [t async for t in saver.alist(generate_config("long"), before={"configurable": {"checkpoint_id": ids[10]}})]
        assert [t.metadata["step"] for t in before] == list(range(9, -1, -1))
        stopped = saver.alist(generate_config("long"))  # abandoned half-way: the cursor is closed, the connection still works
        assert (await anext(stopped)).metadata["step"] == 149
        await stopped.aclose()
        assert (await saver.aget_tuple(generate_config("long"))).metadata["step"] == 149  # type: ignore[union-attr]


async def test_every_saver_operation_is_one_hop_to_the_database_thread(tmp_path: Path) -> None:
    async with open_database(tmp_path / "x.db") as db:
        conn = db.conn
        real = conn._execute  # noqa: SLF001
        hops = {"n": 0}

        async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            hops["n"] += 1
            return await real(fn, *args, **kwargs)

        conn._execute = counting  # type: ignore[method-assign]  # noqa: SLF001
        stored = await db.saver.aput(generate_config("t"), generate_checkpoint(), generate_metadata(), {})
        await db.saver.aput_writes(stored, [("a", 1), ("b", 2)], "task")
        found = await db.saver.aget_tuple(generate_config("t"))
        assert hops["n"] == 2, "put: one hop; the writes ride with the next unit of work (here the read): no hop of their own"
        assert found is not None and [w[1:] for w in found.pending_writes or []] == [("a", 1), ("b", 2)]


async def test_a_failed_write_leaves_nothing_behind_for_the_next_commit(tmp_path: Path) -> None:
    async with open_database(tmp_path / "x.db") as db:

        def half(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO kasloop_inbox (thread_id, source, text, data, received_at) VALUES ('t', 's', 'x', '{}', 0)")
            raise RuntimeError("half-way")

        with pytest.raises(RuntimeError):
            await db.write(half)
        await db.execute("INSERT INTO kasloop_daemon (name, pid, started_at, heartbeat_at, cycles, errors) VALUES ('d', 1, 0, 0, 0, 0)")
    with sqlite3.connect(tmp_path / "x.db") as raw:
        assert raw.execute("SELECT count(*) FROM kasloop_inbox").fetchone()[0] == 0
        assert raw.execute("SELECT count(*) FROM kasloop_daemon").fetchone()[0] == 1


async def test_an_agent_thread_waits_and_resumes_in_a_new_process_state_through_kasloop_saver(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    (workspace / "old.txt").write_text("x")
    model = script(
        {"tool_calls": [call("files_write", path="a.txt", content="a")]},
        {"tool_calls": [call("files_delete", path="old.txt")]},
        {"content": "cleaned"},
    )
    config = AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace, budgets=Budgets(max_steps=20))
    waiting = await Agent(config, home=tmp_path / ".kasloop").run("write then clean")
    assert waiting.status == "waiting_approval" and (workspace / "old.txt").exists()
    async with open_database(tmp_path / ".kasloop" / "kasloop.db") as db:
        assert isinstance(db.saver, KasloopSaver)
        latest = await db.saver.aget_tuple({"configurable": {"thread_id": waiting.thread, "checkpoint_ns": ""}})
        assert latest is not None and latest.parent_config is not None
        assert any(channel == "__interrupt__" for _, channel, _ in latest.pending_writes or [])
    done = await Agent(config, home=tmp_path / ".kasloop").approve(waiting.approvals[0]["approval_id"])
    assert done.status == "done" and done.output == "cleaned"
    assert (workspace / "a.txt").read_text() == "a" and not (workspace / "old.txt").exists()


async def test_prune_keep_keeps_newest_per_namespace_and_their_writes(tmp_path: Path) -> None:
    async with open_database(tmp_path / "x.db") as db:
        stored = await _fill(db.saver, "t")
        await _fill(db.saver, "other")
        assert await db.saver.aprune_keep("t", 2) == 2
        left = [t.config["configurable"]["checkpoint_id"] async for t in db.saver.alist(generate_config("t", checkpoint_ns=""))]
        assert left == [stored[2]["configurable"]["checkpoint_id"], stored[1]["configurable"]["checkpoint_id"]]
        newest = await db.saver.aget_tuple(generate_config("t"))
        assert newest is not None and len(newest.pending_writes or []) == 4
        assert len([t async for t in db.saver.alist({"configurable": {"thread_id": "other"}})]) == 6
        with pytest.raises(ValueError):
            await db.saver.aprune_keep("t", 0)
        with pytest.raises(ValueError):
            await db.saver.aprune(["t"], strategy="keep_some")



def _event_kinds(db_file: Path) -> list[str]:
    with sqlite3.connect(db_file) as raw:
        return [r[0] for r in raw.execute("SELECT kind FROM kasloop_events ORDER BY id")]


async def test_events_cost_no_hop_of_their_own_and_commit_with_the_next_unit_of_work(tmp_path: Path) -> None:
    file = tmp_path / "x.db"
    async with open_database(file) as db:
        log = EventLog(db)
        await log.append("t", 1, "perceive", observation="o")
        await log.append("t", 1, "decide", content="c")
        assert _event_kinds(file) == []  # queued, not yet a hop nor a commit
        stored = await db.saver.aput(generate_config("t"), generate_checkpoint(), generate_metadata(), {})
        assert _event_kinds(file) == ["perceive", "decide"]  # committed with the checkpoint
        await log.append("t", 2, "tool", ok=True)
        assert [e["kind"] for e in await log.history("t")] == ["perceive", "decide", "tool"]  # reads see their own rows
        await log.append("t", 2, "after_failure")

        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO writes (thread_id) VALUES ('only one column')")  # NOT NULL constraints fail

        with pytest.raises(sqlite3.IntegrityError):
            await db.saver._write(broken)  # noqa: SLF001
        assert _event_kinds(file)[-1] == "after_failure"  # a failed write does not take queued rows down with it
        await db.saver.aput_writes(stored, [("a", 1)], "task")
        await log.append("t", 3, "last_words")
    assert _event_kinds(file)[-1] == "last_words"  # closing the database commits what is queued


async def test_queued_events_are_committed_when_the_work_fails(tmp_path: Path) -> None:
    file = tmp_path / "x.db"
    with pytest.raises(RuntimeError):
        async with open_database(file) as db:
            await EventLog(db).append("t", 1, "error", message="boom")
            raise RuntimeError("the caller failed")
    assert _event_kinds(file) == ["error"]


def test_the_message_cache_writes_exactly_the_stock_bytes() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from kasloop.checkpoints.serde import MessageCachingSerializer

    ours, stock = MessageCachingSerializer(), JsonPlusSerializer()
    messages = [
        HumanMessage("goal", id="h"),
        AIMessage("", tool_calls=[{"name": "files_write", "args": {"path": "a"}, "id": "c1"}], id="a"),
        ToolMessage("ok", tool_call_id="c1", id="t"),
    ]
    state = {"messages": messages, "usage": {"steps": 1}, "summary": "é"}
    first = ours.dumps_typed(state)
    assert first == stock.dumps_typed(state) == ours.dumps_typed(state), "cached or not, the bytes are the stock ones"
    assert ours.loads_typed(first)["messages"] == messages
    messages[2] = ToolMessage("changed", tool_call_id="c1", id="t")
    assert ours.dumps_typed(state) == stock.dumps_typed(state), "a replaced message is encoded anew"
