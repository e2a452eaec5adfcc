"""The ``progress`` callback: each node is named as it starts (the node running now) and again with its
update once it finished, in the graph's real order, and never by one of LangGraph's internal names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler

from kasloop import Agent, AgentConfig, Specialist
from conftest import call

NODES = {"perceive", "decide", "act", "self_diagnose", "human_approval"}


class Progress:
    """A ``ProgressCallback`` that also wants to hear when a node starts."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.running: str | None = None

    def node_started(self, node: str) -> None:
        self.events.append(("start", node))
        self.running = node

    def __call__(self, node: str, update: dict[str, Any]) -> None:
        assert isinstance(update, dict)
        self.events.append(("end", node))

    def started(self) -> list[str]:
        return [n for kind, n in self.events if kind == "start"]

    def finished(self) -> list[str]:
        return [n for kind, n in self.events if kind == "end"]


class NodeWatcher(AsyncCallbackHandler):
    """A tracer: the moment a graph node really begins, it notes which node the progress callback says runs."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.ran: list[str] = []
        self.shown_while_running: list[str | None] = []

    async def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, **kwargs: Any) -> None:
        name = kwargs.get("name")
        if name in NODES and (kwargs.get("metadata") or {}).get("langgraph_node") == name:
            self.ran.append(name)
            self.shown_while_running.append(self.progress.running)


def assert_well_formed(progress: Progress) -> None:
    """Every start is followed by that node's end (the last one may be a node that paused), no internal names."""
    assert all(not n.startswith("__") for _, n in progress.events), progress.events
    assert set(progress.started()) <= NODES
    kinds = [k for k, _ in progress.events]
    assert kinds[::2] == ["start"] * len(kinds[::2]) and kinds[1::2] == ["end"] * len(kinds[1::2]), progress.events
    pairs = list(zip(progress.events[::2], progress.events[1::2]))
    assert all(s[1] == e[1] for s, e in pairs), progress.events


async def test_started_nodes_follow_the_real_order_through_an_approval_and_an_error(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    model = script({"content": "", "tool_calls": [call("files_read", path="missing.txt")]}, {"content": "There is no missing.txt."})
    progress = Progress()
    watcher = NodeWatcher(progress)
    agent = Agent(AgentConfig(autonomy=2, model=model, tools=["files"], workspace=workspace),
                  home=tmp_path / ".kasloop", progress=progress, callbacks=[watcher])

    waiting = await agent.run("read missing.txt", thread_id="t")

    assert waiting.status == "waiting_approval"
    assert progress.started() == ["perceive", "decide", "human_approval"]
    assert progress.finished() == ["perceive", "decide"], "human_approval paused: it did not finish (no `__interrupt__`)"
    assert_well_formed(progress)
    assert watcher.ran == progress.started(), "started in the order the graph really ran them"
    assert watcher.shown_while_running == watcher.ran, "each node was the one named while it ran"

    progress.events.clear()
    watcher.ran.clear()
    watcher.shown_while_running.clear()
    done = await agent.approve(waiting.approvals[0]["approval_id"])

    assert done.status == "done"
    # The resumed approval node, the failed read, its diagnosis, and the model's final answer.
    assert progress.started() == progress.finished() == ["human_approval", "act", "self_diagnose", "decide"]
    assert_well_formed(progress)
    assert watcher.ran == progress.started()
    assert watcher.shown_while_running == watcher.ran


async def test_a_plain_function_still_gets_each_finished_node_and_its_update(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    """The original contract: ``progress(node, update)`` after every node; no start notifications asked for."""
    model = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="a")]}, {"content": "wrote a.txt"})
    seen: list[tuple[str, dict[str, Any]]] = []
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace),
                  home=tmp_path / ".kasloop", progress=lambda node, update: seen.append((node, update)))

    result = await agent.run("write a.txt", thread_id="t")

    assert result.status == "done"
    assert [n for n, _ in seen] == ["perceive", "decide", "act", "perceive", "decide"]
    assert seen[0][1]["usage"]["steps"] == 1
    assert seen[1][1]["pending"][0]["tool"] == "files_write"


async def test_a_team_reports_the_managers_nodes_only(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """A specialist runs inside the manager's ``act``: the manager's nodes are the ones named."""
    code = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="a")]}, {"content": "wrote a.txt"})
    manager = script({"content": "", "tool_calls": [call("delegate", specialist="code", task="write a.txt")]}, {"content": "done"})
    progress = Progress()
    config = AgentConfig(autonomy=4, model=manager, tools=[], workspace=workspace, run_team="crew",
                         team={"crew": {"code": Specialist(description="Writes files.", tools=["files"], model=code)}})
    agent = Agent(config, home=tmp_path / ".kasloop", progress=progress)

    result = await agent.run("write a.txt", thread_id="t")

    assert result.status == "done" and (workspace / "a.txt").read_text() == "a"
    assert progress.started() == progress.finished() == ["perceive", "decide", "act", "perceive", "decide"]
    assert_well_formed(progress)
