"""Hard budgets: checked before every model and tool call, never exceeded by more than one call, raised only by people."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kasloop import Agent, AgentConfig, Budgets, ConfigError
from kasloop.config.schema import ModelPrice
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
