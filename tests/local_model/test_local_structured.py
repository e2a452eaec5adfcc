"""Structured results on the real local model: the schema in its instructions, the answer checked (and fed
back until it matches). Assertions are on the validated values, not wording.

Measured on the 0.5B model with "Read order.txt.": it reads the file, answers with the tool result's text,
is told the answer is not JSON (with the object's shape), and answers with the right object.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pydantic import BaseModel

from kasloop import Agent, AgentConfig


class Sum(BaseModel):
    result: int


async def test_the_local_model_answers_with_a_validated_object(local_model: str, tmp_path: Path, workspace: Path) -> None:
    agent = Agent(AgentConfig(autonomy=4, model="local", tools=[], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("What is 2 + 3? Give the sum as the result.", output=Sum)
    assert result.status == "done", result
    assert isinstance(result.value, Sum) and result.value.result == 5
    assert result.data == {"result": 5}


class Order(BaseModel):
    customer: str
    quantity: int


async def test_the_local_model_reads_a_file_then_answers_with_its_fields(local_model: str, tmp_path: Path, workspace: Path) -> None:
    (workspace / "order.txt").write_text("customer: Ada Lovelace\nquantity: 3\n")
    agent = Agent(AgentConfig(autonomy=4, model="local", tools=["files_read"], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("Read order.txt.", output=Order)
    assert result.status == "done", result
    assert result.value == Order(customer="Ada Lovelace", quantity=3)
    events = await agent.history(result.thread)
    assert any(e["kind"] == "tool" and e["tool"] == "files_read" and e["ok"] for e in events)


def test_the_readme_streaming_and_structured_example_runs_as_written(
    local_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README section 9, executed as written on the embedded model, in a folder with the order file it names."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### 9. Streaming and structured results", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "order.txt").write_text("customer: Ada Lovelace\nquantity: 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KASLOOP_HOME", os.fspath(tmp_path / ".kasloop"))
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - the README's own example
    printed = capsys.readouterr().out.splitlines()
    assert "files_read ok" in printed
    assert printed[-1] == "customer='Ada Lovelace' quantity=3"
