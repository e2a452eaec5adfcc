"""The scripted model: the JSONL format, bind_tools, usage, errors, and running out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from kasloop import ConfigError, ModelError, ScriptedChatModel, ScriptExhausted
from kasloop.models.scripted import load_script
from conftest import call, write_script


def test_replays_turns_in_order_with_generated_ids_and_usage(tmp_path: Path) -> None:
    path = write_script(tmp_path / "s.jsonl", [
        {"content": "one", "tool_calls": [call("files_write", path="a.txt", content="hi")]},
        {"content": "two"},
    ])
    model = ScriptedChatModel.from_file(path)
    bound = model.bind_tools([{"type": "function", "function": {"name": "files_write", "description": "w", "parameters": {"type": "object", "properties": {}}}}])
    first = bound.invoke([HumanMessage("go")])
    assert first.content == "one"
    assert first.tool_calls == [{"name": "files_write", "args": {"path": "a.txt", "content": "hi"}, "id": "call_0_0", "type": "tool_call"}]
    assert first.usage_metadata["input_tokens"] >= 1 and first.usage_metadata["output_tokens"] >= 1
    second = bound.invoke([HumanMessage("go")])
    assert second.content == "two" and second.tool_calls == []
    with pytest.raises(ScriptExhausted, match="has 2 turns and turn 3 was asked for"):
        bound.invoke([HumanMessage("go")])


def test_explicit_turn_position_is_used(tmp_path: Path) -> None:
    path = write_script(tmp_path / "s.jsonl", [{"content": "a"}, {"content": "b"}])
    model = ScriptedChatModel.from_file(path)
    assert asyncio.run(model.ainvoke([HumanMessage("x")], turn=1)).content == "b"
    assert model.invoke([HumanMessage("x")], turn=0).content == "a"


def test_error_turn_raises_model_error(tmp_path: Path) -> None:
    path = write_script(tmp_path / "s.jsonl", [{"error": "simulated outage"}])
    with pytest.raises(ModelError, match="simulated outage"):
        ScriptedChatModel.from_file(path).invoke([HumanMessage("x")])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json\n", "line 1: not valid JSON"),
        ('{"content": "ok"}\n[1, 2]\n', "line 2: not a JSON object"),
        ('{"contnet": "typo"}\n', "unknown key `contnet`"),
        ('{"tool_calls": [{"args": {}}]}\n', "`tool_calls` must be a list"),
    ],
)
def test_bad_script_lines_are_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_script(path)


def test_missing_script_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_script(tmp_path / "nope.jsonl")
