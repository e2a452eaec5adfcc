"""Collaboration: scripted peers with equal authority share a blackboard and converge, or stop at the turn limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from kasloop import AgentConfig, Specialist
from kasloop.checkpoints.memory import MemoryEventLog
from kasloop.checkpoints import open_database
from kasloop.errors import ConfigError
from kasloop.graphs.collaboration import blackboard_store, build_collaboration_graph, read_blackboard
from kasloop.tools.base import ToolResources
from conftest import call, cli_runner


def post(text: str, kind: str = "proposal") -> dict[str, Any]:
    return {"content": "", "tool_calls": [call("blackboard_post", text=text, kind=kind)]}


async def run(graph: Any, thread: str, task: str) -> dict[str, Any]:
    return await graph.ainvoke({"task": task}, config={"configurable": {"thread_id": thread}})


async def test_two_peers_converge_on_a_shared_answer_on_a_real_sqlite_blackboard(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    solver = script(post("42"), {"content": "I propose 42."})
    checker = script(
        {"content": "", "tool_calls": [call("blackboard_read")]},
        post("  42 "),
        {"content": "Checked: 42 is right."},
    )
    config = AgentConfig(autonomy=4, tools=[], workspace=workspace)
    async with open_database(tmp_path / "kasloop.db") as db:
      resources = ToolResources(database=db)
      try:
        graph = build_collaboration_graph(
            config, {"solver": Specialist(description="Solves.", tools=["files_read"], model=solver),
                     "checker": Specialist(description="Checks.", tools=["files_read"], model=checker)},
            turn_limit=4, checkpointer=InMemorySaver(), resources=resources,
        )
        final = await run(graph, "c1", "What is six times seven?")
        assert final["status"] == "done" and final["output"] == "42"
        assert final["turn"] == 2
        board = await read_blackboard(await blackboard_store(resources), "c1")
        assert [(p["author"], p["kind"], p["text"]) for p in board] == [
            ("solver", "proposal", "42"), ("solver", "message", "I propose 42."),
            ("checker", "proposal", "  42 "), ("checker", "message", "Checked: 42 is right."),
        ]
      finally:
        await resources.aclose()


async def test_peers_that_never_agree_stop_at_the_turn_limit_escalated(workspace: Path, script: Callable[..., str]) -> None:
    # Each script has more turns than the limit allows: only the limit can stop them.
    stubborn_a = script(*[t for _ in range(3) for t in (post("red"), {"content": "Red."})])
    stubborn_b = script(*[t for _ in range(3) for t in (post("blue"), {"content": "Blue."})])
    graph = build_collaboration_graph(
        AgentConfig(autonomy=4, tools=[], workspace=workspace),
        {"a": Specialist(description="Likes red.", tools=["files_read"], model=stubborn_a),
         "b": Specialist(description="Likes blue.", tools=["files_read"], model=stubborn_b)},
        turn_limit=3, checkpointer=InMemorySaver(),
    )
    final = await run(graph, "c2", "Pick a colour")
    assert final["status"] == "escalated"
    assert final["turn"] == 3
    assert final["proposals"] == {"a": "red", "b": "blue"}
    assert final["usage"]["model_calls"] == 6, "two model calls per turn, three turns, none after the limit"


async def test_a_peer_cannot_call_a_tool_it_was_not_given(workspace: Path, script: Callable[..., str]) -> None:
    reader = script(
        {"content": "", "tool_calls": [call("files_write", path="x.txt", content="sneaky")]},
        post("done"),
        {"content": "I could not write; done."},
    )
    events = MemoryEventLog()
    graph = build_collaboration_graph(
        AgentConfig(autonomy=4, tools=[], workspace=workspace),
        {"reader": Specialist(description="Only reads.", tools=["files_read"], model=reader)},
        turn_limit=2, checkpointer=InMemorySaver(), events=events,
    )
    final = await run(graph, "c3", "Try to write a file")
    assert final["status"] == "done" and final["output"] == "done"
    assert not (workspace / "x.txt").exists()
    gates = [(e["thread_id"], c["tool"], c["gate"], c["reason"]) for e in events.events if e["kind"] == "decide" for c in e["calls"]]
    assert gates[0] == ("c3/reader-1", "files_write", "deny", "unknown tool")
    assert not any(e["kind"] == "tool" and e["tool"] == "files_write" for e in events.events)


async def test_an_approval_inside_a_peer_interrupts_the_collaboration_with_its_path(
    workspace: Path, script: Callable[..., str]
) -> None:
    writer = script(
        {"content": "", "tool_calls": [call("files_write", path="answer.txt", content="42")]},
        post("42"),
        {"content": "Wrote answer.txt."},
    )
    checker = script(post("42"), {"content": "Agreed."})
    graph = build_collaboration_graph(
        AgentConfig(autonomy=2, tools=[], workspace=workspace),
        {"writer": Specialist(description="Writes.", tools=["files"], model=writer),
         "checker": Specialist(description="Checks.", tools=["files_read"], model=checker)},
        turn_limit=4, checkpointer=InMemorySaver(),
    )
    cfg = {"configurable": {"thread_id": "c4"}}
    final = await graph.ainvoke({"task": "Write 42 to answer.txt"}, config=cfg)
    asked: list[tuple[str, str]] = []
    while (snapshot := await graph.aget_state(cfg)).interrupts:  # level 2 asks before every call of every peer
        asked += [(r["tool"], r["thread"]) for i in snapshot.interrupts for r in i.value["requests"]]
        if len(asked) == 1:
            assert not (workspace / "answer.txt").exists(), "nothing runs before it is approved"
        final = await graph.ainvoke(Command(resume={"decision": "approve"}), config=cfg)
    assert asked == [("files_write", "c4/writer-1"), ("blackboard_post", "c4/writer-1"), ("blackboard_post", "c4/checker-2")]
    assert (workspace / "answer.txt").read_text() == "42"
    assert final["status"] == "done" and final["output"] == "42" and final["turn"] == 2


async def test_a_turn_limit_below_one_is_a_config_error(workspace: Path) -> None:
    with pytest.raises(ConfigError, match="turn_limit"):
        build_collaboration_graph(AgentConfig(workspace=workspace), {"a": Specialist(description="x", tools=["files_read"])}, turn_limit=0)


async def test_kasloop_run_collaboration_from_the_config_with_an_approval_from_another_process(
    tmp_path: Path, workspace: Path, script: Callable[..., str], db_url: str
) -> None:
    """On both backends: the blackboard is kasloop's store in the SQLite file or on PostgreSQL."""
    (workspace / "draft.txt").write_text("6 x 7 = ?")
    solver = script(
        {"content": "", "tool_calls": [call("files_delete", path="draft.txt")]},
        post("42"),
        {"content": "Six sevens are 42; I removed the draft."},
        post("42"),  # the second task: the same answer again, before the checker has spoken
        {"content": "42 again."},
    )
    checker = script(post("42"), {"content": "Checked: 42."}, post("42"), {"content": "Still 42."})
    (tmp_path / "kasloop.toml").write_text(
        f'autonomy = 3\nworkspace = "{workspace}"\n'
        "[collaboration.review]\nturn_limit = 4\n"
        f'[collaboration.review.peers.solver]\ndescription = "Solves."\ntools = ["files"]\nmodel = "{solver}"\n'
        f'[collaboration.review.peers.checker]\ndescription = "Checks."\ntools = ["files_read"]\nmodel = "{checker}"\n'
    )
    cli = cli_runner(tmp_path, env={"KASLOOP_DB": db_url})

    ran = cli("run", "What is six times seven?", "--collaboration", "review", "--thread", "c", "--json")
    assert ran.code == 10, ran
    [request] = ran.json()["approvals"]
    assert (request["tool"], request["thread"], request["path"]) == ("files_delete", "c", "solver-1")
    assert (workspace / "draft.txt").exists()
    assert [a["path"] for a in cli("approvals", "--json").json()] == ["solver-1"]

    approved = cli("approve", request["approval_id"], "--json")
    assert approved.code == 0, approved
    assert approved.json()["status"] == "done" and approved.json()["output"] == "42"
    assert not (workspace / "draft.txt").exists()
    history = cli("history", "c", "--json").json()
    assert {e["path"] for e in history if e["kind"] == "tool"} == {"solver-1", "checker-2"}

    again = cli("run", "And again: six times seven?", "--thread", "c", "--json")
    assert again.code == 0, again.out[:3000]
    assert again.json()["output"] == "42"
    paths = {e["path"] for e in cli("history", "c", "--json").json() if e["kind"] == "tool" and e["tool"] == "blackboard_post"}
    assert paths == {"solver-1", "checker-2", "solver-2.1", "checker-2.2"}, "the first task's proposals did not count"


def test_an_unknown_collaboration_or_both_team_and_collaboration_is_one_clear_error(tmp_path: Path, workspace: Path) -> None:
    cli = cli_runner(tmp_path)
    unknown = cli("run", "x", "--collaboration", "nope", "--workspace", str(workspace))
    assert unknown.code == 2 and "collaboration `nope` is not defined" in unknown.err and "Traceback" not in unknown.err
    (tmp_path / "kasloop.toml").write_text('[collaboration.pair.peers.a]\ndescription = "A."\ntools = ["files_read"]\n')
    both = cli("run", "x", "--collaboration", "pair", "--team", "default", "--workspace", str(workspace))
    assert both.code == 2 and "exclude each other" in both.err
