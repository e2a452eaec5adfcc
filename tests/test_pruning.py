"""Checkpoint pruning keeps K checkpoints per thread while it runs; resume and approvals still work."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kasloop import Agent, AgentConfig, Budgets
from kasloop.checkpoints import open_database
from kasloop.checkpoints.pruning import prune_thread
from kasloop.checkpoints.database import is_postgres_url
from conftest import call, query

KEEP = 4


# Every test runs on both backends (``db_url``: a SQLite file, or a fresh database on the test PostgreSQL).
pytestmark = pytest.mark.usefixtures("db_url")


def counts(db: str | Path, thread: str) -> tuple[int, int]:
    """(checkpoints of the thread, writes left without their checkpoint)."""
    writes_table = "checkpoint_writes" if is_postgres_url(db) else "writes"  # LangGraph's Postgres saver's name
    [(checkpoints,)] = query(db, f"SELECT count(*) FROM checkpoints WHERE thread_id = '{thread}'")
    [(orphans,)] = query(
        db, f"SELECT count(*) FROM {writes_table} w WHERE thread_id = '{thread}' AND NOT EXISTS (SELECT 1 FROM checkpoints c"
        " WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id)",
    )
    return int(checkpoints), int(orphans)


def agent_at(tmp_path: Path, config: AgentConfig) -> Agent:
    return Agent(config, home=tmp_path / ".kasloop", db=os.environ["KASLOOP_TEST_DB"])


def writes(n: int) -> list[dict[str, object]]:
    return [{"tool_calls": [call("files_write", path=f"f{i}.txt", content=str(i))]} for i in range(n)]


async def test_a_long_thread_keeps_k_checkpoints_and_continues_after_pruning(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    model = script(*writes(40), {"content": "forty files"}, {"tool_calls": [call("files_read", path="f39.txt")]}, {"content": "read it"})
    config = AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace, keep_checkpoints=KEEP, budgets=Budgets(max_steps=100))
    agent = agent_at(tmp_path, config)
    first = await agent.run("write forty files")
    assert first.status == "done" and first.output == "forty files" and len(list(workspace.glob("f*.txt"))) == 40
    assert counts(agent.db_path, first.thread) == (KEEP, 0)
    again = await agent.run("read the last one", thread_id=first.thread)  # continues from the kept checkpoint
    assert again.status == "done" and again.output == "read it"
    assert counts(agent.db_path, first.thread) == (KEEP, 0)


async def test_a_pending_approval_survives_pruning(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "old.txt").write_text("x")
    model = script(*writes(20), {"tool_calls": [call("files_delete", path="old.txt")]}, {"content": "cleaned"})
    config = AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace, keep_checkpoints=2, budgets=Budgets(max_steps=100))
    agent = agent_at(tmp_path, config)
    waiting = await agent.run("write then clean")
    assert waiting.status == "waiting_approval" and counts(agent.db_path, waiting.thread)[0] == 2
    done = await agent.approve(waiting.approvals[0]["approval_id"])
    assert done.status == "done" and not (workspace / "old.txt").exists()


async def test_prune_thread_touches_only_that_thread(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = agent_at(tmp_path, AgentConfig(autonomy=4, model=script(*writes(5), {"content": "ok"}), tools=["files"], workspace=workspace, keep_checkpoints=100))
    a = await agent.run("a", thread_id="a")
    b = await agent.run("b", thread_id="b")
    before_b = counts(agent.db_path, b.thread)
    async with open_database(agent.db_path) as db:
        assert await prune_thread(db, a.thread, 1) > 0
    assert counts(agent.db_path, a.thread) == (1, 0) and counts(agent.db_path, b.thread) == before_b


async def test_event_retention_keeps_the_newest_rows_and_never_rewrites_one(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    config = AgentConfig(
        autonomy=4, model=script(*writes(60), {"content": "done"}), tools=["files"], workspace=workspace,
        events_keep_last=100, budgets=Budgets(max_steps=None),
    )
    agent = agent_at(tmp_path, config)
    result = await agent.run("write sixty files", thread_id="kept")
    events = await agent.history("kept")
    assert result.status == "done" and len(events) == 100
    assert events[-1]["kind"] == "decide" and events[-1]["content"] == "done", "the newest rows are the ones kept"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and ids[-1] - ids[0] == 99, "whole rows go, oldest first; the rest are untouched"


async def test_event_retention_by_age_only_touches_old_rows_of_that_thread(tmp_path: Path) -> None:
    from kasloop.checkpoints import EventLog
    from kasloop.checkpoints.pruning import prune_events

    async with open_database(os.environ["KASLOOP_TEST_DB"]) as db:
        log = EventLog(db)
        for thread in ("a", "b"):
            await log.append(thread, 1, "perceive", n=1)
        await db.execute("INSERT INTO kasloop_events (thread_id, ts, step, kind, data) VALUES ('a', 1000.0, 0, 'goal', '{}')")
        assert await prune_events(db, "a", keep_days=1, keep_last=None) == 1
        assert [e["kind"] for e in await log.history("a")] == ["perceive"]
        assert len(await log.history("b")) == 1
        assert await prune_events(db, "a", keep_days=None, keep_last=None) == 0
