"""The shell and http families driven by the real local model (no scripted fallback).

Each goal needs one tool call; the assertions are on the event log and on
the far side (the program's real output, the request the local server saw),
never on the model's wording. (Goals that chain two calls, such as "run X
and save its output", are beyond the embedded 0.5B model: see
benchmarks/local_model.py and the README.)
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from kasloop import Agent, AgentConfig, Budgets
from webpages import reply, serve

FACT = "The capital of Atlantis is Poseidonia."


def tool_events(events: list[dict[str, object]], tool: str) -> list[dict[str, object]]:
    return [e for e in events if e["kind"] == "tool" and e["tool"] == tool]


@pytest.fixture
def fact_server() -> Iterator[tuple[int, list[str]]]:
    """A page on 127.0.0.1 that records every path requested."""
    seen: list[str] = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        reply(handler, f"{FACT}\n", "text/plain")

    with serve(answer) as host:
        yield int(host.rpartition(":")[2]), seen


async def test_level_4_runs_an_allowed_shell_command(local_model: str, tmp_path: Path, workspace: Path) -> None:
    (workspace / "data.txt").write_text("alpha\nbeta\ngamma\n")
    config = AgentConfig(autonomy=4, model="local", tools=["shell_run"], workspace=workspace, budgets=Budgets(max_steps=6))
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("Run the shell command: wc -l data.txt")
    assert result.status == "done", result
    events = await agent.history(result.thread)
    runs = [e for e in tool_events(events, "shell_run") if e["ok"]]
    assert runs, events
    assert "3 data.txt" in str(runs[0]["output"]), runs[0]  # the real program's output, counted by wc


async def test_level_4_fetches_a_page_from_an_allowed_local_server(
    local_model: str, tmp_path: Path, workspace: Path, fact_server: tuple[int, list[str]]
) -> None:
    port, seen = fact_server
    config = AgentConfig(
        autonomy=4, model="local", tools=["http_get"], workspace=workspace, budgets=Budgets(max_steps=6),
        tool_settings={"http": {"allow_domains": [f"127.0.0.1:{port}"]}},
    )
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run(f"Fetch the page http://127.0.0.1:{port}/fact.txt")
    assert result.status == "done", result
    events = await agent.history(result.thread)
    fetched = [e for e in tool_events(events, "http_get") if e["ok"]]
    assert fetched and FACT in str(fetched[0]["output"]), "\n".join(str({k: v for k, v in e.items() if k not in ("ts", "id")}) for e in events)
    assert "/fact.txt" in seen, "the request reached the local server"
