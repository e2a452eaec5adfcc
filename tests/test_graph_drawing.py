"""What the graphs look like when drawn: ``kasloop graph`` (the README's mermaid), the notebooks' SVG
picture and the team graph, in process (``tests/test_studio_server.py`` checks the same through
``langgraph dev``'s API).

Item 7 of issue 15: decide's "goal met" edge to the end was not drawn (LangGraph draws one edge per
pair of nodes, and another label of the same edge won), and a team was drawn exactly like one agent.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast

import pytest
from langchain_core.runnables.graph import Graph
from langgraph.graph import END

from kasloop import AgentConfig, Specialist
from kasloop.cli.graph import mermaid
from kasloop.graphs.agent import (
    ACT_EDGES,
    APPROVAL_EDGES,
    DECIDE_EDGES,
    DIAGNOSE_EDGES,
    PERCEIVE_EDGES,
    build_graph,
    route_after_decide,
)
from kasloop.graphs.team import TeamGraph, build_team_graph
from kasloop.reporting.notebook import graph_svg
from kasloop.models.scripted import ScriptedChatModel
from kasloop.state import AgentState

SVG_NS = "{http://www.w3.org/2000/svg}"
LOOP = ["__start__", "perceive", "decide", "act", "self_diagnose", "human_approval", "__end__"]
ROUTES = {"perceive": PERCEIVE_EDGES, "decide": DECIDE_EDGES, "human_approval": APPROVAL_EDGES, "act": ACT_EDGES, "self_diagnose": DIAGNOSE_EDGES}


def idle() -> ScriptedChatModel:
    """A model with no turns: drawing never calls it."""
    return ScriptedChatModel(path="-", turns=[])


def team(workspace: Path, **members: Specialist) -> TeamGraph:
    config = AgentConfig(model="scripted:-", tools=[], workspace=workspace, run_team="crew", team={"crew": members})
    return build_team_graph(config, model=idle(), specialist_models={name: idle() for name in members})


def drawn_edges(drawn: Graph) -> dict[tuple[str, str], str | None]:
    return {(e.source, e.target): e.data for e in drawn.edges}


def test_every_route_of_the_loop_is_drawn_with_its_label(workspace: Path) -> None:
    """One label per (node, target) in each router's map: a second label to the same target is never drawn."""
    drawn = drawn_edges(build_graph(AgentConfig(model="scripted:-", workspace=workspace), model=idle()).get_graph())
    for node, routes in ROUTES.items():
        assert len(set(routes.values())) == len(routes), f"{node}: two labels lead to the same node, only one can be drawn"
        assert {drawn[(node, target)] for target in routes.values()} == set(routes), node
    assert drawn[("decide", END)] == "goal met / budget spent"


def test_decide_still_ends_the_run_when_the_goal_is_met_or_the_budget_is_spent() -> None:
    """The label changed, not the route: both states still go to END, and every other route as before."""
    def target(state: dict[str, Any]) -> str:
        return DECIDE_EDGES[route_after_decide(cast(AgentState, state))]

    assert target({"status": "done"}) == END
    assert target({"status": "paused_budget", "last_error": {"kind": "model"}}) == END  # the budget comes first
    assert target({"status": "running", "last_error": {"kind": "model", "message": "x"}}) == "self_diagnose"
    assert target({"status": "running", "pending": []}) == "decide"
    assert target({"status": "running", "pending": [{"gate": "ask"}]}) == "human_approval"
    assert target({"status": "running", "pending": [{"gate": "allow"}]}) == "act"


def test_kasloop_graph_prints_the_goal_met_edge() -> None:
    text = mermaid()
    assert "\tdecide -. &nbsp;goal met / budget spent&nbsp; .-> __end__;\n" in text
    assert text.count(".-> __end__;") == len(ROUTES), "every node has its one edge to the end"


def test_the_team_graph_draws_the_delegation_to_each_specialist(workspace: Path) -> None:
    graph = team(
        workspace,
        research=Specialist(description="Reads files.", tools=["files_read"]),
        code=Specialist(description="Writes files.", tools=["files"]),
    )
    drawn = graph.get_graph()
    assert list(drawn.nodes) == [*LOOP, "research", "code"]
    edges = drawn_edges(drawn)
    for name in ("research", "code"):
        assert edges[("act", name)] == "delegate" and edges[(name, "act")] == "result"
    single = drawn_edges(build_graph(AgentConfig(model="scripted:-", workspace=workspace), model=idle()).get_graph())
    assert {k: v for k, v in edges.items() if "research" not in k and "code" not in k} == single  # the manager's loop, unchanged
    text = drawn.draw_mermaid()
    assert "\tact -. &nbsp;delegate&nbsp; .-> code;\n" in text and "\tcode -- &nbsp;result&nbsp; --> act;\n" in text
    assert drawn.first_node().id == "__start__" and drawn.last_node().id == "__end__"  # type: ignore[union-attr]


async def test_xray_draws_each_specialists_own_loop_and_async_draws_the_same(workspace: Path) -> None:
    graph = team(workspace, code=Specialist(description="Writes files.", tools=["files"]))
    xray = graph.get_graph(xray=True)
    assert set(xray.nodes) == {*LOOP, *(f"code:{n}" for n in LOOP)}
    edges = drawn_edges(xray)
    assert edges[("act", "code:__start__")] == "delegate" and edges[("code:__end__", "act")] == "result"
    assert edges[("code:decide", "code:__end__")] == "goal met / budget spent"
    assert "\tsubgraph code\n" in xray.draw_mermaid()
    for depth in (False, True, 1):
        assert (await graph.aget_graph(xray=depth)).to_json() == graph.get_graph(xray=depth).to_json()


def test_a_specialist_named_like_a_manager_node_gets_its_own_node(workspace: Path) -> None:
    graph = team(workspace, act=Specialist(description="Acts.", tools=["files_read"]), **{"a:b": Specialist(description="Odd.", tools=["files_read"])})
    edges = drawn_edges(graph.get_graph())
    assert edges[("act", "act_specialist")] == "delegate" and edges[("act_specialist", "act")] == "result"
    assert edges[("act", "a_b")] == "delegate"  # ':' would make it a subgraph prefix
    graph.get_graph(xray=True).draw_mermaid()  # no clash of subgraph and node names


def test_the_team_graph_keeps_its_specialists_through_copies(workspace: Path) -> None:
    """``langgraph dev`` serves a copy of each graph (its own saver and store); the copy must draw the same."""
    graph = team(workspace, code=Specialist(description="Writes files.", tools=["files"]))
    for copy in (graph.copy(), graph.with_config({"recursion_limit": 50})):
        assert isinstance(copy, TeamGraph) and list(copy.specialists) == ["code"]
        assert copy.get_graph().to_json() == graph.get_graph().to_json()
    assert graph.nodes.keys() == build_graph(AgentConfig(model="scripted:-", workspace=workspace), model=idle()).nodes.keys()


# The notebook picture (kasloop.reporting.notebook.graph_svg).


def svg_nodes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """Each drawn node's box (x0, y0, x1, y1) by its name."""
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for g in ET.fromstring(svg).iter(f"{SVG_NS}g"):
        rect, text = g.find(f"{SVG_NS}rect"), g.find(f"{SVG_NS}text")
        assert rect is not None and text is not None and text.text
        x, y, w, h = (float(rect.get(k, 0)) for k in ("x", "y", "width", "height"))
        boxes[text.text] = (x, y, x + w, y + h)
    return boxes


def svg_polylines(svg: str) -> list[list[tuple[float, float]]]:
    """The edges' paths as points (M, L, H and V commands; a self-loop's curve is left out)."""
    lines: list[list[tuple[float, float]]] = []
    for path in ET.fromstring(svg).iter(f"{SVG_NS}path"):
        d = path.get("d", "")
        if path.get("class") != "edge" or "C" in d:
            continue
        points: list[tuple[float, float]] = []
        for cmd, args in re.findall(r"([MLHV])([-\d.,]+)", d):
            nums = [float(v) for v in args.split(",")]
            x, y = points[-1] if points else (0.0, 0.0)
            points.append({"M": (nums[0], nums[-1]), "L": (nums[0], nums[-1]), "H": (nums[0], y), "V": (x, nums[0])}[cmd])
        lines.append(points)
    return lines


def assert_no_edge_runs_through_a_node(svg: str) -> None:
    """Edges may touch their own nodes' borders, never cross a node's inside (checked every 2 px)."""
    inset = 6.0  # a call and its return start a few px sideways of the border
    boxes = {n: (x0 + inset, y0 + inset, x1 - inset, y1 - inset) for n, (x0, y0, x1, y1) in svg_nodes(svg).items()}
    for points in svg_polylines(svg):
        for (ax, ay), (bx, by) in zip(points, points[1:]):
            steps = max(1, int(max(abs(bx - ax), abs(by - ay)) / 2))
            for i in range(steps + 1):
                x, y = ax + (bx - ax) * i / steps, ay + (by - ay) * i / steps
                inside = [n for n, (x0, y0, x1, y1) in boxes.items() if x0 < x < x1 and y0 < y < y1]
                assert not inside, f"an edge ({points}) runs through {inside}"


def test_the_loop_picture_shows_the_goal_met_edge() -> None:
    svg = graph_svg()
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG_NS}text")]
    assert texts.count("goal met / budget spent") == 1
    assert_no_edge_runs_through_a_node(svg)


def test_the_team_picture_shows_each_specialist_in_a_row_below_act(workspace: Path) -> None:
    names = ["research", "code", "communication", "operations"]
    graph = team(workspace, **{n: Specialist(description=n, tools=["files_read"]) for n in names})
    svg = graph_svg(graph)
    boxes = svg_nodes(svg)
    assert set(boxes) == {*LOOP, *names}
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG_NS}text")]
    assert texts.count("delegate") == len(names) and texts.count("result") == len(names)
    assert len(svg_polylines(svg)) + 1 == len(graph.get_graph().edges)  # every edge drawn (+ decide's self-loop)
    row = {boxes[n][1] for n in names}
    assert len(row) == 1, "the specialists share one row"
    others = {n: box[1] for n, box in boxes.items() if n not in names}
    assert row.isdisjoint(others.values()), "and nothing else is in it"
    assert others["act"] < row.pop() < others["self_diagnose"]
    assert_no_edge_runs_through_a_node(svg)
    assert graph_svg(graph) == svg  # deterministic


def test_the_picture_of_two_nodes_that_only_call_each_other_is_drawn() -> None:
    """No caller is left: neither is laid out as the other's callee."""
    drawable = Graph()
    a, b = drawable.add_node(None, "a"), drawable.add_node(None, "b")
    drawable.add_edge(a, b, "there")
    drawable.add_edge(b, a, "back")
    assert set(svg_nodes(graph_svg(drawable))) == {"a", "b"}


@pytest.mark.parametrize("graph_id", ["agent", "team"])
def test_the_studio_graphs_have_json_schemas(graph_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic builds Studio's input form from the state; on Python < 3.12 it refuses ``typing.TypedDict``."""
    import importlib
    import sys

    (tmp_path / "plan.jsonl").write_text("")
    (tmp_path / "kasloop.toml").write_text(f'model = "scripted:{tmp_path / "plan.jsonl"}"\nworkspace = "{tmp_path}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "kasloop.graphs.studio", raising=False)
    studio = importlib.import_module("kasloop.graphs.studio")
    monkeypatch.delitem(sys.modules, "kasloop.graphs.studio")  # the next import reads its own kasloop.toml
    graph = getattr(studio, graph_id)
    for schema in (graph.get_input_jsonschema(), graph.get_output_jsonschema()):
        assert {"messages", "goals", "plan", "usage", "pending"} <= set(schema["properties"])
        assert {"Goal", "Plan", "Usage", "PendingCall", "ErrorInfo"} <= set(schema["$defs"])
