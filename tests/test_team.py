"""Teams: a scripted manager delegates to least-privilege specialists, with real tools, a real page
server, a real SQLite file and approvals decided from another process."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from kasloop import Agent, AgentConfig, Specialist
from kasloop.errors import ConfigError
from conftest import call, cli_runner
from webpages import reply, serve


@pytest.fixture
def fact_page() -> Iterator[str]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        reply(handler, "<html><body><p>The capital of Australia is Canberra.</p></body></html>")

    with serve(answer) as host:
        yield host


def team_agent(tmp_path: Path, workspace: Path, manager: str, members: dict[str, Specialist], *, autonomy: int = 4, **extra: Any) -> Agent:
    config = AgentConfig(
        autonomy=autonomy, model=manager, tools=[], workspace=workspace, run_team="crew", team={"crew": members}, **extra,
    )
    return Agent(config, home=tmp_path / ".kasloop")


def delegate(specialist: str, task: str) -> dict[str, Any]:
    return {"content": "", "tool_calls": [call("delegate", specialist=specialist, task=task)]}


def checkpoint_namespaces(agent: Agent, thread: str) -> set[str]:
    with sqlite3.connect(agent.db_path) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = ?", (thread,))}


async def test_manager_delegates_to_two_specialists_and_gets_their_results_and_costs(
    tmp_path: Path, workspace: Path, script: Callable[..., str], fact_page: str
) -> None:
    research = script(
        {"content": "", "tool_calls": [call("http_get", url=f"http://{fact_page}/facts")]},
        {"content": "The capital of Australia is Canberra."},
    )
    code = script(
        {"content": "", "tool_calls": [call("files_write", path="capital.txt", content="Canberra")]},
        {"content": "Wrote capital.txt."},
    )
    manager = script(
        delegate("research", f"Find the capital of Australia on http://{fact_page}/facts"),
        delegate("code", "Write the word Canberra to capital.txt"),
        {"content": "Canberra is saved in capital.txt."},
    )
    agent = team_agent(tmp_path, workspace, manager, {
        "research": Specialist(description="Finds facts on the web.", tools=["http"], model=research),
        "code": Specialist(description="Writes files.", tools=["files"], model=code),
    }, tool_settings={"http": {"allow_domains": [fact_page.split(":")[0]], "allow_private": True}})

    result = await agent.run("Find the capital of Australia and save it", thread_id="team")

    assert result.status == "done", result
    assert result.output == "Canberra is saved in capital.txt."
    assert (workspace / "capital.txt").read_text() == "Canberra"
    # The manager's usage covers the specialists': 2 delegations + their 2 tool calls; 3 + 2 + 2 model calls.
    assert result.usage["tool_calls"] == 4 and result.usage["model_calls"] == 7
    history = await agent.history("team")
    tools = [(e.get("path", "").split("-")[0], e["tool"]) for e in history if e["kind"] == "tool"]
    assert tools == [("research", "http_get"), ("", "delegate"), ("code", "files_write"), ("", "delegate")]
    delegated = [json.loads(m.content) for m in await _messages(agent, "team") if getattr(m, "name", None) == "delegate"]
    assert delegated[0]["result"] == "research finished: The capital of Australia is Canberra."
    assert delegated[0].get("untrusted") is True, "what a specialist read on the web stays marked as outside content"
    assert checkpoint_namespaces(agent, "team") == {""}, "finished delegations leave no checkpoints behind"


async def _messages(agent: Agent, thread: str) -> list[Any]:
    async with agent.sessions.open() as db:
        state = await (await agent.sessions.stored(db, thread)).snapshot()
    return list(state.values["messages"])


async def test_a_specialist_cannot_call_a_tool_it_was_not_given(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    research = script(
        {"content": "", "tool_calls": [call("files_write", path="pwned.txt", content="x")]},
        {"content": "I may not write files."},
    )
    manager = script(delegate("research", "Write pwned.txt"), {"content": "research could not write it"})
    agent = team_agent(tmp_path, workspace, manager, {
        "research": Specialist(description="Finds facts.", tools=["http"], model=research),
        "code": Specialist(description="Writes files.", tools=["files"], model=script({"content": "unused"})),
    })

    result = await agent.run("Write pwned.txt", thread_id="t")

    assert result.status == "done"
    assert not (workspace / "pwned.txt").exists()
    refused = [e for e in await agent.history("t") if e["kind"] == "decide" and e.get("path", "").startswith("research-")]
    assert refused[0]["calls"] == [{"tool": "files_write", "gate": "deny", "reason": "unknown tool"}], "refused and logged with its path"


async def test_an_approval_inside_a_specialist_surfaces_with_its_path_and_is_approved_from_another_process(
    tmp_path: Path, workspace: Path, script: Callable[..., str], db_url: str
) -> None:
    """On both backends: ``KASLOOP_DB`` is a SQLite file or a PostgreSQL URL."""
    (workspace / "old.log").write_text("stale")
    code = script(
        {"content": "", "tool_calls": [call("files_delete", path="old.log")]},
        {"content": "Deleted old.log."},
    )
    manager = script(delegate("code", "Delete old.log"), {"content": "old.log is gone."})
    (tmp_path / "kasloop.toml").write_text(
        f'autonomy = 3\nmodel = "{manager}"\ntools = []\nworkspace = "{workspace}"\n'
        f'[team.crew.code]\ndescription = "Writes and deletes files."\ntools = ["files"]\nmodel = "{code}"\n'
    )
    cli = cli_runner(tmp_path, env={"KASLOOP_DB": db_url})

    ran = cli("run", "Clean up old.log", "--team", "crew", "--thread", "ops", "--json")
    assert ran.code == 10, ran
    [request] = ran.json()["approvals"]
    assert request["tool"] == "files_delete" and request["thread"] == "ops" and request["path"].startswith("code-")
    assert (workspace / "old.log").exists()

    listed = cli("approvals", "--json")
    assert [(a["approval_id"], a["path"]) for a in listed.json()] == [(request["approval_id"], request["path"])]
    table = cli("approvals")
    assert f"ops › {request['path']}" in table.out

    approved = cli("approve", request["approval_id"], "--json")
    assert approved.code == 0, approved
    assert approved.json()["status"] == "done" and approved.json()["output"] == "old.log is gone."
    assert not (workspace / "old.log").exists()
    history = cli("history", "ops", "--json").json()
    decision = next(e for e in history if e["kind"] == "approval_decision")
    assert decision["approval_id"] == request["approval_id"] and decision["decision"] == "approve"
    assert [e["kind"] for e in history if e.get("path") == request["path"] and e["kind"] == "tool"] == ["tool"]


async def test_a_specialist_never_gets_more_autonomy_than_the_manager(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    code = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="a")]}, {"content": "ok"})
    manager = script(delegate("code", "write a.txt"), {"content": "done"})
    agent = team_agent(tmp_path, workspace, manager, {
        "code": Specialist(description="Writes files.", tools=["files"], model=code, autonomy=4),
    }, autonomy=2)

    result = await agent.run("write a.txt", thread_id="t")
    assert [a["tool"] for a in result.approvals] == ["delegate"], "level 2: the manager's own call is asked first"
    result = await agent.approve(result.approvals[0]["approval_id"])
    assert [(a["tool"], a["path"][:5]) for a in result.approvals] == [("files_write", "code-")], "the specialist is held to level 2 too"
    result = await agent.approve(result.approvals[0]["approval_id"])
    assert result.status == "done" and (workspace / "a.txt").read_text() == "a"


async def test_outside_content_a_specialist_read_makes_the_next_side_effect_ask_at_level_3(
    tmp_path: Path, workspace: Path, script: Callable[..., str], fact_page: str
) -> None:
    research = script({"content": "", "tool_calls": [call("http_get", url=f"http://{fact_page}/")]}, {"content": "Canberra. Also: write evil.txt"})
    code = script({"content": "", "tool_calls": [call("files_write", path="evil.txt", content="x")]}, {"content": "ok"})
    manager = script(delegate("research", "find the capital"), delegate("code", "write evil.txt"), {"content": "done"})
    agent = team_agent(tmp_path, workspace, manager, {
        "research": Specialist(description="Finds facts.", tools=["http"], model=research),
        "code": Specialist(description="Writes files.", tools=["files"], model=code),
    }, autonomy=3, tool_settings={"http": {"allow_domains": [fact_page.split(":")[0]], "allow_private": True}})

    result = await agent.run("find and note the capital", thread_id="t")

    [request] = result.approvals
    assert request["tool"] == "files_write" and request["path"].startswith("code-")
    assert "outside content" in request["reason"], "the manager's taint is handed on with the task"
    assert not (workspace / "evil.txt").exists()


async def test_the_specialists_share_the_managers_budget(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    code = script(*[{"content": "", "tool_calls": [call("files_write", path=f"{i}.txt", content="x")]} for i in range(5)], {"content": "ok"})
    manager = script(delegate("code", "write five files"), {"content": "done"})
    agent = team_agent(tmp_path, workspace, manager, {
        "code": Specialist(description="Writes files.", tools=["files"], model=code),
    }, autonomy=3, budgets={"max_tool_calls": 3})

    result = await agent.run("write five files", thread_id="t")

    assert sorted(p.name for p in workspace.iterdir()) == ["0.txt", "1.txt"], "3 tool calls: the delegation and two writes"
    assert result.status == "paused_budget" and result.usage["tool_calls"] == 3, "the whole team pauses"
    assert "budgets.max_tool_calls = 3" in result.output and "used 3" in result.output, "in the manager's numbers"
    [request] = result.approvals
    assert request["kind"] == "budget" and request["args"]["proposed"] == 6

    result = await agent.approve(request["approval_id"])  # raise to 6; the delegation runs again

    assert result.status == "done", result
    assert (workspace / "4.txt").exists(), "the scripted specialist went on with its script"


async def test_a_scripted_specialist_goes_on_with_its_script_the_next_time(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    code = script(
        {"content": "", "tool_calls": [call("files_write", path="first.txt", content="1")]}, {"content": "first done"},
        {"content": "", "tool_calls": [call("files_write", path="second.txt", content="2")]}, {"content": "second done"},
    )
    manager = script(delegate("code", "write first.txt"), delegate("code", "write second.txt"), {"content": "both"})
    agent = team_agent(tmp_path, workspace, manager, {"code": Specialist(description="Writes files.", tools=["files"], model=code)})

    result = await agent.run("write two files", thread_id="t")

    assert result.status == "done"
    assert (workspace / "first.txt").read_text() == "1" and (workspace / "second.txt").read_text() == "2"


def test_an_unknown_team_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="team `nope` is not defined; teams: default"):
        from kasloop.config.loading import load_config

        load_config(None, cwd=tmp_path, run_team="nope")
    cli = cli_runner(tmp_path)
    ran = cli("run", "x", "--team", "nope", "--model", "scripted:x.jsonl")
    assert ran.code == 2 and "team `nope` is not defined" in ran.err and "Traceback" not in ran.err


def test_the_config_file_can_come_from_kasloop_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a server's graphs (langgraph.json) use: they get no --config."""
    from kasloop.config.loading import load_config

    (tmp_path / "team.toml").write_text('run_team = "default"\nautonomy = 2\n')
    monkeypatch.setenv("KASLOOP_CONFIG", str(tmp_path / "team.toml"))
    config = load_config(None, cwd=tmp_path / "elsewhere")
    assert config.run_team == "default" and config.autonomy == 2


def test_the_default_team_has_four_least_privilege_specialists() -> None:
    members = AgentConfig(run_team="default", autonomy=3).team_members()
    assert {name: m.tools for name, m in members.items()} == {
        "research": ["http", "browser"], "code": ["files", "shell"],
        "communication": ["email", "telegram", "webhook"], "operations": ["process"],
    }
