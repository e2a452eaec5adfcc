"""Structured results on the real local model: the schema in its instructions, the answer checked (and fed
back until it matches). Assertions are on the validated values, not wording.

Measured on the 0.5B model with "Read order.txt.": it reads the file, answers with the tool result's text,
is told the answer is not JSON (with the object's shape), and answers with the right object.
"""

from __future__ import annotations

from pathlib import Path

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
