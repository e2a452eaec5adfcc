"""Approval requests expire: deciding an expired one is refused and logged; resume and the daemon reject it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kasloop import Agent, AgentConfig, ApprovalError
from kasloop.checkpoints import ApprovalStore, open_database
from kasloop.runtime.daemon import Daemon
from conftest import call

EXPIRED_AT_ONCE = 1e-6  # seconds: a request is expired by the time the run has returned


def agent_for(tmp_path: Path, workspace: Path, model: str, **config: object) -> Agent:
    return Agent(AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace, **config), home=tmp_path / ".kasloop")  # type: ignore[arg-type]


async def statuses(agent: Agent, approval_id: str) -> str:
    async with open_database(agent.db_path) as db:
        record = await ApprovalStore(db).get(approval_id)
    assert record is not None
    return record["status"]


@pytest.fixture
def waiting(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> Callable[..., tuple[Agent, str, str]]:
    (workspace / "old.txt").write_text("keep me unless approved")

    async def make(**config: object) -> tuple[Agent, str, str]:
        model = script({"tool_calls": [call("files_delete", path="old.txt")]}, {"content": "left old.txt alone"})
        agent = agent_for(tmp_path, workspace, model, approval_ttl=EXPIRED_AT_ONCE, **config)
        result = await agent.run("delete old.txt")
        assert result.status == "waiting_approval"
        return agent, result.thread, result.approvals[0]["approval_id"]

    return make  # type: ignore[return-value]


async def test_approving_an_expired_request_is_refused_and_logged(waiting: Callable[..., object], workspace: Path) -> None:
    agent, thread, approval = await waiting()  # type: ignore[misc]
    with pytest.raises(ApprovalError, match="expired at .*kasloop resume"):
        await agent.approve(approval)
    assert (workspace / "old.txt").exists() and await statuses(agent, approval) == "pending"
    refused = [e for e in await agent.history(thread) if e["kind"] == "approval_refused"]
    assert [(e["approval_id"], e["reason"]) for e in refused] == [(approval, "expired")]


async def test_resume_rejects_an_expired_request_and_the_model_plans_again(waiting: Callable[..., object], workspace: Path) -> None:
    agent, thread, approval = await waiting()  # type: ignore[misc]
    result = await agent.resume(thread)
    assert result.status == "done" and result.output == "left old.txt alone"
    assert (workspace / "old.txt").exists(), "an expired request never runs"
    assert await statuses(agent, approval) == "rejected"
    decisions = [e for e in await agent.history(thread) if e["kind"] == "approval_decision"]
    assert [(e["decision"], e["by"], e["channel"]) for e in decisions] == [("reject", "kasloop", "expiry")]


async def test_the_daemon_applies_expiry(waiting: Callable[..., object], workspace: Path) -> None:
    agent, thread, approval = await waiting()  # type: ignore[misc]
    assert await Daemon(agent.sessions, interval=1).run(once=True) == 0
    assert await statuses(agent, approval) == "rejected"
    assert (await agent.status(thread))[0]["status"] == "done" and (workspace / "old.txt").exists()


async def test_keep_leaves_an_expired_request_to_a_human(waiting: Callable[..., object], workspace: Path) -> None:
    agent, thread, approval = await waiting(approval_expiry="keep")  # type: ignore[misc]
    still = await agent.resume(thread)
    assert still.status == "waiting_approval" and await statuses(agent, approval) == "pending"
    done = await agent.approve(approval)
    assert done.status == "done" and not (workspace / "old.txt").exists()
