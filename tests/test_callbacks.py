"""LangChain callbacks pass through every run, so LangSmith or any tracer sees nodes and model calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler

from kasloop import Agent, AgentConfig, Specialist
from conftest import call


class Recorder(AsyncCallbackHandler):
    """A tracer: records the chains (graph nodes) and chat-model calls it is told about."""

    def __init__(self) -> None:
        self.chains: list[str] = []
        self.model_calls: list[str] = []

    async def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name")
        if name:
            self.chains.append(str(name))

    async def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: Any, **kwargs: Any) -> None:
        self.model_calls.append(str(messages[0][-1].content)[:40])


async def test_a_tracer_sees_every_node_and_model_call_of_a_team(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    code = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="a")]}, {"content": "wrote a.txt"})
    manager = script({"content": "", "tool_calls": [call("delegate", specialist="code", task="write a.txt")]}, {"content": "done"})
    tracer = Recorder()
    config = AgentConfig(autonomy=4, model=manager, tools=[], workspace=workspace, run_team="crew",
                         team={"crew": {"code": Specialist(description="Writes files.", tools=["files"], model=code)}})
    agent = Agent(config, home=tmp_path / ".kasloop", callbacks=[tracer])

    result = await agent.run("write a.txt", thread_id="t")

    assert result.status == "done"
    assert {"kasloop-team", "kasloop-code", "perceive", "decide", "act"} <= set(tracer.chains), tracer.chains
    assert len(tracer.model_calls) == result.usage["model_calls"] == 4, "the manager's 2 model calls and the specialist's 2"
    assert "write a.txt" in tracer.model_calls, "the specialist's first call starts from its task"
