"""The recovery ladder with real failing parts: a flaky HTTP server, a site that refuses scripts but not browsers,
and tool fallbacks that respect policy.

Model fallbacks (HTTP 500 from a local OpenAI-wire server) are in tests/models/test_openai_wire.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from pydantic import BaseModel

from kasloop import Agent, AgentConfig, LongTermMemory, PolicyRule
from kasloop.checkpoints import open_database
from kasloop.tools import Tool, ToolContext, ToolFailure
from conftest import call
from webpages import reply, serve


class Site:
    """A page on 127.0.0.1: fails the first ``failures`` requests with 503, refuses kasloop's HTTP client if asked."""

    def __init__(self, *, failures: int = 0, refuse_scripts: bool = False) -> None:
        self.agents: list[str] = []
        self.failures = failures
        self.refuse_scripts = refuse_scripts
        self.host = self.url = ""  # set once it is served

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        agent = handler.headers.get("User-Agent", "")
        if handler.path.endswith(".ico"):
            handler.send_error(404)
            return
        self.agents.append(agent)
        if len(self.agents) <= self.failures:
            handler.send_error(503, "busy, try again")
        elif self.refuse_scripts and "kasloop-agent" in agent:
            handler.send_error(403, "browsers only")
        else:
            reply(handler, "<html><head><title>Opening hours</title></head><body>Open 9 to 5.</body></html>")


@pytest.fixture
def sites() -> Iterator[Callable[..., Site]]:
    with ExitStack() as stack:

        def start(**kwargs: object) -> Site:
            site = Site(**kwargs)  # type: ignore[arg-type]
            site.host = stack.enter_context(serve(site.answer))
            site.url = f"http://{site.host}/hours"
            return site

        yield start


def agent_for(tmp_path: Path, workspace: Path, model: str, site: Site, tools: list[str], **extra: object) -> Agent:
    config = AgentConfig(
        autonomy=4, model=model, tools=tools, workspace=workspace, retry_backoff=0.001,
        tool_settings={"http": {"allow_domains": [site.host]}, "browser": {"allow_domains": ["127.0.0.1"], "navigation_timeout": 10}},
        **extra,  # type: ignore[arg-type]
    )
    return Agent(config, home=tmp_path / ".kasloop")


def ladder(events: list[dict[str, object]]) -> list[object]:
    return [e["action"] for e in events if e["kind"] == "self_diagnose"]


async def test_a_flaky_server_is_retried_with_backoff_and_the_call_succeeds(
    tmp_path: Path, workspace: Path, script: Callable[..., str], sites: Callable[..., Site]
) -> None:
    site = sites(failures=2)
    agent = agent_for(tmp_path, workspace, script({"tool_calls": [call("http_get", url=site.url)]}, {"content": "open 9 to 5"}), site, ["http"])
    result = await agent.run("When is it open?")
    assert result.status == "done" and len(site.agents) == 3
    events = await agent.history(result.thread)
    assert ladder(events) == ["retry", "retry"]
    assert [e["ok"] for e in events if e["kind"] == "tool"] == [False, False, True]


async def test_a_site_that_refuses_scripts_is_opened_in_the_browser_instead(
    tmp_path: Path, workspace: Path, script: Callable[..., str], sites: Callable[..., Site]
) -> None:
    site = sites(refuse_scripts=True)
    agent = agent_for(
        tmp_path, workspace, script({"tool_calls": [call("http_get", url=site.url)]}, {"content": "opened"}), site, ["http", "browser"]
    )
    result = await agent.run("When is it open?")
    assert result.status == "done"
    assert "kasloop-agent" in site.agents[0] and any("Chrom" in a for a in site.agents[1:]), site.agents
    events = await agent.history(result.thread)
    [fallback] = [e for e in events if e["kind"] == "self_diagnose" and e["action"] == "fallback"]
    assert fallback["from_tool"] == "http_get" and fallback["to_tool"] == "browser_open"
    tools = [(e["tool"], e["ok"]) for e in events if e["kind"] == "tool"]
    assert tools == [("http_get", False), ("browser_open", True)]
    assert "Opening hours" in [e for e in events if e["kind"] == "tool"][-1]["output"]
    [learned] = [e for e in events if e["kind"] == "learned"]
    assert learned["text"].startswith("http_get failed (permanent: HTTP 403") and "browser_open(url=" in learned["text"]
    async with open_database(agent.db_path) as db:
        memory = await LongTermMemory.open(db)
        [found] = await memory.search("opening hours site http_get 403", kinds=["learning"])
        memory.close()
    assert found.text == learned["text"] and "recovery" in found.tags, "what worked is in long-term memory for later runs"


class Query(BaseModel):
    query: str


def fetcher(name: str, *, fails: bool, runs: list[str], alternates: tuple[str, ...] = (), risk: str = "read") -> Tool:
    async def fetch(args: Query, ctx: ToolContext) -> str:
        runs.append(name)
        if fails:
            raise ToolFailure("permanent", f"{name} is down")
        return f"{name}: answer to {args.query}"

    return Tool(name=name, description="Look something up.", args_model=Query, func=fetch, risk=risk, idempotent=True, family="lookup", alternates=alternates)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rules", "ran"),
    [
        ([], ["primary", "backup"]),
        ([PolicyRule(tool="backup", action="deny")], ["primary"]),
        ([PolicyRule(tool="backup", action="ask")], ["primary"]),
    ],
)
async def test_a_fallback_tool_never_dodges_the_policy(tmp_path: Path, workspace: Path, script: Callable[..., str], rules: list[PolicyRule], ran: list[str]) -> None:
    runs: list[str] = []
    tools = [fetcher("primary", fails=True, runs=runs, alternates=("backup",)), fetcher("backup", fails=False, runs=runs)]
    config = AgentConfig(
        autonomy=4, model=script({"tool_calls": [call("primary", query="q")]}, {"content": "answered"}), tools=["lookup"],
        workspace=workspace, rules=rules,
    )
    result = await Agent(config, home=tmp_path / ".kasloop", tools=tools).run("look it up")
    assert result.status == "done" and runs == ran, "a denied or ask-ruled alternate is not run by a fallback; the model re-plans"
