"""Structured results: ``Agent.run(goal, output=Model)`` and ``kasloop run --output-schema FILE``.

The answer is checked against the schema stored with the task; a wrong one goes back to the model through
the recovery ladder (told what is wrong), repeated it escalates; budgets pause such a run like any other.
Results and approvals are typed objects whose JSON is what ``--json`` printed before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from kasloop import Agent, AgentConfig, Approval, Budgets, RunResult, RunUsage, UsageError
from kasloop.config.schema import ModelPrice
from kasloop.runtime.events import Done
from conftest import CLIResult, call
from wire_model import wire_model


class Forecast(BaseModel):
    city: str
    high_c: float

    @field_validator("high_c")
    @classmethod
    def plausible(cls, value: float) -> float:
        if not -90 <= value <= 60:
            raise ValueError("a temperature on Earth is between -90 and 60 °C")
        return value


FORECAST = {"city": "Oslo", "high_c": 4.5}


def answer(value: Any) -> dict[str, Any]:
    return {"content": value if isinstance(value, str) else json.dumps(value)}


def agent_for(tmp_path: Path, model: str, autonomy: int = 4, **settings: Any) -> Agent:
    workspace = tmp_path / "ws"
    workspace.mkdir(parents=True, exist_ok=True)
    return Agent(AgentConfig(autonomy=autonomy, model=model, tools=["files"], workspace=workspace, **settings), home=tmp_path / ".kasloop")


async def errors_of(agent: Agent, thread: str) -> list[str]:
    return [e["message"] for e in await agent.history(thread) if e["kind"] == "error" and e.get("source") == "model"]


async def test_a_valid_answer_on_the_first_try_is_returned_as_the_model_object(tmp_path: Path, script: Callable[..., str]) -> None:
    agent = agent_for(tmp_path, script(answer("```json\n" + json.dumps(FORECAST) + "\n```")))
    result = await agent.run("tomorrow's forecast for Oslo", thread_id="f", output=Forecast)
    assert result.status == "done" and result.exit_code == 0
    assert isinstance(result.value, Forecast) and result.value == Forecast(**FORECAST)
    assert result.data == FORECAST and json.loads(result.output) == FORECAST
    assert result.to_json()["data"] == FORECAST and "value" not in result.to_json()
    assert await errors_of(agent, "f") == []


async def test_an_invalid_answer_goes_back_to_the_model_until_it_is_fixed(tmp_path: Path) -> None:
    """Not JSON, then a missing field, then a value the class's own validator refuses, then right: each time
    the model is told what is wrong, and the schema was in its instructions from the start."""
    with wire_model() as wire:
        wire.reply("It will be cold in Oslo.")
        wire.reply(json.dumps({"city": "Oslo"}))
        wire.reply(json.dumps({"city": "Oslo", "high_c": 400}))
        wire.reply(json.dumps(FORECAST))
        agent = agent_for(
            tmp_path, "openai:test-model", openai={"base_url": wire.base_url, "api_key": "sk-test"}, diagnose_with_model=False,
        )
        result = await agent.run("tomorrow's forecast for Oslo", thread_id="f", output=Forecast)
    assert result.status == "done", result
    assert result.value == Forecast(**FORECAST)
    first, *later = wire.decisions
    system = first["messages"][0]["content"]
    assert "JSON schema" in system and '"high_c"' in system, "the model is told the schema"
    told = [m["content"] for m in later[0]["messages"] if m["role"] == "user" and "kasloop" in str(m["content"])]
    assert told and "not JSON" in told[-1]
    told = [m["content"] for m in later[1]["messages"] if m["role"] == "user" and "kasloop" in str(m["content"])]
    assert "high_c" in told[-1] and "required" in told[-1]
    told = [m["content"] for m in later[2]["messages"] if m["role"] == "user" and "kasloop" in str(m["content"])]
    assert "between -90 and 60" in told[-1], "the pydantic class's own validator is heard too"
    assert len(await errors_of(agent, "f")) == 3


async def test_a_json_schema_dict_works_like_a_class(tmp_path: Path, script: Callable[..., str]) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    agent = agent_for(tmp_path, script(answer({"n": 0}), answer("The answer is {\"n\": 3}.")))
    result = await agent.run("pick a number", thread_id="n", output=schema)
    assert result.status == "done" and result.data == {"n": 3} and result.value is None
    [problem] = await errors_of(agent, "n")
    assert "/n" in problem and "minimum" in problem


@pytest.mark.parametrize("autonomy, status", [(4, "escalated"), (3, "waiting_approval")])
async def test_answers_that_stay_wrong_escalate(tmp_path: Path, script: Callable[..., str], autonomy: int, status: str) -> None:
    """Three failures in a row, then the ladder's top: a stop at level 4, a person at level 3."""
    agent = agent_for(tmp_path, script(*[answer("no idea")] * 4), autonomy=autonomy, diagnose_with_model=False)
    result = await agent.run("forecast", thread_id="f", output=Forecast)
    assert result.status == status and result.data is None and result.value is None
    assert result.to_json()["data"] is None, "a structured task's JSON always carries data"
    if status == "waiting_approval":
        [request] = result.approvals
        assert isinstance(request, Approval) and request.kind == "escalation"


async def test_a_budget_pauses_a_structured_run_and_raising_it_finishes_with_the_object(
    tmp_path: Path, script: Callable[..., str]
) -> None:
    prices = {"scripted": ModelPrice(input=1000.0, output=1000.0)}
    model = script(answer("cold"), answer(FORECAST))
    baseline = agent_for(tmp_path / "b", model, prices=prices, diagnose_with_model=False)
    free = await baseline.run("forecast", thread_id="free", output=Forecast)
    first_call = [e["usd"] for e in await baseline.history("free") if e["kind"] == "decide"][0]

    agent = agent_for(tmp_path, model, autonomy=3, prices=prices, diagnose_with_model=False, budgets=Budgets(max_steps=None, max_usd=first_call * 1.5))
    paused = await agent.run("forecast", thread_id="f", output=Forecast)
    assert paused.status == "paused_budget" and paused.exit_code == 11 and paused.data is None
    [request] = paused.approvals
    assert request.kind == "budget" and request.args["limit"] == "max_usd"
    done = await agent.approve(request.approval_id, edit={"value": free.usage.usd * 10})
    assert done.status == "done" and done.data == FORECAST
    again = await agent.resume("f", output=Forecast)
    assert again.value == Forecast(**FORECAST), "resume with the class gives the object"


async def test_results_and_approvals_are_typed_with_the_json_shape_unchanged(tmp_path: Path, script: Callable[..., str]) -> None:
    agent = agent_for(tmp_path, script({"content": "", "tool_calls": [call("files_delete", path="x.txt")]}), autonomy=3)
    (tmp_path / "ws" / "x.txt").write_text("x")
    result = await agent.run("delete x.txt", thread_id="t")
    assert isinstance(result, RunResult) and isinstance(result.usage, RunUsage)
    [request] = result.approvals
    assert isinstance(request, Approval) and request.tool == "files_delete" and request["tool"] == "files_delete"
    shape = result.to_json()
    assert set(shape) == {"thread", "status", "output", "approvals", "usage"}
    assert set(shape["approvals"][0]) == {
        "approval_id", "thread", "tool", "args", "risk", "reason", "arg_hash", "created_at", "expires_at", "kind", "path",
    }
    assert set(shape["usage"]) == {"steps", "tool_calls", "model_calls", "input_tokens", "output_tokens", "usd", "seconds"}
    assert await agent.approvals() == [request]
    with pytest.raises(KeyError):
        request["no_such_field"]


async def test_the_stream_ends_with_the_structured_result(tmp_path: Path, script: Callable[..., str]) -> None:
    agent = agent_for(tmp_path, script(answer(FORECAST)))
    events = [e async for e in agent.astream("forecast", thread_id="s", output=Forecast)]
    done = events[-1]
    assert isinstance(done, Done) and done.result["data"] == FORECAST


async def test_a_bad_schema_is_refused_before_anything_is_written(tmp_path: Path, script: Callable[..., str]) -> None:
    agent = agent_for(tmp_path, script(answer(FORECAST)))
    with pytest.raises(UsageError, match="not a valid JSON schema"):
        await agent.run("forecast", thread_id="x", output={"type": "no-such-type"})
    with pytest.raises(UsageError, match="pydantic model class or a JSON schema"):
        await agent.run("forecast", thread_id="x", output=str)  # type: ignore[arg-type]
    assert await agent.status() == []


def test_cli_output_schema_prints_data_and_a_resume_elsewhere_still_checks_the_answer(
    tmp_path: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]
) -> None:
    """The schema is stored with the task: the approving process (no schema given) checks the answer too."""
    schema_file = tmp_path / "forecast.json"
    schema_file.write_text(json.dumps(Forecast.model_json_schema()))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "old.txt").write_text("old")
    model = script(
        {"content": "", "tool_calls": [call("files_delete", path="old.txt")]},
        answer({"city": "Oslo", "high_c": "warm"}),
        answer(FORECAST),
    )
    first = kasloop("run", "forecast", "--model", model, "--tools", "files", "--workspace", str(workspace), "--autonomy", "3",
                    "--output-schema", str(schema_file), "--json")
    assert first.code == 10, first
    assert first.json()["data"] is None
    second = kasloop("approve", first.json()["approvals"][0]["approval_id"], "--json")
    assert second.code == 0, second
    assert second.json()["data"] == FORECAST and json.loads(second.json()["output"]) == FORECAST
    history = kasloop("history", first.json()["thread"], "--json").json()
    assert any(e["kind"] == "error" and "high_c" in e["message"] for e in history)


@pytest.mark.parametrize("content, problem", [(None, "Cannot read the output schema"), ("{nope", "is not JSON"), ('{"type": 5}', "not a valid JSON schema")])
def test_cli_bad_schema_file_exits_2_with_one_line(
    tmp_path: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult], content: str | None, problem: str
) -> None:
    schema_file = tmp_path / "schema.json"
    if content is not None:
        schema_file.write_text(content)
    result = kasloop("run", "forecast", "--model", script(answer(FORECAST)), "--output-schema", str(schema_file))
    assert result.code == 2, result
    assert problem in result.err and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert not (tmp_path / ".kasloop" / "kasloop.db").exists(), "nothing was written"


async def test_a_secret_in_the_structured_answer_is_redacted_before_it_is_checked_or_stored(
    tmp_path: Path, script: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is the model's reply, redacted like any reply: the data never holds the key (positive
    control: the same answer with a string that is not a secret comes back as it was)."""
    key = "sk-structured-secret-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    agent = agent_for(tmp_path, script(answer({"city": key, "high_c": 1})))
    leaked = await agent.run("forecast", thread_id="a", output=Forecast)
    assert leaked.status == "done" and key not in json.dumps(leaked.to_json())
    assert leaked.value.city == "[redacted:OPENAI_API_KEY]"
    assert key not in json.dumps(await agent.history("a"))
    plain = await agent_for(tmp_path, script(answer({"city": "Bergen", "high_c": 1}))).run("forecast", thread_id="b", output=Forecast)
    assert plain.value.city == "Bergen"


def test_a_collaboration_refuses_an_output_schema_before_anything_is_written(
    tmp_path: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]
) -> None:
    """Its answer is the peers' agreed proposal: a schema it would silently ignore is refused instead."""
    peer = script(answer(FORECAST))
    (tmp_path / "kasloop.toml").write_text(
        "[collaboration.review]\n"
        f'[collaboration.review.peers.a]\ndescription = "Solves."\ntools = ["files_read"]\nmodel = "{peer}"\n'
        f'[collaboration.review.peers.b]\ndescription = "Checks."\ntools = ["files_read"]\nmodel = "{peer}"\n'
    )
    schema_file = tmp_path / "forecast.json"
    schema_file.write_text(json.dumps(Forecast.model_json_schema()))
    result = kasloop("run", "forecast", "--collaboration", "review", "--output-schema", str(schema_file), "--thread", "c")
    assert result.code == 2 and "collaboration" in result.err and len(result.err.strip().splitlines()) == 1, result
    assert kasloop("status", "--json").json() == [], "no thread was created"


async def test_resuming_with_a_stricter_class_says_so_in_one_line(tmp_path: Path, script: Callable[..., str]) -> None:
    """The answer matched the schema the task was run with; a class it does not fit is a clear error, not a traceback."""

    class Hot(BaseModel):
        city: str
        high_c: float

        @field_validator("high_c")
        @classmethod
        def hot(cls, value: float) -> float:
            if value < 30:
                raise ValueError("not hot")
            return value

    agent = agent_for(tmp_path, script(answer(FORECAST)))
    assert (await agent.run("forecast", thread_id="f", output=Forecast)).status == "done"
    with pytest.raises(UsageError, match=r"does not fit Hot \(at high_c: Value error, not hot\)"):
        await agent.resume("f", output=Hot)
    assert (await agent.resume("f")).data == FORECAST


def test_the_interrupt_payload_and_the_public_approval_name_the_same_fields() -> None:
    """Two shapes of one request: the dict human_approval hands to interrupt() (stored in checkpoints) and the
    typed object people read. They may not drift apart (the payload adds the call id; a listing adds the path)."""
    from kasloop.guardrails.approvals import ApprovalRequest

    assert set(ApprovalRequest.__annotations__) - {"call_id"} == set(Approval.model_fields) - {"path"}
