"""self_diagnose, budgets and working memory through the real graph and a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage
from pydantic import BaseModel

from kasloop import Agent, AgentConfig, Budgets
from kasloop.tools import Tool, ToolContext, ToolFailure
from conftest import call, state_of


class NoArgs(BaseModel):
    pass


def flaky_tool(failures: int, kind: str = "transient") -> tuple[Tool, list[str]]:
    """A tool that fails ``failures`` times with ``kind``, then succeeds; records each run."""
    runs: list[str] = []

    async def flaky(args: NoArgs, ctx: ToolContext) -> str:
        runs.append(ctx.idempotency_key)
        if len(runs) <= failures:
            raise ToolFailure(kind, f"failure number {len(runs)}")  # type: ignore[arg-type]
        return "worked"

    return Tool(name="flaky", description="Sometimes fails.", args_model=NoArgs, func=flaky, risk="low", idempotent=True, family="flaky"), runs


def agent_with(tmp_path: Path, workspace: Path, model: str, tool: Tool | None = None, **config: object) -> Agent:
    cfg = AgentConfig(model=model, tools=["files", *(["flaky"] if tool else [])], workspace=workspace, retry_backoff=0.001, **config)  # type: ignore[arg-type]
    return Agent(cfg, home=tmp_path / ".kasloop", tools=[tool] if tool else [])


async def messages_of(agent: Agent, thread: str) -> list[object]:
    return list((await state_of(agent, thread))["messages"])


async def test_transient_tool_failure_is_retried_then_succeeds(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    tool, runs = flaky_tool(2)
    agent = agent_with(tmp_path, workspace, script({"content": "", "tool_calls": [call("flaky")]}, {"content": "done"}), tool, autonomy=4)
    result = await agent.run("do the flaky thing")
    assert result.status == "done" and len(runs) == 3
    assert len(set(runs)) == 1, "the far side sees one idempotency key for every attempt of the call"
    actions = [e["action"] for e in await agent.history(result.thread) if e["kind"] == "self_diagnose"]
    assert actions == ["retry", "retry"]
    tool_msgs = [m for m in await messages_of(agent, result.thread) if isinstance(m, ToolMessage)]
    assert [json.loads(m.content) for m in tool_msgs] == [{"tool": "flaky", "ok": True, "result": "worked"}], "one result per call, no duplicate tool messages"


async def test_bad_args_go_back_to_the_model_which_corrects_the_call(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = agent_with(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_write", path="a.txt")]},
        {"content": "", "tool_calls": [call("files_write", path="a.txt", content="fixed")]},
        {"content": "done"},
    ), autonomy=4)
    result = await agent.run("write a.txt")
    assert result.status == "done" and (workspace / "a.txt").read_text() == "fixed"
    first = next(m for m in await messages_of(agent, result.thread) if isinstance(m, ToolMessage))
    assert "invalid arguments for `files_write`" in first.content and "content" in first.content
    [replan] = [e for e in await agent.history(result.thread) if e["kind"] == "self_diagnose"]
    assert replan["action"] == "replan" and "diagnosis: Cause: invalid arguments for `files_write`" in replan["diagnosis"]
    assert result.usage["model_calls"] == 4, "three decisions and one diagnosis"


async def test_model_error_turn_is_retried(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = agent_with(tmp_path, workspace, script({"error": "HTTP 503"}, {"content": "recovered"}), autonomy=4)
    result = await agent.run("anything")
    assert result.status == "done" and result.output == "recovered"
    assert [e["action"] for e in await agent.history(result.thread) if e["kind"] == "self_diagnose"] == ["retry_model"]


async def test_repeated_failures_escalate_to_a_human_at_level_3(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    tool, runs = flaky_tool(100, kind="permanent")
    turns = [{"content": "", "tool_calls": [call("flaky")]}] * 4 + [{"content": "giving up"}]
    agent = agent_with(tmp_path, workspace, script(*turns), tool, autonomy=3)
    result = await agent.run("keep trying")
    assert result.status == "waiting_approval" and result.exit_code == 10
    [request] = result.approvals
    assert request["kind"] == "escalation" and request["tool"] == "flaky" and "stuck" in request["reason"]
    done = await agent.respond(request["approval_id"], "stop using flaky")
    assert done.status == "done" and done.output == "giving up"
    assert len(runs) == 4


async def test_repeated_failures_stop_with_exit_12_at_level_4(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    tool, runs = flaky_tool(100, kind="permanent")
    agent = agent_with(tmp_path, workspace, script(*[{"content": "", "tool_calls": [call("flaky")]}] * 5), tool, autonomy=4)
    result = await agent.run("keep trying")
    assert result.status == "escalated" and result.exit_code == 12 and len(runs) == 4


async def test_step_budget_pauses_with_exit_11(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    turns = [{"content": "", "tool_calls": [call("files_append", path="log.txt", content=str(i))]} for i in range(10)]
    agent = agent_with(tmp_path, workspace, script(*turns), autonomy=4, budgets=Budgets(max_steps=3))
    result = await agent.run("loop")
    assert result.status == "paused_budget" and result.exit_code == 11
    assert "budgets.max_steps = 3" in result.output
    assert (workspace / "log.txt").read_text() == "012"


async def test_tool_call_budget_stops_before_the_call_that_would_exceed_it(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    turns = [{"content": "", "tool_calls": [call("files_append", path="log.txt", content=c)]} for c in "abcde"]
    agent = agent_with(tmp_path, workspace, script(*turns), autonomy=4, budgets=Budgets(max_tool_calls=2, max_steps=None))
    result = await agent.run("loop")
    assert result.status == "paused_budget" and (workspace / "log.txt").read_text() == "ab"


async def test_working_memory_stays_bounded_and_keeps_call_result_pairs(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    turns = [{"content": f"step {i}", "tool_calls": [call("files_write", path="a.txt", content=str(i))]} for i in range(30)]
    agent = agent_with(tmp_path, workspace, script(*turns, {"content": "done"}), autonomy=4, max_messages=8, budgets=Budgets(max_steps=None))
    result = await agent.run("write many times")
    assert result.status == "done"
    messages = await messages_of(agent, result.thread)
    assert len(messages) <= 8 + 2
    assert not isinstance(messages[0], ToolMessage)
    call_ids = {c["id"] for m in messages for c in getattr(m, "tool_calls", [])}
    assert all(m.tool_call_id in call_ids for m in messages if isinstance(m, ToolMessage))


async def test_event_log_is_append_only(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = agent_with(tmp_path, workspace, script({"content": "done"}), autonomy=4)
    await agent.run("nothing")
    conn = sqlite3.connect(agent.db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE kasloop_events SET kind = 'forged'")
    conn.close()


async def test_transient_failure_of_a_non_idempotent_tool_is_not_retried_unasked(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """A timed-out POST may have taken effect: the model hears about it instead of a silent re-run."""
    tool, runs = flaky_tool(1)
    tool = Tool(name=tool.name, description=tool.description, args_model=tool.args_model, func=tool.func, risk="low", idempotent=False, family="flaky")
    agent = agent_with(tmp_path, workspace, script({"content": "", "tool_calls": [call("flaky")]}, {"content": "told"}), tool, autonomy=4)
    result = await agent.run("do it once")
    assert result.status == "done" and len(runs) == 1
    assert [e["action"] for e in await agent.history(result.thread) if e["kind"] == "self_diagnose"] == ["replan"]


async def test_repeating_a_call_that_already_succeeded_is_answered_not_rerun(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    same = call("files_write", path="a.txt", content="x")
    agent = agent_with(tmp_path, workspace, script(*[{"content": "", "tool_calls": [same]}] * 3, {"content": "done"}), autonomy=4)
    result = await agent.run("write a.txt")
    assert result.status == "done"
    tools = [e for e in await agent.history(result.thread) if e["kind"] == "tool"]
    assert len(tools) == 1, "the identical successful write ran once"
    repeats = [m for m in await messages_of(agent, result.thread) if isinstance(m, ToolMessage) and json.loads(m.content).get("error") == "repeated"]
    assert len(repeats) == 2


async def test_endless_repeats_escalate(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    same = call("files_write", path="a.txt", content="x")
    agent = agent_with(tmp_path, workspace, script(*[{"content": "", "tool_calls": [same]}] * 10), autonomy=4)
    result = await agent.run("write a.txt")
    assert result.status == "escalated" and result.exit_code == 12



# --------------------------------------------------------------------------- loop detection


async def test_the_same_non_idempotent_call_three_times_is_a_loop_then_escalates(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    turns = [{"content": "", "tool_calls": [call("files_append", path="log.txt", content="x")]}] * 10
    agent = agent_with(tmp_path, workspace, script(*turns), autonomy=4, budgets=Budgets(max_steps=None))
    result = await agent.run("append forever")
    assert result.status == "escalated" and result.exit_code == 12
    assert (workspace / "log.txt").read_text() == "xx", "the third identical call never ran"
    events = await agent.history(result.thread)
    assert [e["loops"] for e in events if e["kind"] == "loop"] == [1, 2]
    messages = [m for m in await messages_of(agent, result.thread) if isinstance(m, ToolMessage)]
    assert any(json.loads(m.content).get("error") == "loop" for m in messages)


async def test_two_alternating_calls_are_a_loop(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    a = call("files_append", path="log.txt", content="a")
    b = call("files_append", path="log.txt", content="b")
    turns = [{"content": "", "tool_calls": [c]} for c in (a, b, a, b, a, b, a, b)]
    agent = agent_with(tmp_path, workspace, script(*turns, {"content": "ok"}), autonomy=4, budgets=Budgets(max_steps=None))
    result = await agent.run("alternate")
    assert result.status == "escalated"
    # A-B-A-B is stopped before the fourth call; the model is warned, and the second loop escalates.
    assert (workspace / "log.txt").read_text() == "abaaba"
    assert [e["loops"] for e in await agent.history(result.thread) if e["kind"] == "loop"] == [1, 2]


async def test_a_loop_warning_lets_a_model_that_changes_course_finish(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    x = call("files_append", path="log.txt", content="x")
    turns = [{"content": "", "tool_calls": [x]}] * 3 + [{"content": "", "tool_calls": [call("files_write", path="done.txt", content="ok")]}, {"content": "finished"}]
    agent = agent_with(tmp_path, workspace, script(*turns), autonomy=4, budgets=Budgets(max_steps=None))
    result = await agent.run("append, then notice")
    assert result.status == "done" and result.output == "finished" and (workspace / "done.txt").exists()


def test_loop_patterns() -> None:
    from kasloop.nodes.decide import loop_pattern

    assert loop_pattern(["a", "a", "a"]) and loop_pattern(["z", "a", "b", "a", "b"])
    assert loop_pattern(["a", "a"]) is None and loop_pattern(["a", "b", "c", "a"]) is None and loop_pattern(["a", "b", "b", "a"]) is None


async def test_cycles_without_progress_are_stopped_then_escalate(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    # A-B-C-A-B-C... is no A-A-A and no A-B-A-B, but after the first round nothing new happens.
    cycle = [call("files_append", path="log.txt", content=c) for c in "abc"]
    turns = [{"content": "", "tool_calls": [c]} for c in cycle * 6]
    agent = agent_with(tmp_path, workspace, script(*turns), autonomy=4, stall_cycles=3, budgets=Budgets(max_steps=None))
    result = await agent.run("go round in circles")
    assert result.status == "escalated" and result.exit_code == 12
    assert (workspace / "log.txt").read_text() == "abc" * 3
    loops = [(e["pattern"], e["loops"]) for e in await agent.history(result.thread) if e["kind"] == "loop"]
    assert loops == [("no progress", 1), ("no progress", 2)]
    notes = [m for m in await messages_of(agent, result.thread) if getattr(m, "type", "") == "human"]
    assert any("brought nothing new" in str(m.content) for m in notes), "the model is told why before it re-plans"
