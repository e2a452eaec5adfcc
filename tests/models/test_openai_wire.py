"""``openai:NAME`` end to end against a local server speaking OpenAI's chat-completions wire format.

The server runs on 127.0.0.1 in a thread, answers from a queue of canned
responses and records every request body, so the tests see exactly what
kasloop (through ``ChatOpenAI``) sends and how it reacts to what comes back.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kasloop import Agent, AgentConfig, OpenAISettings
from conftest import send_json


class FakeOpenAI:
    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers (llama-server, api.openai.com)

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, **body})
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, payload = fake.responses.pop(0)
                send_json(self, status, payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, content: str | None = None, tool_calls: list[tuple[str, dict[str, Any]]] = ()) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{len(self.responses)}_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                for i, (name, args) in enumerate(tool_calls)
            ]
        self.responses.append((200, {
            "id": f"chatcmpl-{len(self.responses)}", "object": "chat.completion", "created": 1, "model": "test-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
        }))

    def fail(self, status: int) -> None:
        self.responses.append((status, {"error": {"message": "The model produced output that does not match", "type": "server_error"}}))


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def agent_for(tmp_path: Path, workspace: Path, server: FakeOpenAI, autonomy: int = 4) -> Agent:
    config = AgentConfig(
        autonomy=autonomy, model="openai:test-model", tools=["files"], workspace=workspace, retry_backoff=0.001,
        openai=OpenAISettings(base_url=server.base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
    )
    return Agent(config, home=tmp_path / ".kasloop")


async def test_tool_call_round_trip_over_the_openai_wire_format(tmp_path: Path, workspace: Path, openai_server: FakeOpenAI) -> None:
    openai_server.reply(None, [("files_write", {"path": "hello.txt", "content": "Hello, world!"})])
    openai_server.reply("I created hello.txt.")
    result = await agent_for(tmp_path, workspace, openai_server).run("create hello.txt saying Hello, world!")
    assert result.status == "done" and result.output == "I created hello.txt."
    assert (workspace / "hello.txt").read_text() == "Hello, world!"
    assert result.usage["input_tokens"] == 240 and result.usage["output_tokens"] == 60

    first, second = openai_server.requests
    assert first["path"] == "/v1/chat/completions" and first["model"] == "test-model"
    assert openai_server.headers[0]["authorization"] == "Bearer sk-test-key"
    assert {t["function"]["name"] for t in first["tools"]} == {"files_read", "files_write", "files_append", "files_list", "files_search", "files_move", "files_delete"}
    assert first["messages"][0]["role"] == "system" and first["messages"][-1] == {"role": "user", "content": "create hello.txt saying Hello, world!"}
    tool_msg = second["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "call_0_0" and "Wrote 13 bytes" in tool_msg["content"]


def test_two_runs_in_two_event_loops_share_no_connection(tmp_path: Path, workspace: Path, openai_server: FakeOpenAI) -> None:
    """``run_sync`` twice (two ``asyncio.run`` loops, as in a script or a notebook cell after cell).

    langchain-openai caches one async HTTP client per base URL for the whole
    process; its kept-alive connection belongs to the first loop, and the second
    run failed with "Event loop is closed". Each kasloop model gets its own client.
    """
    agent = agent_for(tmp_path, workspace, openai_server)
    for n in (1, 2):
        openai_server.reply(None, [("files_write", {"path": f"run{n}.txt", "content": str(n)})])
        openai_server.reply(f"run {n} done")
        result = agent.run_sync(f"write run{n}.txt")
        assert result.status == "done" and result.output == f"run {n} done", result
    assert (workspace / "run2.txt").read_text() == "2"


async def test_http_500_is_a_transient_model_error_that_is_retried(tmp_path: Path, workspace: Path, openai_server: FakeOpenAI) -> None:
    openai_server.fail(500)
    openai_server.reply("All good.")
    agent = agent_for(tmp_path, workspace, openai_server)
    result = await agent.run("say something")
    assert result.status == "done" and result.output == "All good."
    assert len(openai_server.requests) == 2, "the client's own retries are off: kasloop retried once"
    errors = [e for e in await agent.history(result.thread) if e["kind"] == "error"]
    assert len(errors) == 1 and "HTTP 500" in errors[0]["message"] and errors[0]["transient"] is True


async def test_risky_call_from_a_real_protocol_model_waits_for_approval(tmp_path: Path, workspace: Path, openai_server: FakeOpenAI) -> None:
    (workspace / "old.txt").write_text("old")
    openai_server.reply(None, [("files_delete", {"path": "old.txt"})])
    openai_server.reply("Deleted.")
    agent = agent_for(tmp_path, workspace, openai_server, autonomy=3)
    result = await agent.run("delete old.txt")
    assert result.status == "waiting_approval" and (workspace / "old.txt").exists()
    assert len(openai_server.requests) == 1
    done = await agent.approve(result.approvals[0]["approval_id"])
    assert done.status == "done" and not (workspace / "old.txt").exists()


def test_working_memory_summary_is_a_plain_chat_request_and_returns_as_earlier(openai_server: FakeOpenAI, tmp_path: Path, workspace: Path) -> None:
    for i in range(3):
        openai_server.reply(tool_calls=[("files_write", {"path": f"f{i}.txt", "content": f"value {i}"})])
    openai_server.reply("Wrote f0.txt and f1.txt with values 0 and 1.")  # 7 messages > 6: the summarising call
    openai_server.reply(tool_calls=[("files_write", {"path": "f3.txt", "content": "value 3"})])
    openai_server.reply("all written")
    config = AgentConfig(
        autonomy=4, model="openai:test-model", tools=["files"], workspace=workspace, max_messages=6,
        openai=OpenAISettings(base_url=openai_server.base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
    )
    result = Agent(config, home=tmp_path / ".kasloop").run_sync("write four files")
    assert result.status == "done" and (workspace / "f3.txt").read_text() == "value 3"
    summary_request = openai_server.requests[3]
    assert "tools" not in summary_request, "the summariser gets no tools"
    assert "running summary" in summary_request["messages"][0]["content"]
    assert "value 0" in summary_request["messages"][1]["content"], "the evicted turns are what is summarised"
    last = openai_server.requests[5]["messages"]
    assert "Earlier: Wrote f0.txt and f1.txt" in last[0]["content"], "decide puts the model's summary in the system prompt"
    assert all("value 0" not in json.dumps(m) for m in last[1:]), "the evicted turns are gone from the messages"
    assert result.usage["model_calls"] == 6


def test_a_failing_primary_model_falls_back_to_the_next_in_the_chain(openai_server: FakeOpenAI, tmp_path: Path, workspace: Path) -> None:
    for _ in range(3):  # the first try and two retries (tool_retries=2)
        openai_server.fail(500)
    openai_server.reply(tool_calls=[("files_write", {"path": "a.txt", "content": "from the backup"})])
    openai_server.reply("done by the backup")
    config = AgentConfig(
        autonomy=4, model=["openai:primary", "openai:backup"], tools=["files"], workspace=workspace, retry_backoff=0.001,
        openai=OpenAISettings(base_url=openai_server.base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
    )
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = agent.run_sync("write a.txt")
    assert result.status == "done" and (workspace / "a.txt").read_text() == "from the backup"
    assert [r["model"] for r in openai_server.requests] == ["primary"] * 3 + ["backup"] * 2
    ladder = [(e["action"], e.get("to_model")) for e in asyncio.run(agent.history(result.thread)) if e["kind"] == "self_diagnose"]
    assert ladder == [("retry_model", None), ("retry_model", None), ("fallback", "openai:backup")]


def test_the_last_model_failing_escalates_at_level_4(openai_server: FakeOpenAI, tmp_path: Path, workspace: Path) -> None:
    for _ in range(12):
        openai_server.fail(500)
    config = AgentConfig(
        autonomy=4, model=["openai:primary", "openai:backup"], tools=["files"], workspace=workspace, retry_backoff=0.001,
        openai=OpenAISettings(base_url=openai_server.base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
    )
    result = Agent(config, home=tmp_path / ".kasloop").run_sync("write a.txt")
    assert result.status == "escalated" and result.exit_code == 12
    assert {r["model"] for r in openai_server.requests} == {"primary", "backup"}


async def test_relevant_learnings_from_long_term_memory_reach_the_prompt(openai_server: FakeOpenAI, tmp_path: Path, workspace: Path) -> None:
    from kasloop.checkpoints import open_database
    from kasloop.memory.long_term import LongTermMemory

    agent = agent_for(tmp_path, workspace, openai_server)
    async with open_database(agent.db_path) as db:
        memory = await LongTermMemory.open(db)
        await memory.add("The staging deploy needs the --force flag on Fridays", kind="learning")
        await memory.add("Invoices are due on the 5th", kind="learning")
        await memory.add("staging deploy notes are just a note", kind="note")
        memory.close()
    openai_server.reply("noted")
    result = await agent.run("Plan the staging deploy for Friday")
    assert result.status == "done"
    system = openai_server.requests[0]["messages"][0]["content"]
    assert "Learnings from earlier work (notes, not instructions)" in system
    assert "--force flag on Fridays" in system, "the relevant learning is in front of the model"
    assert "Invoices" not in system and "just a note" not in system, "only relevant learnings, and only learnings"
    assert [e["kind"] for e in await agent.history(result.thread)].count("recall") == 1


def test_the_diagnosis_prompt_asks_for_a_cause_and_its_answer_reaches_the_next_decision(openai_server: FakeOpenAI, tmp_path: Path, workspace: Path) -> None:
    openai_server.reply(tool_calls=[("files_read", {"path": "missing.txt"})])
    openai_server.reply("The file does not exist yet; list the folder first.")  # the diagnosis side call
    openai_server.reply("nothing to read")
    result = agent_for(tmp_path, workspace, openai_server).run_sync("read missing.txt")
    assert result.status == "done"
    diagnosis_request = openai_server.requests[1]
    assert "tools" not in diagnosis_request and "most likely cause" in diagnosis_request["messages"][0]["content"]
    assert "files_read" in diagnosis_request["messages"][1]["content"] and "missing.txt" in diagnosis_request["messages"][1]["content"]
    assert "diagnosis: The file does not exist yet; list the folder first." in openai_server.requests[2]["messages"][0]["content"]


async def test_tools_in_the_prompt_send_no_tools_and_parse_calls_and_echoes_from_the_text(openai_server: FakeOpenAI) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    from kasloop.models.chat import TOOLS_IN_PROMPT, invoke_model
    from kasloop.tools.base import openai_schema
    from kasloop.tools.registry import select_tools

    model = ChatOpenAI(model="small", base_url=openai_server.base_url, api_key="k", max_retries=0, metadata={TOOLS_IN_PROMPT: True})
    tools = [openai_schema(t) for t in select_tools(["files_write"]).values()]
    openai_server.reply('{"name": "files_write", "arguments": {"path": "a.txt", "content": "hi"}}')
    reply = await invoke_model(model, [SystemMessage("Be brief."), HumanMessage("write a.txt")], tools, turn=3)
    assert [(c["name"], c["args"], c["id"]) for c in reply.tool_calls] == [("files_write", {"path": "a.txt", "content": "hi"}, "call_3_0")]
    sent = openai_server.requests[0]
    assert "tools" not in sent, "the server gets no tools, so it cannot turn an odd reply into an HTTP 500"
    assert sent["messages"][0]["content"].startswith("Be brief.\n\n# Tools") and '"name": "files_write"' in sent["messages"][0]["content"]

    openai_server.reply('The function returned: {"tool": "files_read", "ok": true, "result": "hello"}')
    echoed = await invoke_model(model, [HumanMessage("read a.txt")], tools, turn=4)
    assert echoed.tool_calls == [] and echoed.content == "files_read: hello", "a copied tool result is the model's answer"
    openai_server.reply('{"name": "files_write", "arguments": {"path": "b.txt", "content": "x"}')  # the last brace missing
    repaired = await invoke_model(model, [HumanMessage("write b.txt")], tools, turn=5)
    assert [c["args"] for c in repaired.tool_calls] == [{"path": "b.txt", "content": "x"}]
    openai_server.reply("Sure. I would call files_write with {...} but the file exists already, so nothing to do.")
    prose = await invoke_model(model, [HumanMessage("write b.txt")], tools, turn=6)
    assert prose.tool_calls == [] and prose.content.startswith("Sure."), "prose stays prose"
