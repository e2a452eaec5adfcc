"""The shell and http families driven by the real local model (no scripted fallback).

Each goal chains two calls (run or fetch, then write), which the embedded
0.5B model does with guided steps (see ``kasloop.steps``). The assertions are
on the files, the event log and the far side (the program's real output, the
request the local server saw), never on the model's wording.
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


async def test_level_4_runs_an_allowed_shell_command_and_saves_its_output(local_model: str, tmp_path: Path, workspace: Path) -> None:
    (workspace / "data.txt").write_text("alpha\nbeta\ngamma\n")
    config = AgentConfig(autonomy=4, model="local", tools=["shell_run", "files_write"], workspace=workspace, budgets=Budgets(max_steps=8))
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("Run the shell command `wc -l data.txt` and write its output to count.txt.")
    assert result.status == "done", result
    events = await agent.history(result.thread)
    runs = [e for e in tool_events(events, "shell_run") if e["ok"]]
    assert runs, events
    assert "3 data.txt" in str(runs[0]["output"]), runs[0]  # the real program's output, counted by wc
    assert "3 data.txt" in (workspace / "count.txt").read_text()


async def test_level_4_fetches_a_page_from_a_local_server_and_saves_its_fact(
    local_model: str, tmp_path: Path, workspace: Path, fact_server: tuple[int, list[str]]
) -> None:
    port, seen = fact_server
    config = AgentConfig(
        autonomy=4, model="local", tools=["http_get", "files_write"], workspace=workspace, budgets=Budgets(max_steps=8),
        tool_settings={"http": {"allow_domains": [f"127.0.0.1:{port}"]}},
    )
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run(f"Fetch the page http://127.0.0.1:{port}/fact.txt and save the fact it states into fact.txt.")
    assert result.status == "done", result
    events = await agent.history(result.thread)
    fetched = [e for e in tool_events(events, "http_get") if e["ok"]]
    assert fetched and FACT in str(fetched[0]["output"]), "\n".join(str({k: v for k, v in e.items() if k not in ("ts", "id")}) for e in events)
    assert "/fact.txt" in seen, "the request reached the local server"
    assert "Poseidonia" in (workspace / "fact.txt").read_text()
