"""One approvals module: typed refusals, one check for every resume, standing rules from typed decisions, budgets.

Issue 16, item 2. Each refusal has a positive control: the same request with
the right decision does go through, so a refusal here is the check, not a
broken setup. Real SQLite and real local servers only.
"""

from __future__ import annotations

import re

import pickle
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.types import Command

from kasloop import Agent, AgentConfig, Budgets, build_graph
from kasloop.guardrails.approvals import Approve, Reject, approval_json, bind_decision
from kasloop.checkpoints import ApprovalStore, open_database
from kasloop.errors import ApprovalAlreadyDecided, ApprovalError, ApprovalExpired, ApprovalStale
from kasloop.graphs.agent import context_for
from kasloop.guardrails.policy import arg_hash
from kasloop.tools.registry import select_tools
from approval_receivers import served_receiver, signed
from conftest import call, fingerprint

SECRET = "approval-webhook-secret-for-lifecycle-tests"


def deleting(script: Callable[..., str], *paths: str) -> str:
    """A model that deletes ``paths`` one call per turn (files_delete is high risk: asked at level 3), then says done."""
    return script(*({"content": "", "tool_calls": [call("files_delete", path=p)]} for p in paths), {"content": "done"})


def agent_for(tmp_path: Path, workspace: Path, model: str, **config: Any) -> Agent:
    return Agent(AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace, **config), home=tmp_path / ".kasloop")


async def refusals(agent: Agent, thread: str) -> list[str]:
    return [e["reason"] for e in await agent.history(thread) if e["kind"] == "approval_refused"]


# --------------------------------------------------------------------------- typed refusals


def test_refusals_are_approval_errors_that_pickle_as_themselves() -> None:
    for cls in (ApprovalAlreadyDecided, ApprovalExpired, ApprovalStale):
        err = pickle.loads(pickle.dumps(cls("Approval `ap-1` says why.")))
        assert type(err) is cls and isinstance(err, ApprovalError) and err.message == "Approval `ap-1` says why." and err.exit_code == 2


async def test_each_refusal_has_its_type_and_its_message(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("a")
    agent = agent_for(tmp_path, workspace, deleting(script, "a.txt", "a.txt"))
    request = (await agent.run("tidy", thread_id="t")).approvals[0]
    before = fingerprint(agent.db_path)
    with pytest.raises(ApprovalError, match="No approval `ap-nope`") as unknown:
        await agent.approve("ap-nope")
    assert type(unknown.value) is ApprovalError
    with pytest.raises(ApprovalStale, match=r"was made for other arguments \(arg_hash mismatch\); it is stale"):
        await agent.decide(request["approval_id"], Approve(arg_hash="0" * 64))
    with pytest.raises(ApprovalError, match="Edited arguments for `files_delete` are invalid") as invalid:
        await agent.approve(request["approval_id"], edit={"path": 42})
    assert type(invalid.value) is ApprovalError
    assert fingerprint(agent.db_path) == before, "nothing written by a refusal"

    again = await agent.decide(request["approval_id"], Reject(reason="no", arg_hash=request["arg_hash"]))  # positive control
    assert again.status == "waiting_approval" and again.approvals[0]["approval_id"] != request["approval_id"]
    with pytest.raises(ApprovalAlreadyDecided, match="is rejected, not pending"):
        await agent.approve(request["approval_id"])


async def test_an_expired_request_raises_approval_expired(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("a")
    agent = agent_for(tmp_path, workspace, deleting(script, "a.txt"), approval_ttl=1e-6)  # expired by the time run returns
    approval = (await agent.run("tidy", thread_id="t")).approvals[0]["approval_id"]
    with pytest.raises(ApprovalExpired, match="expired at .*kasloop resume t"):
        await agent.approve(approval)
    assert await refusals(agent, "t") == ["expired"]
    done = await agent.resume("t")  # positive control of the lifecycle: kasloop rejects it itself
    assert done.status == "done" and (workspace / "a.txt").exists()
    [decision] = [e for e in await agent.history("t") if e["kind"] == "approval_decision"]
    assert (decision["decision"], decision["by"], decision["channel"], decision["new_arg_hash"]) == ("reject", "kasloop", "expiry", None)


async def test_a_budget_a_person_raises_answers_the_request_that_waits_for_it(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    writes = [{"content": "", "tool_calls": [call("files_write", path=f"f{i}.txt", content="x")]} for i in range(2)]
    agent = agent_for(tmp_path, workspace, script(*writes, {"content": "two"}), budgets=Budgets(max_steps=None, max_tool_calls=1))
    [request] = (await agent.run("write two files", thread_id="t")).approvals
    await agent.set_budget("t", max_tool_calls=5, by="ops")
    with pytest.raises(ApprovalAlreadyDecided, match="is edited, not pending"):
        await agent.approve(request["approval_id"])
    [decision] = [e for e in await agent.history("t") if e["kind"] == "approval_decision"]
    assert (decision["approval_id"], decision["decision"], decision["by"], decision["channel"]) == (request["approval_id"], "edit", "ops", "budget")
    assert (await agent.resume("t")).status == "done", "the raised budget lets it finish"


# --------------------------------------------------------------------------- channels branch on the type


@asynccontextmanager
async def receiver(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    monkeypatch.setenv("KASLOOP_APPROVAL_WEBHOOK_SECRET", SECRET)
    async with served_receiver(agent) as base, httpx.AsyncClient() as client:
        yield client, f"{base}/approvals"


async def test_the_webhook_logs_the_checks_reason_and_an_expiry_once(
    tmp_path: Path, workspace: Path, script: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "a.txt").write_text("a")
    expiring = agent_for(tmp_path / "e", workspace, deleting(script, "a.txt"), approval_ttl=1e-6)
    approval = (await expiring.run("tidy", thread_id="t")).approvals[0]["approval_id"]
    async with receiver(expiring, monkeypatch) as (client, url):
        body, headers = signed({"approval_id": approval, "decision": "approve"}, "cb-1", secret=SECRET)
        answer = await client.post(url, content=body, headers=headers)
    assert answer.status_code == 409 and "expired at" in answer.json()["error"]
    assert await refusals(expiring, "t") == ["expired"], "logged once, by the check"

    decided = agent_for(tmp_path / "d", workspace, deleting(script, "a.txt"))
    approval = (await decided.run("tidy", thread_id="t")).approvals[0]["approval_id"]
    await decided.reject(approval, "no", resume=False)
    async with receiver(decided, monkeypatch) as (client, url):
        body, headers = signed({"approval_id": approval, "decision": "approve"}, "cb-2", secret=SECRET)
        answer = await client.post(url, content=body, headers=headers)
    assert answer.status_code == 409
    assert await refusals(decided, "t") == [answer.json()["error"]], "the refusal says why (not 'replayed callback')"
    assert "is rejected, not pending" in answer.json()["error"]


# --------------------------------------------------------------------------- one check for every resume


def graph_run(workspace: Path, model: str, db: Any, thread: str = "g") -> tuple[Any, dict[str, Any], Any]:
    config = AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace)
    graph = build_graph(config, checkpointer=db.saver)
    return graph, {"configurable": {"thread_id": thread}}, context_for(config, thread, select_tools(config.tools))


GOAL = {"messages": [HumanMessage("tidy")], "goals": [{"id": "g1", "text": "tidy", "status": "open"}]}


@pytest.mark.parametrize(
    ("resume", "error", "match"),
    [
        ({"decision": "approve", "arg_hash": "0" * 64}, ApprovalStale, "arg_hash mismatch"),
        ({"decision": "edit", "args": {"path": 42}}, ApprovalError, "Edited arguments for `files_delete` are invalid"),
        ({"decision": "edit", "args": {"path": "junk.txt"}, "arg_hash": "1" * 64}, ApprovalStale, "arg_hash mismatch"),
        ({"decision": "approved"}, ApprovalError, "is not one of approve, edit, reject, respond"),
    ],
    ids=["stale-approve", "edit-against-the-schema", "edit-bound-to-other-args", "not-a-decision"],
)
async def test_a_resume_straight_into_the_graph_is_held_to_the_same_check(
    tmp_path: Path, workspace: Path, script: Callable[..., str], resume: dict[str, Any], error: type[ApprovalError], match: str
) -> None:
    """What LangGraph Studio does: ``Command(resume=...)`` with no approvals table in between.

    A refused resume does not stick: the thread pauses again on the same request, saying why, and
    the next resume value answers it.
    """
    (workspace / "keep.txt").write_text("k")
    (workspace / "junk.txt").write_text("j")
    async with open_database(tmp_path / "graph.db") as db:
        graph, cfg, context = graph_run(workspace, deleting(script, "keep.txt"), db, "refused")
        await graph.ainvoke(GOAL, cfg, context=context)
        [first] = (await graph.aget_state(cfg)).interrupts
        await graph.ainvoke(Command(resume=resume), cfg, context=context)
        assert (workspace / "keep.txt").exists() and (workspace / "junk.txt").exists()
        [again] = (await graph.aget_state(cfg)).interrupts
        assert again.value["requests"] == first.value["requests"], "the same request waits"
        assert again.value["error"] == error.__name__ and re.search(match, again.value["refused"]), again.value
        out = await graph.ainvoke(Command(resume={"decision": "reject", "reason": "not that one"}), cfg, context=context)
        assert out["status"] == "done" and (workspace / "keep.txt").exists(), "the next resume answers the new pause"

        # Positive control: the edit kasloop's check records (bound to the hash of its new arguments) runs.
        graph, cfg, context = graph_run(workspace, deleting(script, "keep.txt"), db, "decided")
        await graph.ainvoke(GOAL, cfg, context=context)
        [request] = (await graph.aget_state(cfg)).interrupts[0].value["requests"]
        assert request["arg_hash"] == arg_hash("files_delete", {"path": "keep.txt"})
        new_hash = arg_hash("files_delete", {"path": "junk.txt"})
        out = await graph.ainvoke(Command(resume={"decision": "edit", "args": {"path": "junk.txt"}, "arg_hash": new_hash}), cfg, context=context)
    assert out["status"] == "done" and (workspace / "keep.txt").exists() and not (workspace / "junk.txt").exists()


def test_bind_decision_is_the_one_place_hashes_are_bound() -> None:
    request = {"approval_id": "ap-1", "kind": "tool_call", "tool": "files_delete", "arg_hash": "h-old", "args": {"path": "a"}}
    tools = select_tools(["files"])
    assert bind_decision(request, {"decision": "approve"}, None).stored == {"decision": "approve", "arg_hash": "h-old"}
    edited = bind_decision(request, {"decision": "edit", "args": {"path": "b"}, "always": True}, tools["files_delete"])
    assert edited.stored == {"decision": "edit", "args": {"path": "b"}, "arg_hash": arg_hash("files_delete", {"path": "b"})}
    assert edited.rule == "allow", "always is not stored: it becomes a standing rule"
    again = bind_decision(request, edited.stored, tools["files_delete"])  # a recorded edit, bound again by the node
    assert again.stored == edited.stored
    assert bind_decision(request, {"decision": "reject", "never": True}, None).rule == "deny"
    escalation = {**request, "kind": "escalation", "tool": "(model)", "arg_hash": ""}
    with pytest.raises(ApprovalError, match="not a tool call; edit is only for tool calls"):
        bind_decision(escalation, {"decision": "edit", "args": {}}, None)
    with pytest.raises(ApprovalError, match="need a pending tool call"):
        bind_decision(escalation, {"decision": "approve", "always": True}, None)


def test_approval_json_is_one_shape_whatever_it_is_made_from() -> None:
    record = {
        "approval_id": "ap-1", "thread": "t", "batch_id": "b", "call_id": "c", "kind": "tool_call", "tool": "files_delete",
        "args": {"path": "a"}, "risk": "high", "reason": "r", "arg_hash": "h", "status": "pending", "decision": None,
        "created_at": 1.0, "expires_at": 2.0, "decided_at": None, "decided_by": None, "channel": None, "path": "",
    }
    shown = approval_json(record)
    assert list(shown) == ["approval_id", "thread", "tool", "args", "risk", "reason", "arg_hash", "created_at", "expires_at", "kind", "path"]
    assert approval_json(shown) == shown


# --------------------------------------------------------------------------- dead fields used or gone


async def test_always_on_a_typed_decision_adds_the_standing_rule(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    for name in ("a.txt", "b.txt"):
        (workspace / name).write_text(name)
    agent = agent_for(tmp_path, workspace, deleting(script, "a.txt", "b.txt"))
    [request] = (await agent.run("tidy", thread_id="t")).approvals
    done = await agent.decide(request["approval_id"], {"decision": "approve", "always": True})
    assert done.status == "done" and not (workspace / "b.txt").exists(), "the second delete ran without asking"
    assert [(r["tool"], r["action"]) for r in await agent.rules()] == [("files_delete", "allow")]
    async with open_database(agent.db_path) as db:
        stored = await ApprovalStore(db).get(request["approval_id"])
    assert stored is not None and stored["decision"] is not None and "always" not in stored["decision"]


async def test_budget_decisions_pass_the_one_check_and_are_recorded_like_any_other(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    writes = [{"content": "", "tool_calls": [call("files_write", path=f"f{i}.txt", content="x")]} for i in range(2)]
    agent = agent_for(tmp_path, workspace, script(*writes, {"content": "two"}), budgets=Budgets(max_steps=None, max_tool_calls=1))
    [request] = (await agent.run("write two files", thread_id="t")).approvals
    before = fingerprint(agent.db_path)
    with pytest.raises(ApprovalError, match="A budget request takes approve"):
        await agent.respond(request["approval_id"], "carry on")
    with pytest.raises(ApprovalError, match="must be a number above what is used"):
        await agent.approve(request["approval_id"], edit={"value": 1})
    with pytest.raises(ApprovalError, match="need a pending tool call"):
        await agent.approve(request["approval_id"], always=True)
    assert fingerprint(agent.db_path) == before
    done = await agent.approve(request["approval_id"], edit={"value": 5}, by="ops")  # positive control
    assert done.status == "done" and len(list(workspace.glob("f*.txt"))) == 2
    [decision] = [e for e in await agent.history("t") if e["kind"] == "approval_decision"]
    assert (decision["decision"], decision["by"], decision["arg_hash"], decision["new_arg_hash"]) == ("edit", "ops", request["arg_hash"], None)
    assert (await agent.status("t"))[0]["budgets"]["max_tool_calls"] == 5


async def test_a_stored_call_with_the_removed_decision_note_still_loads_and_runs(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    """Threads checkpointed before ``PendingCall.decision_note`` went may hold it: state is plain dicts, never validated."""
    (workspace / "a.txt").write_text("a")
    async with open_database(tmp_path / "graph.db") as db:
        graph, cfg, context = graph_run(workspace, deleting(script, "a.txt"), db)
        await graph.ainvoke(GOAL, cfg, context=context)
        pending = (await graph.aget_state(cfg)).values["pending"]
        await graph.aupdate_state(cfg, {"pending": [{**c, "decision_note": "from an older kasloop"} for c in pending]}, as_node="decide")
        await graph.ainvoke(None, cfg, context=context)  # asks again for the same call
        assert [c["decision_note"] for c in (await graph.aget_state(cfg)).values["pending"]] == ["from an older kasloop"]
        out = await graph.ainvoke(Command(resume={"decision": "approve"}), cfg, context=context)
    assert out["status"] == "done" and not (workspace / "a.txt").exists()
    assert any(isinstance(m, ToolMessage) and m.status != "error" for m in out["messages"])
