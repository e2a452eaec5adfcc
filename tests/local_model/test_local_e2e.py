"""End to end on the real local model (no scripted fallback).

Assertions are on files and the event log, never on the model's wording.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kasloop import Agent, AgentConfig
from conftest import CLIResult


def tool_events(events: list[dict[str, object]], tool: str) -> list[dict[str, object]]:
    return [e for e in events if e["kind"] == "tool" and e["tool"] == tool]


async def test_level_4_writes_a_file_with_given_content(local_model: str, tmp_path: Path, workspace: Path) -> None:
    agent = Agent(AgentConfig(autonomy=4, model="local", tools=["files_write"], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("Create the file hello.txt with the content: Hello, world!")
    assert result.status == "done", result
    assert (workspace / "hello.txt").read_text().strip() == "Hello, world!"
    events = await agent.history(result.thread)
    assert any(e["ok"] for e in tool_events(events, "files_write"))


def test_level_3_high_risk_call_waits_for_approval_then_completes(
    local_model: str, tmp_path: Path, workspace: Path, kasloop: Callable[..., CLIResult]
) -> None:
    """The run exits 10 in one process; `kasloop approve` in another finishes it (the fixture exports KASLOOP_CACHE)."""
    (workspace / "old.txt").write_text("obsolete\n")
    first = kasloop("run", "Delete the file old.txt.", "--model", "local", "--tools", "files_delete",
                    "--workspace", str(workspace), "--autonomy", "3", "--json")
    assert first.code == 10, first
    [request] = first.json()["approvals"]
    assert request["tool"] == "files_delete" and request["risk"] == "high"
    assert (workspace / "old.txt").exists(), "nothing runs before approval"
    second = kasloop("approve", request["approval_id"], "--json")
    assert second.code == 0, second
    assert second.json()["status"] == "done"
    assert not (workspace / "old.txt").exists()


async def test_level_4_two_step_goal_is_guided_step_by_step(local_model: str, tmp_path: Path, workspace: Path) -> None:
    """Read then write: unguided, the 0.5B model wrote b.txt at once with the task's own words."""
    (workspace / "a.txt").write_text("apples and pears\n")
    agent = Agent(AgentConfig(autonomy=4, model="local", tools=["files_read", "files_write"], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("Read a.txt and write the same text into b.txt.")
    assert result.status == "done", result
    assert (workspace / "b.txt").read_text().strip() == "apples and pears"
    events = await agent.history(result.thread)
    used = [e["tool"] for e in events if e["kind"] == "tool" and e["ok"]]
    assert used[:2] == ["files_read", "files_write"], used
