"""No silent overwrite: inside an agent run, files_write may not replace a file the agent has not read.

Measured on the embedded model: asked to add a line to an existing file, it called files_write with just
that line, replacing the file, and the run ended "done".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kasloop import Agent, AgentConfig
from kasloop.tools.base import ToolContext, run_tool
from kasloop.tools.registry import all_tools
from conftest import call

ORIGINAL = "Buy milk.\n"


def agent_for(tmp_path: Path, workspace: Path, model: str, **settings: Any) -> Agent:
    config = AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace, tool_settings={"files": settings} if settings else {})
    return Agent(config, home=tmp_path / ".kasloop")


async def test_replacing_an_unread_file_is_refused_and_the_model_appends_instead(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "todo.txt").write_text(ORIGINAL)
    model = script(
        {"tool_calls": [call("files_write", path="todo.txt", content="Call the bank.\n")]},
        {"tool_calls": [call("files_append", path="todo.txt", content="Call the bank.\n")]},
        {"content": "Added the line."},
    )
    agent = agent_for(tmp_path, workspace, model)
    result = await agent.run("Add the line 'Call the bank.' to todo.txt.")
    assert result.status == "done", result
    assert (workspace / "todo.txt").read_text() == ORIGINAL + "Call the bank.\n"
    refused = [e for e in await agent.history(result.thread) if e["kind"] == "tool" and not e["ok"]]
    assert refused and "you have not read it" in refused[0]["output"] and "files_append" in refused[0]["output"]


@pytest.mark.parametrize(
    "first",
    [
        pytest.param([call("files_read", path="todo.txt")], id="read-first"),
        pytest.param([call("files_write", path="todo.txt", content="draft\n")], id="written-by-the-agent"),
    ],
)
async def test_a_file_the_agent_read_or_wrote_may_be_replaced(tmp_path: Path, workspace: Path, script: Callable[..., str], first: list[dict[str, Any]]) -> None:
    if first[0]["name"] == "files_read":
        (workspace / "todo.txt").write_text(ORIGINAL)
    model = script({"tool_calls": first}, {"tool_calls": [call("files_write", path="todo.txt", content="new\n")]}, {"content": "done"})
    result = await agent_for(tmp_path, workspace, model).run("Rewrite todo.txt.")
    assert result.status == "done" and (workspace / "todo.txt").read_text() == "new\n"


async def test_new_files_and_a_persons_setting_are_not_affected(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "todo.txt").write_text(ORIGINAL)
    model = script(
        {"tool_calls": [call("files_write", path="new.txt", content="fresh\n"), call("files_write", path="todo.txt", content="replaced\n")]},
        {"content": "done"},
    )
    result = await agent_for(tmp_path, workspace, model, overwrite_unread=True).run("Write both files.")
    assert result.status == "done"
    assert (workspace / "new.txt").read_text() == "fresh\n" and (workspace / "todo.txt").read_text() == "replaced\n"


async def test_a_direct_tool_call_outside_an_agent_run_is_not_affected(workspace: Path) -> None:
    (workspace / "todo.txt").write_text(ORIGINAL)
    result = await run_tool(all_tools()["files_write"], {"path": "todo.txt", "content": "x"}, ToolContext(workspace=workspace))
    assert result.ok and (workspace / "todo.txt").read_text() == "x"


def test_a_bad_files_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from conftest import cli_runner

    (tmp_path / "kasloop.toml").write_text("[tool_settings.files]\noverwrite_unread = \"sometimes\"\n")
    result = cli_runner(tmp_path)("run", "x", "--model", "scripted:none.jsonl")
    assert result.code == 2 and "overwrite_unread" in result.err and len(result.err.strip().splitlines()) == 1


async def test_a_retried_write_may_replace_what_its_own_first_attempt_wrote(workspace: Path) -> None:
    """After a crash between a write and its recorded result, act runs the idempotent call again: the file
    exists (its first attempt made it) but the task's state never saw it. The control: the same call as a
    first attempt is refused."""
    from kasloop.state import RunContext

    (workspace / "w0.txt").write_text("version 0\n")
    tool = all_tools()["files_write"]
    args = {"path": "w0.txt", "content": "version 4\n"}
    first = await run_tool(tool, args, ToolContext(workspace=workspace, run=RunContext()))
    assert not first.ok and "you have not read it" in first.output
    again = await run_tool(tool, args, ToolContext(workspace=workspace, run=RunContext(), retry=True))
    assert again.ok and (workspace / "w0.txt").read_text() == "version 4\n"
