"""The guards of issue 15 on the real local model, on the goals where it was measured to go wrong.

Each case failed before its guard: the model wrote its own tool result into the file, replaced a file it
was asked to add to, or ended ``done`` on a reply cut off at the token limit with no file written.
Assertions are on files and statuses, never on the model's wording.
"""

from __future__ import annotations

from pathlib import Path

from kasloop import Agent, AgentConfig
from kasloop.cli.demo import LOCAL_GOAL, LOCAL_LINE, LOCAL_PATH


async def test_a_tool_result_is_never_written_into_the_file(local_model: str, tmp_path: Path, workspace: Path) -> None:
    """Unguided (the model as it was when measured): after the write it proposed files_write with "Wrote 39 bytes ..."."""
    config = AgentConfig(autonomy=4, model="local", tools=["files_write"], workspace=workspace, guide_steps=False, retry_backoff=0.01)
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run(LOCAL_GOAL)
    notes = (workspace / LOCAL_PATH).read_text()
    assert notes.strip() == LOCAL_LINE, (result, notes)
    assert "Wrote" not in notes and "Refused" not in notes


async def test_adding_a_line_keeps_what_the_file_had(local_model: str, tmp_path: Path, workspace: Path) -> None:
    """Measured: asked to add a line, it called files_write and replaced the file, and the run ended done."""
    (workspace / "log.txt").write_text("monday: started\n")
    config = AgentConfig(autonomy=4, model="local", tools=["files_write", "files_append"], workspace=workspace, retry_backoff=0.01)
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("Add the line tuesday: done to the file log.txt.")
    text = (workspace / "log.txt").read_text()
    assert text.startswith("monday: started"), (result, text)
    events = await agent.history(result.thread)
    replaced = [e for e in events if e["kind"] == "tool" and e["tool"] == "files_write" and e["ok"]]
    assert not replaced, "an unread existing file is never replaced"


async def test_done_only_with_the_file_written(local_model: str, tmp_path: Path, workspace: Path) -> None:
    """Measured: a files_write whose content repeated "River" until the 512-token limit; taken as the answer, done."""
    config = AgentConfig(autonomy=4, model="local", tools=["files_write"], workspace=workspace, retry_backoff=0.01)
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("Create the file river.txt containing the word river.")
    river = workspace / "river.txt"
    assert result.status != "done" or (river.is_file() and "river" in river.read_text().lower()), result
