"""Standing rules people add while agents run: ``approve --always``, ``reject --never``, ``kasloop rules``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kasloop import Agent, AgentConfig, PolicyRule
from conftest import CLIResult, call


def two_writes(script: Callable[..., str]) -> str:
    return script(
        {"content": "", "tool_calls": [call("shell_run", command="echo one")]},
        {"content": "", "tool_calls": [call("shell_run", command="echo two")]},
        {"content": "both ran"},
    )


async def test_approve_always_stops_asking_for_that_tool_in_every_thread(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = Agent(AgentConfig(autonomy=3, model=two_writes(script), tools=["shell"], workspace=workspace), home=tmp_path / ".kasloop")
    first = await agent.run("echo twice", thread_id="a")
    assert first.status == "waiting_approval" and first.approvals[0]["tool"] == "shell_run"
    done = await agent.approve(first.approvals[0]["approval_id"], always=True)
    assert done.status == "done" and done.output == "both ran", "the second shell call ran without asking"
    [rule] = await agent.rules()
    assert (rule["tool"], rule["action"]) == ("shell_run", "allow")
    other = await agent.run("echo twice", thread_id="b")
    assert other.status == "done", "another thread of the database is not asked either"

    await agent.remove_rule(rule["id"])
    again = await agent.run("echo twice", thread_id="c")
    assert again.status == "waiting_approval", "removed: it asks again"


async def test_never_denies_and_a_standing_allow_cannot_beat_a_configured_deny(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    config = AgentConfig(autonomy=3, model=two_writes(script), tools=["shell"], workspace=workspace)
    agent = Agent(config, home=tmp_path / ".kasloop")
    first = await agent.run("echo twice", thread_id="a")
    result = await agent.reject(first.approvals[0]["approval_id"], "no shell", never=True)
    assert result.status == "done", "the second call was refused by the new rule without asking"
    events = [e for e in await agent.history("a") if e["kind"] == "decide"]
    assert events[1]["calls"][0]["gate"] == "deny"

    strict = Agent(config.model_copy(update={"rules": [PolicyRule(tool="shell_run", action="deny")]}), home=tmp_path / "strict")
    await strict.add_rule(PolicyRule(tool="shell_*", action="allow"))
    denied = await strict.run("echo twice")
    decides = [e for e in await strict.history(denied.thread) if e["kind"] == "decide"]
    assert decides[0]["calls"][0]["gate"] == "deny", "deny > ask > allow, whoever wrote the rule"


def test_rules_cli(kasloop: Callable[..., CLIResult]) -> None:
    added = kasloop("rules", "add", "files_write", "--action", "ask", "--arg", "path=notes/*")
    assert added.code == 0, added.err
    listed = kasloop("rules", "list", "--json").json()
    assert [(r["tool"], r["action"], r["args"]) for r in listed] == [("files_write", "ask", {"path": "notes/*"})]
    assert kasloop("rules", "add", "x", "--action", "maybe").code == 2
    assert kasloop("rules", "add", "x", "--arg", "nope").code == 2
    missing = kasloop("rules", "remove", "99")
    assert missing.code == 2 and "No rule 99" in missing.err
    assert kasloop("rules", "remove", str(listed[0]["id"])).code == 0
    assert kasloop("rules", "list", "--json").json() == []
