"""Tier 1, working memory: bounded prompts, whole turns, a running summary folded by the model.

Run through the real graph, a real SQLite file and the scripted model (whose
summary replies are deterministic), plus a local OpenAI-wire server to prove
the summarising request is a plain chat request a real model can answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from kasloop import Agent, AgentConfig, Budgets
from kasloop.checkpoints import open_database
from kasloop.nodes.working_memory import SUMMARY_MAX_CHARS, digest, eviction_cut, fold_into_summary
from kasloop.models.scripted import ScriptedChatModel
from conftest import call


def turn(i: int, size: int = 10) -> list[object]:
    ai = AIMessage("", tool_calls=[{"name": "files_write", "args": {"path": f"f{i}.txt"}, "id": f"c{i}"}], id=f"a{i}")
    return [ai, ToolMessage("x" * size, tool_call_id=f"c{i}", name="files_write", id=f"t{i}")]


def conversation(turns: int, size: int = 10) -> list[object]:
    return [HumanMessage("goal", id="h"), *(m for i in range(turns) for m in turn(i, size))]


def test_nothing_is_evicted_within_both_limits() -> None:
    assert eviction_cut(conversation(5), max_messages=40, max_tokens=4000) == 0


def test_eviction_goes_down_to_the_low_water_mark_and_never_splits_a_turn() -> None:
    messages = conversation(30)  # 61 messages
    cut = eviction_cut(messages, max_messages=40, max_tokens=100_000)
    kept = messages[cut:]
    assert len(kept) <= 24 and isinstance(kept[0], AIMessage), "down to 60% of the limit, starting on a call"
    ids = {c["id"] for m in kept if isinstance(m, AIMessage) for c in m.tool_calls}
    assert all(m.tool_call_id in ids for m in kept if isinstance(m, ToolMessage))


def test_the_token_budget_evicts_even_when_the_count_is_small() -> None:
    messages = conversation(6, size=2000)  # 13 messages, ~3,000 tokens
    cut = eviction_cut(messages, max_messages=40, max_tokens=2000)
    assert cut > 0 and isinstance(messages[cut], AIMessage)
    assert sum(len(str(m.content)) for m in messages[cut:]) // 4 <= 2000 * 0.6 + 50


def test_a_single_huge_turn_is_kept_whole() -> None:
    messages = conversation(1, size=100_000)
    assert eviction_cut(messages, max_messages=40, max_tokens=1000) == 1, "only the goal goes; the call keeps its result"


def test_the_digest_fallback_is_bounded() -> None:
    text = digest("", conversation(400))
    assert 0 < len(text) <= SUMMARY_MAX_CHARS and "files_write" in text


async def test_a_failing_summariser_falls_back_to_the_digest(tmp_path: Path) -> None:
    script = tmp_path / "empty.jsonl"
    script.write_text("")
    model = ScriptedChatModel.from_file(script)

    class Broken(type(model)):  # type: ignore[misc]
        async def _agenerate(self, *args: object, **kwargs: object) -> object:
            raise RuntimeError("boom")

    folded = await fold_into_summary(Broken(path="x", turns=[]), "before", conversation(3), turn=0)
    assert not folded.by_model and folded.summary.startswith("before") and "boom" in folded.error


async def test_two_thousand_cycles_keep_the_prompt_and_the_checkpoints_bounded(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    cycles = 2000
    turns = [{"content": "", "tool_calls": [call("files_write", path=f"f{i % 5}.txt", content=f"fact number {i:05d}")]} for i in range(cycles)]
    config = AgentConfig(
        model=script(*turns, {"content": "done"}), tools=["files"], workspace=workspace, autonomy=4,
        max_messages=20, context_tokens=1000, keep_checkpoints=5, budgets=Budgets(max_steps=None),
    )
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("write the facts", thread_id="long")
    assert result.status == "done" and result.usage["tool_calls"] == cycles
    events = await agent.history("long")
    prompts = [e["prompt_tokens"] for e in events if e["kind"] == "decide"]
    assert len(prompts) == cycles + 1
    assert max(prompts[-50:]) <= max(prompts[:50]), "the prompt after 2,000 cycles is no longer than in the first 50"
    summaries = [e for e in events if e["kind"] == "summary"]
    assert summaries and all(e["by_model"] for e in summaries), "evicted turns are folded by the model"
    assert len(summaries) < cycles / 5, "eviction goes down to a low-water mark, so summaries are occasional"
    async with open_database(agent.db_path) as db:
        rows = await db.fetchall("SELECT length(checkpoint) AS size FROM checkpoints WHERE thread_id = 'long'")
        state = await db.saver.aget_tuple({"configurable": {"thread_id": "long", "checkpoint_ns": ""}})
    assert len(rows) <= 5
    values = state.checkpoint["channel_values"]
    assert "fact number 01999" not in values["summary"] and "fact number" in values["summary"]
    assert len(values["summary"]) <= SUMMARY_MAX_CHARS and len(values["messages"]) <= 20

    fresh = tmp_path / "fresh"  # the same writes as new files (replacing the long run's files unread would be refused)
    fresh.mkdir()
    short = Agent(config.model_copy(update={"model": script(*turns[:50], {"content": "done"}), "workspace": fresh}), home=tmp_path / ".kasloop")
    await short.run("write the facts", thread_id="short")
    async with open_database(agent.db_path) as db:
        (long_size,) = await db.fetchone("SELECT max(length(checkpoint)) FROM checkpoints WHERE thread_id = 'long'")
        (short_size,) = await db.fetchone("SELECT max(length(checkpoint)) FROM checkpoints WHERE thread_id = 'short'")
    assert long_size <= short_size + 512, f"state per checkpoint must not grow with cycles ({short_size} → {long_size} bytes)"


async def test_the_summary_reaches_the_model_as_earlier(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    turns = [{"content": "", "tool_calls": [call("files_write", path=f"f{i}.txt", content=f"secret code {i}")]} for i in range(12)]
    config = AgentConfig(model=script(*turns, {"content": "done"}), tools=["files"], workspace=workspace, autonomy=4, max_messages=8)
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("write codes")
    async with open_database(agent.db_path) as db:
        state = await db.saver.aget_tuple({"configurable": {"thread_id": result.thread, "checkpoint_ns": ""}})
    values = state.checkpoint["channel_values"]
    assert "secret code 0" in values["summary"], "the first call fell out of the window and is in the summary"
    assert all("secret code 0" not in json.dumps(m.tool_calls) for m in values["messages"] if isinstance(m, AIMessage))
