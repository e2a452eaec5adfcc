"""Hard budgets: checked before every model and tool call, never exceeded by more than one call, raised only by people."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.types import Command

from kasloop import Agent, AgentConfig, Budgets, ConfigError, build_graph
from kasloop.checkpoints import ApprovalStore, ThreadStore, open_database
from kasloop.checkpoints.threads import policy_row
from kasloop.config.schema import ModelPrice
from kasloop.errors import ApprovalAlreadyDecided
from kasloop.graphs.agent import context_for
from kasloop.state import new_task
from kasloop.tools.registry import select_tools
from conftest import CLIResult, call

PRICE = {"scripted": ModelPrice(input=1000.0, output=1000.0)}  # 0.001 USD per token: easy to see


def writes(n: int) -> list[dict[str, Any]]:
    return [{"content": "", "tool_calls": [call("files_write", path=f"f{i}.txt", content=f"file {i}")]} for i in range(n)]


def agent_for(tmp_path: Path, workspace: Path, model: str, autonomy: int = 4, **budgets: Any) -> Agent:
    config = AgentConfig(
        autonomy=autonomy, model=model, tools=["files"], workspace=workspace, prices=PRICE,
        budgets=Budgets(max_steps=None, **budgets),
    )
    return Agent(config, home=tmp_path / ".kasloop")


async def call_costs(agent: Agent, thread: str) -> list[float]:
    return [e["usd"] for e in await agent.history(thread) if e["kind"] == "decide"]


async def test_a_usd_budget_stops_before_the_call_that_would_exceed_it_and_resume_after_raising_completes(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    model = script(*writes(6), {"content": "six files"})
    (tmp_path / "free").mkdir()
    baseline = agent_for(tmp_path / "b", tmp_path / "free", model)
    full = await baseline.run("write six files", thread_id="free")
    costs = await call_costs(baseline, "free")
    assert full.status == "done" and len(costs) == 7 and full.usage["usd"] == pytest.approx(sum(costs))
    limit = sum(costs[:3]) + costs[3] / 2  # three calls fit; the fourth would cross the limit

    agent = agent_for(tmp_path, workspace, model, max_usd=limit)
    paused = await agent.run("write six files", thread_id="capped")
    assert paused.status == "paused_budget" and paused.exit_code == 11
    assert paused.usage["usd"] <= limit and paused.usage["model_calls"] == 3, "stopped before the fourth call, not after it"
    assert "budgets.max_usd" in paused.output and "kasloop budget" in paused.output
    assert not (workspace / "f3.txt").exists()
    [budget_event] = [e for e in await agent.history("capped") if e["kind"] == "budget"]
    assert budget_event["limit"] == "max_usd" and budget_event["used"] + budget_event["next_cost"] > limit

    assert (await agent.resume("capped")).status == "paused_budget", "resuming without raising it stays paused"
    await agent.set_budget("capped", max_usd=1000.0)
    done = await agent.resume("capped")
    assert done.status == "done" and done.output == "six files" and len(list(workspace.glob("f*.txt"))) == 6
    assert done.usage["model_calls"] == 7


async def test_token_and_tool_call_budgets_pause_and_resume_exactly_where_they_stopped(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    three = {"content": "", "tool_calls": [call("files_append", path="log.txt", content=c) for c in "abc"]}
    agent = agent_for(tmp_path, workspace, script(three, {"content": "logged"}), max_tool_calls=2)
    paused = await agent.run("log three letters", thread_id="t")
    assert paused.status == "paused_budget" and (workspace / "log.txt").read_text() == "ab"
    await agent.set_budget("t", max_tool_calls=3)
    done = await agent.resume("t")
    assert done.status == "done" and (workspace / "log.txt").read_text() == "abc", "the call left pending ran once, on resume"
    assert done.usage["model_calls"] == 2, "no model call was repeated"

    tokens = agent_for(tmp_path / "tok", workspace, script(*writes(3), {"content": "done"}), max_tokens=10)
    result = await tokens.run("write")
    assert result.status == "paused_budget" and result.usage["model_calls"] == 0 and "max_tokens" in result.output


async def test_at_level_3_a_budget_pause_asks_a_human_to_raise_it(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = agent_for(tmp_path, workspace, script(*writes(3), {"content": "three"}), autonomy=3, max_tool_calls=1)
    paused = await agent.run("write three files", thread_id="t")
    assert paused.status == "paused_budget" and paused.exit_code == 11
    [request] = paused.approvals
    assert request["kind"] == "budget" and request["args"]["limit"] == "max_tool_calls" and request["args"]["proposed"] == 2
    assert (await agent.approvals("t")) == paused.approvals, "the request is listed like any approval"

    again = await agent.approve(request["approval_id"])
    assert again.status == "paused_budget", "raised to 2: the second call runs, the third pauses again"
    assert len(list(workspace.glob("f*.txt"))) == 2
    [second] = again.approvals
    assert second["approval_id"] != request["approval_id"]
    done = await agent.approve(second["approval_id"], edit={"value": 10})
    assert done.status == "done" and len(list(workspace.glob("f*.txt"))) == 3

    agent2 = agent_for(tmp_path / "r", workspace / "r", script(*writes(3), {"content": "three"}), autonomy=3, max_tool_calls=1)
    (workspace / "r").mkdir()
    paused2 = await agent2.run("write three files", thread_id="r")
    rejected = await agent2.reject(paused2.approvals[0]["approval_id"], "no more")
    assert rejected.status == "paused_budget" and rejected.approvals == [], "rejected: it stays paused, nothing pending"


async def test_a_day_limit_is_shared_by_every_thread_of_the_database(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    model = script(*writes(2), {"content": "two"})
    first = agent_for(tmp_path, workspace, model)
    spent = await first.run("write two files", thread_id="a")
    used = spent.usage["input_tokens"] + spent.usage["output_tokens"]
    second = agent_for(tmp_path, workspace, model, max_tokens_per_day=used + 50)
    paused = await second.run("write two files", thread_id="b")
    assert paused.status == "paused_budget" and paused.usage["model_calls"] == 0
    assert "max_tokens_per_day" in paused.output


def test_a_usd_budget_needs_a_price_for_every_model(tmp_path: Path) -> None:
    config = AgentConfig(model=["openai:some-new-model"], budgets=Budgets(max_usd=1.0), openai={"base_url": "http://127.0.0.1:9/v1"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r'\[prices\."openai:some-new-model"\]'):
        Agent(config, home=tmp_path)


def test_budget_cli_shows_changes_and_refuses_bad_values(workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]) -> None:
    model = script(*writes(2), {"content": "two"})
    run = kasloop("run", "write two files", "--model", model, "--workspace", str(workspace), "--autonomy", "4", "--max-steps", "1", "--json")
    assert run.code == 11, run.err
    thread = run.json()["thread"]
    shown = kasloop("budget", thread, "--max-steps", "5", "--json")
    assert shown.code == 0, shown.err
    assert shown.json()["budgets"]["max_steps"] == 5 and shown.json()["status"] == "paused_budget"
    human = kasloop("budget", thread)
    assert "max_steps" in human.out and "kasloop resume" not in human.out
    bad = kasloop("budget", thread, "--max-usd", "-1")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "max_usd" in bad.err
    assert kasloop("resume", thread).code == 0


# --------------------------------------------------------------------------- a budget request is an interrupt like any approval


async def test_a_budget_request_is_an_interrupt_and_approving_it_in_the_graph_never_spends_past_the_limit(
    workspace: Path, tmp_path: Path, script: Callable[..., str]
) -> None:
    """What LangGraph Studio does: resume the pause with ``Command(resume=...)``, no kasloop in between.

    The limit lives in the thread's policy (here the run context), which the graph cannot change: an
    approval there sends the thread back to the node that stopped, which finds the same limit and asks
    again. Reject ends the run, still paused.
    """
    config = AgentConfig(autonomy=3, model=script(*writes(3), {"content": "three"}), tools=["files"], workspace=workspace, budgets=Budgets(max_steps=None, max_tool_calls=1))
    async with open_database(tmp_path / "graph.db") as db:
        graph = build_graph(config, checkpointer=db.saver)
        run = {"configurable": {"thread_id": "g"}}
        ctx = context_for(config, "g", select_tools(config.tools))
        await graph.ainvoke({"messages": [HumanMessage("write three files")], **new_task("write three files")}, run, context=ctx)
        paused = await graph.aget_state(run)
        [pause] = paused.interrupts
        [request] = pause.value["requests"]
        assert (pause.value["kind"], request["kind"], request["args"]["limit"], request["args"]["used"]) == ("budget", "budget", "max_tool_calls", 1)
        assert paused.next == ("human_approval",) and len(list(workspace.glob("f*.txt"))) == 1

        await graph.ainvoke(Command(resume={"decision": "approve"}), run, context=ctx)
        again = await graph.aget_state(run)
        assert [r["approval_id"] for r in again.interrupts[0].value["requests"]] == [request["approval_id"]], "the same limit: asked again"
        assert again.values["usage"]["tool_calls"] == 1 and len(list(workspace.glob("f*.txt"))) == 1, "nothing ran past the limit"

        raised = dataclasses.replace(ctx, max_tool_calls=2)  # positive control: what kasloop does, the limit raised first
        await graph.ainvoke(Command(resume={"decision": "approve"}), run, context=raised)
        second = await graph.aget_state(run)
        assert len(list(workspace.glob("f*.txt"))) == 2 and second.interrupts[0].value["requests"][0]["args"]["value"] == 2

        await graph.ainvoke(Command(resume={"decision": "reject"}), run, context=raised)
        kept = await graph.aget_state(run)
        assert kept.values["status"] == "paused_budget" and not kept.interrupts and kept.next == (), "rejected: the run ended, still paused"


async def test_a_budget_request_waits_until_a_limit_above_the_use_answers_it(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    agent = agent_for(tmp_path, workspace, script(*writes(2), {"content": "two"}), autonomy=2, max_tool_calls=1)
    first = await agent.run("write two files", thread_id="t")
    assert first.status == "waiting_approval" and first.approvals[0]["kind"] == "tool_call", "level 2: every call is asked first"
    second = await agent.approve(first.approvals[0]["approval_id"])
    paused = await agent.approve(second.approvals[0]["approval_id"])  # the second call: the tool-call budget is spent
    [request] = paused.approvals
    assert paused.status == "paused_budget" and request["kind"] == "budget" and request["expires_at"] > request["created_at"]

    await agent.set_budget("t", max_steps=100)  # another limit
    await agent.set_budget("t", max_tool_calls=1)  # not above what is used
    assert [r["approval_id"] for r in await agent.approvals("t")] == [request["approval_id"]], "still waiting"
    assert (await agent.resume("t")).status == "paused_budget", "resume does not pass a pause nobody decided"
    await agent.set_budget("t", max_tool_calls=3, by="ops")
    assert await agent.approvals("t") == []
    done = await agent.resume("t")
    assert done.status == "done" and len(list(workspace.glob("f*.txt"))) == 2, "the approved call held back by the budget ran"


async def test_a_budget_raise_and_the_decision_that_granted_it_are_one_write(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = agent_for(tmp_path, workspace, script(*writes(2), {"content": "two"}), autonomy=3, max_tool_calls=1)
    [request] = (await agent.run("write two files", thread_id="t")).approvals
    await agent.reject(request["approval_id"], "not now")
    async with open_database(agent.db_path) as db:
        policy = (await ThreadStore(db).get("t"))["policy"]  # type: ignore[index]
        granted = await ApprovalStore(db).decide(
            request["approval_id"], {"decision": "approve", "arg_hash": request["arg_hash"]}, by="late", channel="cli",
            writes=[policy_row("t", {**policy, "budgets": {**policy["budgets"], "max_tool_calls": 99}})],
        )
        assert granted is False
        assert (await ThreadStore(db).get("t"))["policy"]["budgets"]["max_tool_calls"] == 1, "a decision not recorded raised nothing"  # type: ignore[index]
    with pytest.raises(ApprovalAlreadyDecided):
        await agent.approve(request["approval_id"])
    assert (await agent.status("t"))[0]["budgets"]["max_tool_calls"] == 1 and (await agent.status("t"))[0]["status"] == "paused_budget"
