"""Thread sessions (issue 16): ``Agent`` is a facade over ``kasloop.runtime``; each command compiles the
thread's graph at most once, and reading where threads stand compiles none.

The compilations are counted by wrapping the one function that compiles a thread's graph
(``kasloop.runtime.session.build_for``) with a counter that calls the real one: everything else runs
for real (SQLite file, scripted model, the files tools).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kasloop import Agent, AgentConfig, ConfigError, RunResult
from kasloop.runtime import session as session_module
from kasloop.runtime.daemon import Daemon
from kasloop.runtime.sessions import Sessions
from conftest import call


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the threads whose graph was compiled, one entry per compilation."""
    seen: list[str] = []
    real = session_module.build_for

    def counting(config: AgentConfig, **kwargs: Any) -> Any:
        seen.append(str(config.workspace))
        return real(config, **kwargs)

    monkeypatch.setattr(session_module, "build_for", counting)
    yield seen


def make_agent(tmp_path: Path, workspace: Path, model: str) -> Agent:
    return Agent(AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")


async def test_each_command_compiles_the_graph_at_most_once(
    tmp_path: Path, workspace: Path, script: Callable[..., str], compiles: list[str],
) -> None:
    (workspace / "a.txt").write_text("a")
    (workspace / "b.txt").write_text("b")
    agent = make_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_delete", path="a.txt")]},
        {"content": "", "tool_calls": [call("files_delete", path="b.txt")]},
        {"content": "both gone"},
    ))
    first = await agent.run("delete a and b")
    assert first.status == "waiting_approval" and len(compiles) == 1, "run: validated and driven with one graph"

    compiles.clear()
    await agent.status()
    await agent.status(first.thread)
    assert compiles == [], "status reads the checkpoint; it compiles nothing"

    second = await agent.approve(first.approvals[0]["approval_id"])
    assert second.status == "waiting_approval" and len(compiles) == 1, "approve: the check, the drive and the settle share one graph"
    assert not (workspace / "a.txt").exists()

    compiles.clear()
    recorded = await agent.approve(second.approvals[0]["approval_id"], resume=False)
    assert recorded.status == "waiting_approval" and len(compiles) == 1, "decided without resuming: one graph to read the pause"
    assert (workspace / "b.txt").exists(), "not resumed: the call has not run"

    compiles.clear()
    done = await agent.resume(first.thread)
    assert done.status == "done" and done.output == "both gone" and len(compiles) == 1
    assert not (workspace / "b.txt").exists()


async def test_the_facade_and_the_sessions_are_one_home(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """What the daemon and the receivers are given (``agent.sessions``) is what the agent's calls use."""
    (workspace / "x.txt").write_text("x")
    agent = make_agent(tmp_path, workspace, script({"content": "", "tool_calls": [call("files_delete", path="x.txt")]}, {"content": "ok"}))
    assert isinstance(agent.sessions, Sessions)
    assert agent.sessions.db_path == agent.db_path and agent.sessions.config is agent.config
    agent.stop_requested = True
    assert agent.sessions.stop_requested, "a stop asked of the agent stops the sessions' drives"
    agent.stop_requested = False
    result = await agent.run("delete x")
    assert isinstance(result, RunResult) and result.status == "waiting_approval"
    await agent.approve(result.approvals[0]["approval_id"], resume=False)
    report = await Daemon(agent.sessions, interval=1).cycle()
    assert report.visited == [result.thread] and report.errors == []
    [row] = await agent.status(result.thread)
    assert row["status"] == "done" and not (workspace / "x.txt").exists()


async def test_a_bad_model_for_a_new_thread_writes_nothing_and_compiles_nothing(tmp_path: Path, workspace: Path, compiles: list[str]) -> None:
    agent = make_agent(tmp_path, workspace, f"scripted:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(ConfigError, match="does not exist"):
        await agent.run("anything")
    assert not (tmp_path / ".kasloop" / "kasloop.db").exists() and compiles == [], "refused before the database was opened"
