"""``langgraph dev`` serves the repo's ``langgraph.json`` offline: a thread, an approval interrupt, a resume.

This is what a user sees in LangGraph Studio, driven through ``langgraph-sdk`` against a real
``langgraph dev`` subprocess on 127.0.0.1 (extra ``kasloop[studio]``). The server reads
``kasloop.toml`` from its working directory, so it runs in a temp folder with ``--config``
pointing at the repo's ``langgraph.json``. What Studio draws comes from the same API: the input
form from ``/assistants/{id}/schemas``, the picture from ``/assistants/{id}/graph``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from conftest import call, write_script

REPO = Path(__file__).resolve().parent.parent
LANGGRAPH = Path(sys.executable).with_name("langgraph")
START_TIMEOUT = 45.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Variables that would make the server or the SDK reach LangSmith, a license server or an OTLP collector.
PHONE_HOME = ("LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_CLOUD_", "OTEL_", "KASLOOP_")
OFFLINE = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # the CLI's usage ping
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # the server's PyPI version lookup
    "LANGSMITH_TRACING": "false",  # tracing, and Studio's organisation lookup
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PHONE_HOME)}
    return {**env, **OFFLINE}


class Server:
    """A ``langgraph dev`` process in its own process group, so stopping it stops its workers too."""

    def __init__(self, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / "server.log"
        argv = [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(self.port),
                "--config", str(REPO / "langgraph.json")]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=offline_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        """The whole log without colour codes."""
        return ANSI.sub("", self.log.read_text(errors="replace"))

    def logs(self) -> str:
        """The log's tail, for failure messages."""
        return self.text()[-3000:]

    def wait_ready(self) -> None:
        """Poll ``/ok`` until it answers 200; fail early if the process dies."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"langgraph dev exited with {self.proc.returncode}:\n{self.logs()}"
            try:
                if httpx.get(f"{self.url}/ok", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # poll interval, not synchronisation: the loop exits on the condition
        pytest.fail(f"langgraph dev did not answer /ok within {START_TIMEOUT}s:\n{self.logs()}")

    def stop(self) -> int | None:
        """SIGTERM the group; SIGKILL it if it has not exited in 15 s. Returns the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A kasloop project: semi-autonomous, and an `ask` rule so the scripted write needs approval."""
    plan = write_script(tmp_path / "plan.jsonl", [{"content": "", "tool_calls": [call("files_write", path="a.txt", content="hi")]}, {"content": "done"}])
    (tmp_path / "ws").mkdir()
    (tmp_path / "kasloop.toml").write_text(
        f'autonomy = 3\nmodel = "scripted:{plan}"\nworkspace = "{tmp_path / "ws"}"\ntools = ["files"]\n\n[[rules]]\ntool = "files_write"\naction = "ask"\n'
    )
    return tmp_path


@pytest.fixture
def server(project: Path) -> Iterator[Server]:
    assert LANGGRAPH.exists(), f"{LANGGRAPH} missing: install the studio extra (pip install -e '.[studio]')"
    srv = Server(project)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


async def test_studio_thread_stops_at_the_approval_and_resumes_to_done(server: Server, project: Path) -> None:
    client = get_client(url=server.url)
    assistants = await client.assistants.search(graph_id="agent")
    assert [a["graph_id"] for a in assistants] == ["agent"]

    thread = await client.threads.create()
    tid = thread["thread_id"]
    goal = {"messages": [{"role": "user", "content": "write a.txt"}], "goals": [{"id": "g1", "text": "write a.txt", "status": "open"}]}
    run = await client.runs.create(tid, "agent", input=goal)
    await client.runs.join(tid, run["run_id"])
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "success", server.logs()

    state = await client.threads.get_state(tid)
    assert state["next"] == ["human_approval"], f"no approval interrupt: next={state['next']}, values={state['values']}\n{server.logs()}"
    [interrupt] = state["interrupts"]
    assert interrupt["value"]["kind"] == "tool_call"
    assert interrupt["value"]["thread"] == tid  # approval ids are per thread, not per server
    [request] = interrupt["value"]["requests"]
    assert request["tool"] == "files_write" and request["args"] == {"path": "a.txt", "content": "hi"}
    assert request["approval_id"].startswith("ap-") and len(request["arg_hash"]) == 64
    assert not (project / "ws" / "a.txt").exists()

    resumed = await client.runs.create(tid, "agent", command={"resume": {"decision": "approve"}})
    await client.runs.join(tid, resumed["run_id"])
    assert (await client.runs.get(tid, resumed["run_id"]))["status"] == "success", server.logs()

    final = await client.threads.get_state(tid)
    assert final["next"] == [] and final["interrupts"] == []
    assert final["values"]["status"] == "done" and final["values"]["output"] == "done"
    assert (project / "ws" / "a.txt").read_text() == "hi"

    code = server.stop()
    assert code is not None, "langgraph dev is still running after SIGTERM"
    assert not port_open(server.port)


@pytest.fixture
def team_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A project whose team's `code` specialist must ask before writing (an `ask` rule)."""
    manager = write_script(tmp_path / "manager.jsonl", [
        {"content": "", "tool_calls": [call("delegate", specialist="code", task="write a.txt")]}, {"content": "the team wrote a.txt"},
    ])
    code = write_script(tmp_path / "code.jsonl", [{"content": "", "tool_calls": [call("files_write", path="a.txt", content="team")]}, {"content": "wrote it"}])
    (tmp_path / "ws").mkdir()
    (tmp_path / "kasloop.toml").write_text(
        f'autonomy = 3\nmodel = "scripted:{manager}"\nworkspace = "{tmp_path / "ws"}"\ntools = []\nrun_team = "crew"\n\n'
        f'[[rules]]\ntool = "files_write"\naction = "ask"\n\n'
        f'[team.crew.code]\ndescription = "Writes files."\ntools = ["files"]\nmodel = "scripted:{code}"\n'
    )
    srv = Server(tmp_path)
    try:
        srv.wait_ready()
        yield srv, tmp_path
    finally:
        srv.stop()


async def test_studio_team_surfaces_a_specialists_approval_and_resumes_exactly_it(team_server: tuple[Server, Path]) -> None:
    server, project = team_server
    client = get_client(url=server.url)
    assert sorted(a["graph_id"] for a in await client.assistants.search()) == ["agent", "team"]

    thread = await client.threads.create()
    tid = thread["thread_id"]
    goal = {"messages": [{"role": "user", "content": "write a.txt"}], "goals": [{"id": "g1", "text": "write a.txt", "status": "open"}]}
    run = await client.runs.create(tid, "team", input=goal)
    await client.runs.join(tid, run["run_id"])
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "success", server.logs()

    state = await client.threads.get_state(tid)
    [interrupt] = state["interrupts"]
    assert interrupt["value"]["thread"].startswith(f"{tid}/code-"), "the request names the specialist that asks"
    [request] = interrupt["value"]["requests"]
    assert request["tool"] == "files_write"
    assert not (project / "ws" / "a.txt").exists()

    resumed = await client.runs.create(tid, "team", command={"resume": {"decision": "approve"}})
    await client.runs.join(tid, resumed["run_id"])
    assert (await client.runs.get(tid, resumed["run_id"]))["status"] == "success", server.logs()
    final = await client.threads.get_state(tid)
    assert final["values"]["status"] == "done" and final["values"]["output"] == "the team wrote a.txt"
    assert (project / "ws" / "a.txt").read_text() == "team"


LOOP_NODES = {"__start__", "perceive", "decide", "act", "self_diagnose", "human_approval", "__end__"}
SCHEMA_FAILURES = ("typing_extensions.TypedDict", "Failed to get")
"""What the server logs when pydantic cannot build a graph's JSON schema (then Studio shows no input form):
on Python < 3.12 it refuses ``typing.TypedDict`` anywhere in the state."""


def edges_of(drawn: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], str | None]:
    """A drawn graph's edges as ``(source, target) -> label``."""
    return {(e["source"], e["target"]): e.get("data") for e in drawn["edges"]}


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` (``#/$defs/Goal``) looked up in ``schema``."""
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else node


def assert_no_schema_failure(server: Server) -> None:
    log = server.text()
    assert not [s for s in SCHEMA_FAILURES if s in log], f"the server could not build a schema:\n{server.logs()}"


async def test_studio_gets_an_input_form_and_draws_the_goal_met_edge(server: Server) -> None:
    """Item 7 of issue 15: on Python 3.11 Studio showed no input form (the input schema failed) and no
    edge from decide to the end (drawn under the other label of the same edge)."""
    client = get_client(url=server.url)
    [assistant] = await client.assistants.search(graph_id="agent")
    aid = assistant["assistant_id"]

    schemas = await client.assistants.get_schemas(aid)
    form = schemas["input_schema"]
    assert form is not None and {"messages", "goals"} <= set(form["properties"]), f"no input form: {form}\n{server.logs()}"
    goal = resolve(form, form["properties"]["goals"]["items"])
    assert {"id", "text", "status"} <= set(goal["properties"])
    assert {"messages", "goals", "status", "output"} <= set(schemas["state_schema"]["properties"])
    assert {"autonomy", "tools", "max_steps"} <= set(schemas["context_schema"]["properties"])

    drawn = await client.assistants.get_graph(aid)
    assert {n["id"] for n in drawn["nodes"]} == LOOP_NODES
    edges = edges_of(drawn)
    assert edges[("decide", "__end__")] == "goal met / budget spent"
    assert edges[("decide", "act")] == "allowed" and edges[("decide", "human_approval")] == "needs approval"
    assert_no_schema_failure(server)


async def test_studio_draws_the_team_with_its_delegation_to_each_specialist(team_server: tuple[Server, Path]) -> None:
    """Item 7 of issue 15: the team looked exactly like a single agent. A delegation runs the specialist
    inside the manager's act node; Studio now draws act → specialist (delegate) → act (result), and with
    xray the specialist's own loop."""
    server, _ = team_server
    client = get_client(url=server.url)
    [team] = await client.assistants.search(graph_id="team")
    [agent] = await client.assistants.search(graph_id="agent")

    drawn = await client.assistants.get_graph(team["assistant_id"])
    single = await client.assistants.get_graph(agent["assistant_id"])
    assert {n["id"] for n in drawn["nodes"]} == LOOP_NODES | {"code"}  # the crew's one specialist
    edges = edges_of(drawn)
    assert edges[("act", "code")] == "delegate" and edges[("code", "act")] == "result"
    assert edges[("decide", "__end__")] == "goal met / budget spent"
    assert edges_of(single).items() < edges.items(), "the team is the manager's loop plus its delegation"

    xray = await client.assistants.get_graph(team["assistant_id"], xray=True)
    inner = {n["id"] for n in xray["nodes"]} - LOOP_NODES
    assert inner == {f"code:{n}" for n in LOOP_NODES}, inner
    xray_edges = edges_of(xray)
    assert xray_edges[("act", "code:__start__")] == "delegate" and xray_edges[("code:__end__", "act")] == "result"
    assert xray_edges[("code:decide", "code:__end__")] == "goal met / budget spent"

    schemas = await client.assistants.get_schemas(team["assistant_id"])
    assert {"messages", "goals"} <= set(schemas["input_schema"]["properties"])
    assert_no_schema_failure(server)


def test_langgraph_build_serves_both_graphs_from_the_project_folder(tmp_path: Path) -> None:
    """The deployment the README documents: `langgraph dockerfile` (what `langgraph build` uses) for a
    project folder with a kasloop.toml; the server's working directory must be that folder, since the
    graphs read kasloop.toml from it."""
    (tmp_path / "kasloop.toml").write_text('autonomy = 3\nmodel = "openai:gpt-4o-mini"\n')
    (tmp_path / "langgraph.json").write_text(
        '{"dependencies": ["kasloop[postgres]", "."], "graphs": {"agent": "kasloop.graphs.studio:agent", "team": "kasloop.graphs.studio:team"}}'
    )
    proc = subprocess.run(
        [str(LANGGRAPH), "dockerfile", str(tmp_path / "Dockerfile")], cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert """LANGSERVE_GRAPHS='{"agent": "kasloop.graphs.studio:agent", "team": "kasloop.graphs.studio:team"}'""" in dockerfile
    assert "kasloop[postgres]" in dockerfile, "kasloop itself is installed in the image"
    [added] = re.findall(r"^ADD \. (\S+)$", dockerfile, re.M)
    [workdir] = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)
    assert workdir == added, "the server starts in the folder that holds kasloop.toml"
