"""Approvals through the Python API: approve, edit, reject, respond, batches, stale and unknown ids."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage

from kasloop import Agent, AgentConfig, ApprovalError
from kasloop.guardrails.policy import arg_hash
from conftest import call, fingerprint, state_of


# Every test runs on both backends (``db_url``: a SQLite file, or a fresh database on the test PostgreSQL).
pytestmark = pytest.mark.usefixtures("db_url")


def make_agent(tmp_path: Path, workspace: Path, model: str, autonomy: int = 3) -> Agent:
    config = AgentConfig(autonomy=autonomy, model=model, tools=["files"], workspace=workspace)
    return Agent(config, home=tmp_path / ".kasloop", db=os.environ["KASLOOP_TEST_DB"])


async def tool_messages(agent: Agent, thread: str) -> list[ToolMessage]:
    return [m for m in (await state_of(agent, thread))["messages"] if isinstance(m, ToolMessage)]


async def test_approve_runs_the_call_once(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "old.txt").write_text("x")
    agent = make_agent(tmp_path, workspace, script(
        {"content": "delete", "tool_calls": [call("files_delete", path="old.txt")]},
        {"content": "deleted"},
    ))
    result = await agent.run("remove old.txt")
    assert result.status == "waiting_approval" and result.exit_code == 10
    [request] = result.approvals
    assert request["tool"] == "files_delete" and request["risk"] == "high"
    assert request["arg_hash"] == arg_hash("files_delete", {"path": "old.txt"})
    assert (workspace / "old.txt").exists(), "nothing runs before approval"
    assert await agent.approvals() == [request]
    done = await agent.approve(request["approval_id"])
    assert done.status == "done" and done.output == "deleted" and done.exit_code == 0
    assert not (workspace / "old.txt").exists()
    assert await agent.approvals() == []
    kinds = [e["kind"] for e in await agent.history(done.thread)]
    assert kinds.count("approval_requested") == 1 and kinds.count("approval_decision") == 1
    decision = next(e for e in await agent.history(done.thread) if e["kind"] == "approval_decision")
    assert decision["decision"] == "approve" and decision["arg_hash"] == request["arg_hash"] and decision["by"]


async def test_edit_runs_new_args_and_records_new_hash(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "keep.txt").write_text("k")
    (workspace / "junk.txt").write_text("j")
    agent = make_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_delete", path="keep.txt")]},
        {"content": "ok"},
    ))
    result = await agent.run("clean up")
    done = await agent.approve(result.approvals[0]["approval_id"], edit={"path": "junk.txt"})
    assert done.status == "done"
    assert (workspace / "keep.txt").exists() and not (workspace / "junk.txt").exists()
    decision = next(e for e in await agent.history(done.thread) if e["kind"] == "approval_decision")
    assert decision["decision"] == "edit"
    assert decision["new_arg_hash"] == arg_hash("files_delete", {"path": "junk.txt"}) != decision["arg_hash"]
    tool_event = next(e for e in await agent.history(done.thread) if e["kind"] == "tool" and e["tool"] == "files_delete")
    assert tool_event["arg_hash"] == decision["new_arg_hash"]


async def test_reject_reason_reaches_the_model(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("a")
    agent = make_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_delete", path="a.txt")]},
        {"content": "understood, kept it"},
    ))
    result = await agent.run("tidy")
    done = await agent.reject(result.approvals[0]["approval_id"], "that file is needed by payroll")
    assert done.status == "done" and (workspace / "a.txt").exists()
    [message] = await tool_messages(agent, done.thread)
    assert "that file is needed by payroll" in message.content and "Rejected" in message.content


async def test_respond_gives_text_instead_of_running(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("a")
    agent = make_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_delete", path="a.txt")]},
        {"content": "ok"},
    ))
    result = await agent.run("tidy")
    done = await agent.respond(result.approvals[0]["approval_id"], "already archived, no need")
    assert done.status == "done" and (workspace / "a.txt").exists()
    [message] = await tool_messages(agent, done.thread)
    assert "already archived, no need" in message.content


async def test_several_calls_are_decided_together_each_on_its_own(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    for name in ("a.txt", "b.txt"):
        (workspace / name).write_text(name)
    agent = make_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_delete", path="a.txt"), call("files_delete", path="b.txt"), call("files_write", path="c.txt", content="c")]},
        {"content": "done"},
    ))
    result = await agent.run("tidy")
    assert [a["args"]["path"] for a in result.approvals] == ["a.txt", "b.txt"]
    assert not (workspace / "c.txt").exists(), "the allowed call waits with the batch"
    first = await agent.approve(result.approvals[0]["approval_id"])
    assert first.status == "waiting_approval" and [a["args"]["path"] for a in first.approvals] == ["b.txt"]
    assert (workspace / "a.txt").exists(), "nothing runs until every request of the step is decided"
    done = await agent.reject(result.approvals[1]["approval_id"], "keep b")
    assert done.status == "done"
    assert not (workspace / "a.txt").exists() and (workspace / "b.txt").exists() and (workspace / "c.txt").read_text() == "c"


async def test_unknown_and_already_decided_ids_are_refused_without_changes(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("a")
    agent = make_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_delete", path="a.txt")]},
        {"content": "", "tool_calls": [call("files_delete", path="a.txt")]},
        {"content": "done"},
    ))
    result = await agent.run("tidy")
    before = fingerprint(agent.db_path)
    with pytest.raises(ApprovalError, match="No approval `ap-nope`"):
        await agent.approve("ap-nope")
    with pytest.raises(ApprovalError, match="invalid"):
        await agent.approve(result.approvals[0]["approval_id"], edit={"path": 42})
    assert fingerprint(agent.db_path) == before
    old_id = result.approvals[0]["approval_id"]
    again = await agent.reject(old_id, "no")
    assert again.status == "waiting_approval" and again.approvals[0]["approval_id"] != old_id
    with pytest.raises(ApprovalError, match="is rejected, not pending"):
        await agent.approve(old_id)


async def test_sync_twins_refuse_inside_a_running_loop(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = make_agent(tmp_path, workspace, script({"content": "done"}))
    from kasloop import UsageError

    with pytest.raises(UsageError, match="use `await agent.run"):
        agent.run_sync("x")


def test_sync_twin_runs_outside_a_loop(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = make_agent(tmp_path, workspace, script({"content": "", "tool_calls": [call("files_write", path="s.txt", content="sync")]}, {"content": "done"}))
    result = agent.run_sync("write s.txt")
    assert result.status == "done" and (workspace / "s.txt").read_text() == "sync"
