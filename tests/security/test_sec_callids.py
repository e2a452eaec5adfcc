"""Calls are identified by kasloop, not by the model.

A model (scripted, or a real protocol model server) that gives two calls the
same id must not get one of them reported as a reused success without running
(level 4), nor leave a thread stuck on two approvals with one id (level 3).
kasloop names every call ``call_<turn>_<index>``; the ledger reuses a recorded
result only for the same tool and arguments, and a row under the key for other
arguments is a ``conflict`` error the model reads. Each case has a positive
control: the same calls with distinct ids (or none) behave the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from kasloop import Agent, AgentConfig, OpenAISettings
from kasloop.checkpoints import open_database
from kasloop.checkpoints.ledger import Ledger, idempotency_key
from kasloop.nodes.decide import with_call_ids
from kasloop.guardrails.policy import arg_hash
from conftest import CLIResult, cli_runner, write_script
from wire_model import wire_model

ID_PAIRS = [("dup", "dup"), ("a", "b"), (None, None)]
ID_NAMES = ["same-id", "control-distinct-ids", "control-no-ids"]


def append(content: str, call_id: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "files_append", "args": {"path": "log.txt", "content": content}}
    if call_id is not None:
        spec["id"] = call_id
    return spec


def two_appends(tmp_path: Path, ids: tuple[str | None, str | None]) -> str:
    path = write_script(tmp_path / "s.jsonl", [{"content": "", "tool_calls": [append("one\n", ids[0]), append("two\n", ids[1])]}, {"content": "done"}])
    return f"scripted:{path}"


def cli(tmp_path: Path) -> Callable[..., CLIResult]:
    (tmp_path / "ws").mkdir()
    return cli_runner(tmp_path)


def history(kasloop: Callable[..., CLIResult], thread: str) -> list[dict[str, Any]]:
    done = kasloop("history", thread, "--json")
    assert done.code == 0, done
    return list(done.json())


@pytest.mark.parametrize("ids", ID_PAIRS, ids=ID_NAMES)
def test_level_4_runs_both_calls_whatever_ids_the_model_gave(tmp_path: Path, ids: tuple[str | None, str | None]) -> None:
    kasloop = cli(tmp_path)
    done = kasloop("run", "append two lines", "--autonomy", "4", "--model", two_appends(tmp_path, ids), "--tools", "files", "--workspace", "ws", "--thread", "t", "--json")
    assert done.code == 0 and done.json()["status"] == "done", done
    assert (tmp_path / "ws" / "log.txt").read_text() == "one\ntwo\n", "both appends ran"
    tools = [e for e in history(kasloop, "t") if e["kind"] == "tool"]
    assert [(e["call_id"], e["ok"], e["reused"]) for e in tools] == [("call_0_0", True, False), ("call_0_1", True, False)]
    assert done.json()["usage"]["tool_calls"] == 2


@pytest.mark.parametrize("ids", ID_PAIRS[:2], ids=ID_NAMES[:2])
def test_level_3_asks_for_each_call_with_its_own_approval_and_both_run(tmp_path: Path, ids: tuple[str | None, str | None]) -> None:
    kasloop = cli(tmp_path)
    (tmp_path / "kasloop.toml").write_text('[[rules]]\ntool = "files_append"\naction = "ask"\n')
    waiting = kasloop("run", "append two lines", "--autonomy", "3", "--model", two_appends(tmp_path, ids), "--tools", "files", "--workspace", "ws", "--thread", "t", "--json")
    assert waiting.code == 10, waiting
    listed = kasloop("approvals", "--json")
    assert listed.code == 0, listed
    requests = listed.json()
    assert [r["args"]["content"] for r in requests] == ["one\n", "two\n"]
    first, second = (r["approval_id"] for r in requests)
    assert first != second, "two calls, two approvals"
    still = kasloop("approve", first)
    assert still.code == 10 and not (tmp_path / "ws" / "log.txt").exists(), still
    done = kasloop("approve", second)
    assert done.code == 0, done
    assert (tmp_path / "ws" / "log.txt").read_text() == "one\ntwo\n"


def test_level_3_one_approved_one_rejected_with_the_same_model_id(tmp_path: Path) -> None:
    kasloop = cli(tmp_path)
    (tmp_path / "kasloop.toml").write_text('[[rules]]\ntool = "files_append"\naction = "ask"\n')
    waiting = kasloop("run", "append two lines", "--autonomy", "3", "--model", two_appends(tmp_path, ("dup", "dup")), "--tools", "files", "--workspace", "ws", "--thread", "t")
    assert waiting.code == 10, waiting
    first, second = (r["approval_id"] for r in kasloop("approvals", "--json").json())
    assert kasloop("reject", first, "--reason", "not this one").code == 10
    done = kasloop("approve", second)
    assert done.code == 0, done
    assert (tmp_path / "ws" / "log.txt").read_text() == "two\n", "exactly the approved call ran"


# --------------------------------------------------------------------------- the ledger matches key and arguments


async def seeded_agent(tmp_path: Path, workspace: Path, script: Callable[..., str], recorded_args: dict[str, Any]) -> Agent:
    """An agent whose ledger already holds a finished row under the key of thread t's first call."""
    model = script(
        {"tool_calls": [{"name": "files_write", "args": {"path": "a.txt", "content": "real"}}]},
        {"tool_calls": [{"name": "files_write", "args": {"path": "a.txt", "content": "real"}}]},
        {"content": "done"},
    )
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    async with open_database(agent.db_path) as db:
        ledger = Ledger(db)
        key = idempotency_key("t", 0, "call_0_0", 0)
        assert await ledger.claim(key, thread_id="t", call_id="call_0_0", tool="files_write", arg_hash=arg_hash("files_write", recorded_args), idempotent=False) is None
        await ledger.record_result(key, {"ok": True, "output": "Wrote 6 bytes to a.txt (recorded)", "error_kind": None, "metadata": {}})
    return agent


async def test_a_ledger_row_for_other_arguments_is_a_conflict_never_a_reuse(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = await seeded_agent(tmp_path, workspace, script, {"path": "a.txt", "content": "OTHER"})
    result = await agent.run("write a.txt", thread_id="t")
    assert result.status == "done"
    tools = [e for e in await agent.history("t") if e["kind"] == "tool"]
    assert [(e["call_id"], e["ok"], e["error_kind"], e["reused"]) for e in tools] == [("call_0_0", False, "conflict", False), ("call_1_0", True, None, False)]
    assert "other arguments" in tools[0]["output"], "the model reads why"
    assert (workspace / "a.txt").read_text() == "real", "the model's second proposal ran; the recorded row was not taken as its result"


async def test_control_a_ledger_row_for_the_same_arguments_is_reused(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    agent = await seeded_agent(tmp_path, workspace, script, {"path": "a.txt", "content": "real"})
    result = await agent.run("write a.txt", thread_id="t")
    assert result.status == "done"
    tools = [e for e in await agent.history("t") if e["kind"] == "tool"]
    assert (tools[0]["ok"], tools[0]["reused"]) == (True, True) and "(recorded)" in tools[0]["output"], "a recorded side effect is never run twice"


async def test_ledger_entries_match_on_tool_and_arguments(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        ledger = Ledger(db)
        assert await ledger.claim("k", thread_id="t", call_id="c", tool="files_write", arg_hash="h1", idempotent=False) is None
        entry = await ledger.claim("k", thread_id="t", call_id="c", tool="files_write", arg_hash="h2", idempotent=False)
    assert entry is not None and entry.matches("files_write", "h1")
    assert not entry.matches("files_write", "h2") and not entry.matches("files_delete", "h1")


# --------------------------------------------------------------------------- a real protocol model


def wire_agent(tmp_path: Path, workspace: Path, base_url: str) -> Agent:
    config = AgentConfig(
        autonomy=4, model="openai:test-model", tools=["files"], workspace=workspace, retry_backoff=0.001, diagnose_with_model=False,
        openai=OpenAISettings(base_url=base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
    )
    return Agent(config, home=tmp_path / ".kasloop")


@pytest.mark.parametrize("ids", [("dup", "dup"), ("x1", "x2")], ids=["same-id", "control-distinct-ids"])
async def test_a_protocol_model_with_duplicate_ids_gets_a_history_it_accepts(tmp_path: Path, workspace: Path, ids: tuple[str, str]) -> None:
    with wire_model() as model:
        model.reply(None, [("files_append", {"path": "log.txt", "content": "one\n"}, ids[0]), ("files_append", {"path": "log.txt", "content": "two\n"}, ids[1])])
        model.reply("done")
        result = await wire_agent(tmp_path, workspace, model.base_url).run("append two lines")
    assert result.status == "done", result
    assert (workspace / "log.txt").read_text() == "one\ntwo\n"
    sent = model.decisions[1]["messages"]
    [assistant] = [m for m in sent if m["role"] == "assistant"]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0_0", "call_0_1"], "the stored reply carries kasloop's ids"
    assert sorted(m["tool_call_id"] for m in sent if m["role"] == "tool") == ["call_0_0", "call_0_1"], "each answered once (the server checks)"


async def test_an_unparsable_call_beside_a_valid_one_is_answered_too(tmp_path: Path, workspace: Path) -> None:
    with wire_model() as model:
        model.reply(None, [("files_append", {"path": "log.txt", "content": "one\n"}, "dup")])
        model.replies[-1]["tool_calls"].append({"id": "dup", "type": "function", "function": {"name": "files_append", "arguments": "{not json"}})
        model.reply("done")
        result = await wire_agent(tmp_path, workspace, model.base_url).run("append a line")
    assert result.status == "done", result
    assert (workspace / "log.txt").read_text() == "one\n"
    tools = [m for m in model.decisions[1]["messages"] if m["role"] == "tool"]
    assert len(tools) == 2 and any(json.loads(m["content"]).get("error") == "bad_args" for m in tools)


def test_provider_copies_of_the_calls_are_renamed_in_order() -> None:
    reply = AIMessage(
        content=[
            {"type": "text", "text": "two calls"},
            {"type": "tool_use", "id": "toolu_1", "name": "files_append", "input": {"path": "a", "content": "1"}},
            {"type": "tool_use", "id": "toolu_1", "name": "files_append", "input": {"path": "a", "content": "2"}},
        ],
        tool_calls=[
            {"name": "files_append", "args": {"path": "a", "content": "1"}, "id": "toolu_1", "type": "tool_call"},
            {"name": "files_append", "args": {"path": "a", "content": "2"}, "id": "toolu_1", "type": "tool_call"},
        ],
        additional_kwargs={"tool_calls": [{"id": "toolu_1", "function": {}}, {"id": "toolu_1", "function": {}}]},
    )
    renamed = with_call_ids(reply, 7)
    assert [c["id"] for c in renamed.tool_calls] == ["call_7_0", "call_7_1"]
    assert [b["id"] for b in renamed.content if isinstance(b, dict) and b.get("type") == "tool_use"] == ["call_7_0", "call_7_1"]
    assert [c["id"] for c in renamed.additional_kwargs["tool_calls"]] == ["call_7_0", "call_7_1"]
    assert renamed.response_metadata["kasloop_model_call_ids"] == ["toolu_1", "toolu_1"]
    assert [c["id"] for c in reply.tool_calls] == ["toolu_1", "toolu_1"], "the original message is not changed in place"
