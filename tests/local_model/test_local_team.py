"""A team on the real local model: the embedded 0.5B model as manager and as specialist (no scripted fallback).

Assertions are on the workspace, the event log (which specialist ran which tool) and the approvals,
never on the model's wording.
"""

from __future__ import annotations

from pathlib import Path

from kasloop import Agent, AgentConfig, Budgets, Specialist


def team(tmp_path: Path, workspace: Path, autonomy: int, members: dict[str, Specialist]) -> Agent:
    config = AgentConfig(
        autonomy=autonomy, model="local", tools=[], workspace=workspace, budgets=Budgets(max_steps=6),
        run_team="crew", team={"crew": members},
    )
    return Agent(config, home=tmp_path / ".kasloop")


async def test_level_4_manager_delegates_a_file_to_the_specialist_that_may_write(local_model: str, tmp_path: Path, workspace: Path) -> None:
    agent = team(tmp_path, workspace, 4, {
        "writer": Specialist(description="Writes files in the workspace.", tools=["files_write"]),
        "reader": Specialist(description="Reads files in the workspace.", tools=["files_read", "files_list"]),
    })
    result = await agent.run("Create the file hello.txt with the content: Hello, world!")
    assert result.status == "done", result
    assert (workspace / "hello.txt").read_text().strip() == "Hello, world!"
    events = await agent.history(result.thread)
    writes = [e for e in events if e["kind"] == "tool" and e["tool"] == "files_write" and e["ok"]]
    assert writes and all(e["path"].startswith("writer-") for e in writes), "only the writer specialist wrote"
    assert any(e["kind"] == "tool" and e["tool"] == "delegate" and "path" not in e for e in events), "the manager delegated"


async def test_level_3_an_approval_inside_the_specialist_surfaces_and_resumes_it(local_model: str, tmp_path: Path, workspace: Path) -> None:
    (workspace / "old.txt").write_text("obsolete\n")
    agent = team(tmp_path, workspace, 3, {
        "files": Specialist(description="Writes and deletes files in the workspace.", tools=["files_write", "files_delete"]),
    })
    result = await agent.run("Delete the file old.txt.")
    assert result.status == "waiting_approval", result
    [request] = result.approvals
    assert request["tool"] == "files_delete" and request["path"].startswith("files-") and request["args"]["path"] == "old.txt"
    assert (workspace / "old.txt").exists(), "nothing is deleted before a human decides"

    result = await agent.approve(request["approval_id"])
    assert result.status == "done", result
    assert not (workspace / "old.txt").exists()
