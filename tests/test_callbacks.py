"""LangChain callbacks pass through every run, so LangSmith or any tracer sees nodes and model calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler

from kasloop import Agent, AgentConfig, Specialist
from conftest import call


class Recorder(AsyncCallbackHandler):
    """A tracer: records the chains (graph nodes), chat-model calls and tool runs it is told about."""

    def __init__(self) -> None:
        self.chains: list[str] = []
        self.model_calls: list[str] = []
        self.tools: list[tuple[str, str, str]] = []
        """(event, tool name, input or output or error text), in order."""
        self._names: dict[Any, str] = {}

    async def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, **kwargs: Any) -> None:
        self._names[kwargs["run_id"]] = str((serialized or {}).get("name"))
        self.tools.append(("start", self._names[kwargs["run_id"]], input_str))

    async def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        self.tools.append(("end", self._names[kwargs["run_id"]], str(output)))

    async def on_tool_error(self, error: BaseException, **kwargs: Any) -> None:
        self.tools.append(("error", self._names[kwargs["run_id"]], str(error)))

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


async def test_a_tracer_sees_a_span_for_every_tool_call_with_what_the_model_saw(
    tmp_path: Path, workspace: Path, script: Callable[..., str], monkeypatch: Any,
) -> None:
    """Built-in tools fire LangChain's on_tool_start / on_tool_end / on_tool_error (issue 17: tracers show
    tool spans); the output reaches the tracer redacted, as it reaches the model."""
    monkeypatch.setenv("KASLOOP_TEST_TOKEN", "tok-9f8e7d6c5b4a39281706")
    (workspace / "notes.txt").write_text("the key is tok-9f8e7d6c5b4a39281706\n")
    model = script(
        {"content": "", "tool_calls": [call("files_read", path="notes.txt")]},
        {"content": "", "tool_calls": [call("files_write", path="a.txt", content="a")]},
        {"content": "", "tool_calls": [call("files_read", path="missing.txt")]},
        {"content": "done"},
    )
    tracer = Recorder()
    config = AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace, secret_env=["KASLOOP_TEST_TOKEN"])
    result = await Agent(config, home=tmp_path / ".kasloop", callbacks=[tracer]).run("read, write, read", thread_id="t")

    assert result.status == "done"
    assert [(event, name) for event, name, _ in tracer.tools] == [
        ("start", "files_read"), ("end", "files_read"), ("start", "files_write"), ("end", "files_write"),
        ("start", "files_read"), ("error", "files_read"),
    ], tracer.tools
    assert "notes.txt" in tracer.tools[0][2] and "missing.txt" in tracer.tools[4][2] and "a.txt" in tracer.tools[2][2]
    assert "the key is" in tracer.tools[1][2] and "tok-9f8e7d6c5b4a39281706" not in tracer.tools[1][2], "the output is redacted"
    assert "missing.txt" in tracer.tools[5][2] or "not" in tracer.tools[5][2].lower(), tracer.tools[5]
