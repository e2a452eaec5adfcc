"""Typed streaming: ``Agent.astream`` / ``stream`` yield what a run does as it happens, end at an approval with
the approval in it, and a resume streams again; model text arrives in chunks from a model that streams."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kasloop import Agent, AgentConfig, ConfigError
from kasloop.config.schema import ProviderSettings
from kasloop.runtime.events import CallProposed, Done, TextChunk, ToolFinished
from anthropic_wire import anthropic_wire
from conftest import call


def kinds(events: list[Any]) -> list[str]:
    return [e.kind if e.kind not in ("node_started", "node_finished") else f"{e.kind}:{e.node}" for e in events]


async def collect(stream: Any) -> list[Any]:
    return [event async for event in stream]


async def test_the_event_order_of_a_run_with_one_approval_and_its_resume(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "old.txt").write_text("x")
    model = script({"content": "", "tool_calls": [call("files_delete", path="old.txt")]}, {"content": "old.txt is gone"})
    agent = Agent(AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")

    first = await collect(agent.astream("Delete old.txt.", thread_id="t"))
    assert kinds(first) == [
        "node_started:perceive", "node_finished:perceive", "node_started:decide", "call_proposed", "node_finished:decide",
        "node_started:human_approval", "approval_needed", "done",
    ]
    proposed = first[3]
    assert isinstance(proposed, CallProposed) and (proposed.tool, proposed.gate, proposed.risk) == ("files_delete", "ask", "high")
    assert first[-2].approvals[0]["approval_id"] == proposed.approval_id, "the stream ends at the approval, with it"
    assert isinstance(first[-1], Done) and (first[-1].status, first[-1].exit_code) == ("waiting_approval", 10)
    assert (workspace / "old.txt").exists()

    await agent.approve(proposed.approval_id, resume=False)
    second = await collect(agent.astream_resume("t"))
    assert kinds(second) == [
        "node_started:human_approval", "node_finished:human_approval", "node_started:act", "tool_started", "tool_finished",
        "node_finished:act", "node_started:perceive", "node_finished:perceive", "node_started:decide", "text", "node_finished:decide", "done",
    ]
    finished = second[4]
    assert isinstance(finished, ToolFinished) and finished.ok and finished.tool == "files_delete"
    assert [e.text for e in second if isinstance(e, TextChunk)] == ["old.txt is gone"]
    assert second[-1].status == "done" and second[-1].result["output"] == "old.txt is gone"
    assert not (workspace / "old.txt").exists()
    assert all(e.thread == "t" for e in first + second) and second[-1].model_dump(mode="json")["kind"] == "done"


async def streamed_answer(tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch, answer: str) -> tuple[list[Any], Any]:
    """Stream one goal on the real langchain-anthropic client against the local Messages API server (which streams)."""
    monkeypatch.setenv("KASLOOP_TEST_ANTHROPIC_KEY", "sk-ant-stream-0123456789")
    with anthropic_wire({"text": answer}) as wire:
        config = AgentConfig(
            autonomy=4, model="anthropic:claude-test", tools=["files"], workspace=workspace, diagnose_with_model=False,
            providers={"anthropic": ProviderSettings(base_url=wire.url, api_key_env="KASLOOP_TEST_ANTHROPIC_KEY")},
        )
        return await collect(Agent(config, home=tmp_path / ".kasloop").astream("Answer.")), wire


async def test_text_chunks_arrive_before_the_turn_ends_with_a_model_that_streams(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = "The answer is forty-two, and here is a longer sentence so that it arrives in several pieces."
    events, wire = await streamed_answer(tmp_path, workspace, monkeypatch, answer)
    chunks = [e.text for e in events if isinstance(e, TextChunk)]
    assert len(chunks) > 1 and "".join(chunks) == answer, chunks
    decide_done = kinds(events).index("node_finished:decide")
    assert max(i for i, e in enumerate(events) if isinstance(e, TextChunk)) < decide_done, "chunks came while the turn ran"
    assert wire.decisions[0].get("stream") is True
    assert events[-1].status == "done" and events[-1].result["usage"]["output_tokens"] > 0, "a streamed reply still counts its tokens"


def test_the_sync_twin_streams_the_same_events_and_raises_a_commands_error(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    model = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="A")]}, {"content": "wrote a.txt"})
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    events = list(agent.stream("Write a.txt.", thread_id="s"))
    assert [e.kind for e in events if e.kind in ("tool_started", "tool_finished", "done")] == ["tool_started", "tool_finished", "done"]
    assert events[-1].status == "done" and (workspace / "a.txt").read_text() == "A"

    missing = Agent(AgentConfig(autonomy=4, model="scripted:/nonexistent.jsonl", tools=["files"], workspace=workspace), home=tmp_path / ".k2")
    with pytest.raises(ConfigError, match="does not exist"):
        list(missing.stream("go"))


async def test_a_secret_in_streamed_text_is_redacted_even_split_across_chunks(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-streamed-secret-9876543210")
    answer = "Here it is: sk-openai-streamed-secret-9876543210 and some more words after the key to stream."
    events, _ = await streamed_answer(tmp_path, workspace, monkeypatch, answer)
    chunks = [e.text for e in events if isinstance(e, TextChunk)]
    assert len(chunks) > 1
    streamed = "".join(chunks)
    assert "9876543210" not in streamed and "streamed-secret" not in streamed and "some more words" in streamed


async def test_closing_the_stream_early_stops_the_run_after_its_node_and_resume_finishes_it(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    model = script(
        {"content": "", "tool_calls": [call("files_append", path="log.txt", content="a")]},
        {"content": "", "tool_calls": [call("files_append", path="log.txt", content="b")]},
        {"content": "logged"},
    )
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    async with contextlib.aclosing(agent.astream("Log a and b.", thread_id="t")) as events:
        async for event in events:
            if event.kind == "tool_finished":
                break
    assert (workspace / "log.txt").read_text() == "a"
    done = await agent.resume("t")
    assert done.status == "done" and (workspace / "log.txt").read_text() == "ab", "each append ran once"


def test_leaving_a_sync_stream_early_stops_the_run_too(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    model = script(
        {"content": "", "tool_calls": [call("files_append", path="log.txt", content="a")]},
        {"content": "", "tool_calls": [call("files_append", path="log.txt", content="b")]},
        {"content": "logged"},
    )
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    for event in agent.stream("Log a and b.", thread_id="t"):
        if event.kind == "tool_finished":
            break
    assert (workspace / "log.txt").read_text() == "a", "the run stopped after act; b was never proposed"
    assert agent.resume_sync("t").status == "done" and (workspace / "log.txt").read_text() == "ab"
