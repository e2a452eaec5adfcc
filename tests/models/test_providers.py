"""Any chat model: ``PROVIDER:NAME`` specs through ``init_chat_model``, model objects through ``Agent(model=...)``.

The Anthropic path runs the real ``langchain-anthropic`` client against a local server speaking the
Messages API (tests/anthropic_wire.py); the OpenAI-compatible path against tests/wire_model.py; a
fallback chain mixes the two; a LangChain fake chat model object runs a whole thread with the database,
approvals and the CLI.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from kasloop import Agent, AgentConfig, Budgets, ConfigError, OpenAISettings
from kasloop.config.schema import ModelPrice, ProviderSettings
from kasloop.models.providers import PROVIDERS
from kasloop.safety.secrets import Redactor
from anthropic_wire import anthropic_wire
from conftest import CLIResult
from wire_model import wire_model

KEY = "sk-ant-test-0123456789abcdef"


def write(path: str, content: str) -> dict[str, Any]:
    return {"tool_use": [{"name": "files_write", "input": {"path": path, "content": content}}], "usage": {"input_tokens": 120, "output_tokens": 30}}


def anthropic_agent(tmp_path: Path, workspace: Path, url: str, **config: Any) -> Agent:
    settings = {"anthropic": ProviderSettings(base_url=url, api_key_env="KASLOOP_TEST_ANTHROPIC_KEY")}
    merged: dict[str, Any] = {
        "autonomy": 4, "model": "anthropic:claude-test", "tools": ["files"], "workspace": workspace, "providers": settings,
        "retry_backoff": 0.001, "diagnose_with_model": False, **config,
    }
    return Agent(AgentConfig(**merged), home=tmp_path / ".kasloop")


@pytest.fixture
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KASLOOP_TEST_ANTHROPIC_KEY", KEY)
    return KEY


async def test_an_anthropic_model_runs_a_thread_over_the_messages_api(tmp_path: Path, workspace: Path, anthropic_key: str) -> None:
    with anthropic_wire(write("a.txt", "A"), {"text": "a.txt holds A.", "usage": {"input_tokens": 200, "output_tokens": 8}}) as wire:
        agent = anthropic_agent(tmp_path, workspace, wire.url, prices={"anthropic:claude-test": ModelPrice(input=3.0, output=15.0)})
        result = await agent.run("Write A into a.txt.")
    assert result.status == "done" and result.output == "a.txt holds A." and (workspace / "a.txt").read_text() == "A"
    # Usage and cost come from the provider's own usage metadata.
    assert (result.usage["input_tokens"], result.usage["output_tokens"]) == (320, 38)
    assert result.usage["usd"] == pytest.approx((320 * 3.0 + 38 * 15.0) / 1_000_000)
    [first, second] = wire.decisions
    assert "files_write" in [t["name"] for t in first["tools"]] and first["model"] == "claude-test"
    assert second["messages"][-1]["content"][0]["type"] == "tool_result", "the tool result went back as Anthropic's tool_result block"
    assert all(h.get("x-api-key") == KEY or h.get("authorization") == f"Bearer {KEY}" for h in wire.headers), "the key from api_key_env"
    assert KEY not in Redactor.for_config(agent.config).text(f"the key is {KEY}"), "api_key_env names a secret: redacted everywhere"
    assert KEY not in (tmp_path / ".kasloop" / "kasloop.db").read_bytes().decode("latin-1")


def test_an_anthropic_agent_runs_twice_in_one_process_with_the_sync_twin(tmp_path: Path, workspace: Path, anthropic_key: str) -> None:
    """Each ``asyncio.run`` gets its own HTTP client (the provider's shared one belongs to the first loop)."""
    with anthropic_wire(write("a.txt", "A"), {"text": "done A"}, write("b.txt", "B"), {"text": "done B"}) as wire:
        agent = anthropic_agent(tmp_path, workspace, wire.url)
        first = agent.run_sync("Write A into a.txt.")
        second = agent.run_sync("Write B into b.txt.")
    assert (first.status, second.status) == ("done", "done") and (workspace / "b.txt").read_text() == "B"


async def test_a_fallback_chain_mixes_providers(tmp_path: Path, workspace: Path, anthropic_key: str) -> None:
    with anthropic_wire() as failing, wire_model() as openai:  # no canned replies: every decision gets HTTP 500
        openai.reply(None, [("files_write", {"path": "a.txt", "content": "A"}, "c1")])
        openai.reply("a.txt written by the fallback.")
        agent = anthropic_agent(
            tmp_path, workspace, failing.url, model=["anthropic:claude-test", "openai:test-model"],
            openai=OpenAISettings(base_url=openai.base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
        )
        result = await agent.run("Write A into a.txt.")
    assert result.status == "done" and (workspace / "a.txt").read_text() == "A"
    assert failing.decisions and openai.decisions, "the first provider was tried, the second finished"
    switched = [e for e in await agent.history(result.thread) if e["kind"] == "self_diagnose" and e.get("action") == "fallback"]
    assert switched and (switched[0]["from_model"], switched[0]["to_model"]) == ("anthropic:claude-test", "openai:test-model")


def missing_provider() -> str:
    """A provider whose package is not installed here (kasloop installs none of them by default)."""
    for provider, (package, _) in sorted(PROVIDERS.items()):
        if importlib.util.find_spec(package) is None:
            return provider
    raise AssertionError("every provider package is installed: no missing one to test with")


def test_a_provider_without_its_package_or_unknown_is_refused_in_one_line(
    workspace: Path, kasloop: Callable[..., CLIResult], tmp_path: Path
) -> None:
    provider = missing_provider()
    package, extra = PROVIDERS[provider]
    missing = kasloop("run", "hello", "--model", f"{provider}:some-model", "--workspace", str(workspace))
    assert missing.code == 2 and missing.err.count("\n") == 1, missing.err
    assert package.replace("_", "-") in missing.err and ("kasloop[" + extra + "]" if extra else "pip install") in missing.err
    unknown = kasloop("run", "hello", "--model", "nosuch:model", "--workspace", str(workspace))
    assert unknown.code == 2 and unknown.err.count("\n") == 1 and "anthropic" in unknown.err and "ollama" in unknown.err
    nameless = kasloop("run", "hello", "--model", "anthropic:", "--workspace", str(workspace))
    assert nameless.code == 2 and "needs a model name" in nameless.err
    assert not (tmp_path / ".kasloop" / "kasloop.db").exists(), "refused before anything was written"


async def test_a_missing_key_is_one_line_and_nothing_is_written(tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KASLOOP_TEST_ANTHROPIC_KEY", raising=False)
    agent = anthropic_agent(tmp_path, workspace, "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"needs its key in \$KASLOOP_TEST_ANTHROPIC_KEY"):
        await agent.run("hello", thread_id="k")
    assert await agent.status() == [], "no thread was started"


class ToolCallingFake(GenericFakeChatModel):
    """LangChain's fake chat model, which cannot be given tool schemas; its replies carry the calls."""


def fake(*replies: AIMessage) -> ToolCallingFake:
    return ToolCallingFake(messages=iter(replies))


def call_reply(path: str, content: str, call_id: str) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": "files_write", "args": {"path": path, "content": content}, "id": call_id}],
        usage_metadata={"input_tokens": 40, "output_tokens": 9, "total_tokens": 49},
    )


async def test_a_chat_model_object_runs_a_thread_with_approvals_and_the_cli_reads_it(
    tmp_path: Path, workspace: Path, kasloop: Callable[..., CLIResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fake(call_reply("notes.md", "hi", "c1"), AIMessage(content="notes.md written", usage_metadata={"input_tokens": 50, "output_tokens": 3, "total_tokens": 53}))
    monkeypatch.setenv("KASLOOP_HOME", str(tmp_path / ".kasloop"))
    agent = Agent(AgentConfig(autonomy=2, tools=["files"], workspace=workspace, budgets=Budgets(max_steps=10)), home=tmp_path / ".kasloop", model=model)
    paused = await agent.run("write notes.md", thread_id="obj")
    assert paused.status == "waiting_approval" and paused.approvals[0]["tool"] == "files_write"

    status = kasloop("status", "obj", "--json")
    assert status.code == 0 and status.json()["status"] == "waiting_approval", "another process reads the thread"
    listed = kasloop("approvals", "--json")
    assert [a["approval_id"] for a in listed.json()] == [paused.approvals[0]["approval_id"]]
    recorded = kasloop("approve", paused.approvals[0]["approval_id"], "--no-resume")
    assert recorded.code == 0, recorded.err
    refused = kasloop("resume", "obj")
    assert refused.code == 2 and "chat model object" in refused.err and refused.err.count("\n") == 1, "only Python has the model"
    assert not (workspace / "notes.md").exists(), "nothing ran in the process without the model"

    done = await agent.resume("obj")  # the process that has the object continues it
    assert done.status == "done" and done.output == "notes.md written" and (workspace / "notes.md").read_text() == "hi"
    assert (done.usage["input_tokens"], done.usage["output_tokens"]) == (90, 12)
    stored = kasloop("status", "obj", "--json").json()
    assert stored["status"] == "done"


def test_a_model_object_and_config_specs_make_one_chain(tmp_path: Path, workspace: Path) -> None:
    model = fake(AIMessage(content="ok"))
    config = AgentConfig(model=["openai:gpt-4o-mini", "scripted:x.jsonl"], tools=["files"], workspace=workspace)
    agent = Agent(config, home=tmp_path / ".kasloop", model=model)
    assert agent.config.model == ["object:ToolCallingFake", "scripted:x.jsonl"], "the object takes the first model's place"


def test_the_cli_runs_an_anthropic_model_named_in_kasloop_toml(
    tmp_path: Path, workspace: Path, kasloop: Callable[..., CLIResult], anthropic_key: str
) -> None:
    with anthropic_wire(write("a.txt", "A"), {"text": "a.txt holds A."}) as wire:
        (tmp_path / "kasloop.toml").write_text(
            f'model = "anthropic:claude-test"\n[providers.anthropic]\nbase_url = "{wire.url}"\napi_key_env = "KASLOOP_TEST_ANTHROPIC_KEY"\n'
        )
        result = kasloop("run", "Write A into a.txt.", "--workspace", str(workspace), "--autonomy", "4", "--json")
    assert result.code == 0, result.err
    assert result.json()["status"] == "done" and (workspace / "a.txt").read_text() == "A"
    assert len(wire.decisions) == 2
    (tmp_path / "kasloop.toml").write_text('[providers.anthropic]\napi_key = "sk-ant-in-the-file"\n')
    bad = kasloop("run", "hello", "--model", "anthropic:claude-test", "--workspace", str(workspace))
    assert bad.code == 2 and bad.err.count("\n") == 1 and "api_key" in bad.err, "a key is never a config value"
