"""Notebook helpers: the agent graph as a picture, drawn offline.

LangGraph's own pictures need a network service (mermaid.ink), a headless
Chromium download (pyppeteer) or Graphviz with pygraphviz. None of those is
guaranteed on a server or in CI, so kasloop lays the graph out itself and
writes plain SVG: layers from ``__start__`` downwards (longest path once the
loops' back edges are set aside, ``__end__`` alone at the bottom), edges
between neighbouring layers straight down, longer forward edges in lanes on
the left and edges back up in lanes on the right, each labelled where it
leaves its node. A node that is only called by one node and returns to it
(a team's specialist, reached from ``act`` by ``delegate``) gets a row of its
own just below its caller, with both edges drawn straight, so no lane has to
leave a node through its neighbours. The layout is deterministic, so the same
graph always gives the same picture.

In a notebook::

    from kasloop.reporting.notebook import show_graph
    show_graph()            # the kasloop agent loop; or show_graph(my_compiled_graph)
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from kasloop.config.schema import AgentConfig
from kasloop.errors import UsageError
from kasloop.graphs.agent import build_graph
from kasloop.models.scripted import ScriptedChatModel

__all__ = ["graph_svg", "show_graph"]

START, END = "__start__", "__end__"
NODE_W, NODE_H = 150.0, 48.0
LAYER_GAP, NODE_GAP, MARGIN = 96.0, 190.0, 20.0
PORT_GAP, LANE_GAP = 15.0, 16.0
PAIR_GAP = 10.0  # between the two lines of a call and its return
CALLEE_GAP = 40.0  # extra room above a row of callees
FONT = "font-family='Helvetica, Arial, sans-serif'"
CHAR_W = 6.2  # approximate width of one 11 px character, for label backgrounds and spacing


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    label: str


def _drawable(graph: Any) -> Any:
    """Accept a compiled graph (``.get_graph()``) or an already drawable ``langchain_core`` Graph."""
    return graph.get_graph() if hasattr(graph, "get_graph") else graph


def _agent_graph() -> Any:
    """kasloop's loop, built with an empty script: the shape does not depend on the model."""
    return build_graph(AgentConfig(model="scripted:-"), model=ScriptedChatModel(path="-", turns=[]))


def _callees(names: list[str], edges: list[_Edge]) -> dict[str, str]:
    """Nodes entered only from one other node and left only back to it (callee → caller).

    They are drawn in a row below their caller with straight edges both ways: laid out like the
    others they would share a row with the caller's other successors, whose side lanes would then
    run through them (a team's specialists beside the manager's ``self_diagnose``).
    """
    found: dict[str, str] = {}
    for n in names:
        if n in (START, END):
            continue
        sources = {e.source for e in edges if e.target == n}
        targets = {e.target for e in edges if e.source == n}
        if len(sources) == 1 and sources == targets and n not in sources and not sources & {START, END}:
            found[n] = sources.pop()
    return {n: caller for n, caller in found.items() if caller not in found}  # two nodes calling only each other: neither


def _layers(names: list[str], edges: list[_Edge]) -> dict[str, int]:
    """Layer of each node: longest path from ``__start__`` once the loops' back edges are set aside,
    with a row for the callees of each caller just below it (see :func:`_callees`).
    """
    callees = _callees(names, edges)
    if not callees:
        return _spine_layers(names, edges)
    rest = [n for n in names if n not in callees]
    layer = _spine_layers(rest, [e for e in edges if e.source not in callees and e.target not in callees])
    below = sorted({layer[caller] for caller in callees.values()})  # a callee row after each of these layers
    shifted = {n: li + sum(1 for b in below if b < li) for n, li in layer.items()}
    for callee, caller in callees.items():
        shifted[callee] = shifted[caller] + 1
    return shifted


def _spine_layers(names: list[str], edges: list[_Edge]) -> dict[str, int]:
    """Longest-path layers once the loops' back edges are set aside.

    A depth-first walk in edge order finds the back edges (edges to a node still on the walk's
    stack); what remains is acyclic, and longest-path layering puts every forward edge downwards.
    ``__end__`` goes alone to the bottom; nodes the walk cannot reach go just above it.
    """
    succ: dict[str, list[str]] = {n: [] for n in names}
    for e in edges:
        if e.target != END and e.source != e.target:
            succ[e.source].append(e.target)
    forward: dict[str, list[str]] = {n: [] for n in names}
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    finished: list[str] = []

    def walk(root: str) -> None:
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack.pop()
            if i < len(succ[node]):
                stack.append((node, i + 1))
                nxt = succ[node][i]
                if state.get(nxt) == 1:
                    continue  # a back edge: drawn, but not used for layering
                forward[node].append(nxt)
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                finished.append(node)

    for root in ([START] if START in succ else []) + names:
        if root not in state and root != END:
            walk(root)
    layer: dict[str, int] = {}
    for node in reversed(finished):  # reverse finishing order is a topological order
        layer.setdefault(node, 0)
        for nxt in forward[node]:
            layer[nxt] = max(layer.get(nxt, 0), layer[node] + 1)
    if END in succ:
        layer[END] = max(layer.values(), default=-1) + 1
    return layer


def _rows(layer: dict[str, int], names: list[str], edges: list[_Edge]) -> list[list[str]]:
    """Nodes per layer, each layer ordered by the mean position of its neighbours above (barycentre)."""
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in names:
        rows[layer[n]].append(n)
    pos: dict[str, float] = {}
    ordered: list[list[str]] = []
    for row in rows:
        def key(n: str, row: list[str] = row) -> tuple[float, int]:
            near = [pos[e.source] for e in edges if e.target == n and e.source in pos]
            near += [pos[e.target] for e in edges if e.source == n and e.target in pos]
            return (sum(near) / len(near) if near else 0.0, row.index(n))

        row = sorted(row, key=key)
        for i, n in enumerate(row):
            pos[n] = i - (len(row) - 1) / 2
        ordered.append(row)
    return ordered


def _call_line(caller: tuple[float, float], callee: tuple[float, float], offset: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The line from the bottom of ``caller`` to the top of ``callee`` (in the row below), moved sideways
    by ``offset`` (negative: left), so a call and its return are two parallel lines, not one.

    It leaves the caller's bottom towards the callee's side, so the lines to several callees fan out
    instead of crossing at the caller's centre.
    """
    (px, py), (cx, cy) = caller, callee
    spread = max(-(NODE_W / 2 - 12), min(NODE_W / 2 - 12, (cx - px) * 0.4))
    x0, y0, x1, y1 = px + spread, py + NODE_H / 2, cx, cy - NODE_H / 2
    length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
    nx, ny = (y1 - y0) / length, -(x1 - x0) / length  # the line's normal: +x for a vertical line
    return (x0 + offset * nx, y0 + offset * ny), (x1 + offset * nx, y1 + offset * ny)


def _label(x: float, y: float, text: str, anchor: str = "middle") -> str:
    """A label with a white background, centred on (x, y) or starting/ending there."""
    if not text:
        return ""
    w = len(text) * CHAR_W + 8
    left = {"middle": x - w / 2, "start": x - 4, "end": x - w + 4}[anchor]
    return (
        f"<rect x='{left:.1f}' y='{y - 8:.1f}' width='{w:.1f}' height='15' rx='3' fill='white'/>"
        f"<text x='{x:.1f}' y='{y + 3.5:.1f}' text-anchor='{anchor}' font-size='11' fill='#333' {FONT}>{escape(text)}</text>"
    )


def graph_svg(graph: Any | None = None) -> str:
    """The graph as a standalone SVG document (no network, no Graphviz, no browser).

    Edges between neighbouring layers go straight down. Longer forward edges run in lanes on the
    left, edges back up (the loop's cycles) in lanes on the right; edges with the same target share
    a lane, and each carries its label where it leaves its node.

    Args:
        graph: a compiled LangGraph graph or a ``langchain_core`` drawable Graph; default: kasloop's agent loop.
    """
    drawable = _drawable(graph if graph is not None else _agent_graph())
    names = [str(k) for k in drawable.nodes]
    edges = [_Edge(str(e.source), str(e.target), "" if e.data is None else str(e.data)) for e in drawable.edges]
    layer = _layers(names, edges)
    rows = _rows(layer, names, edges)
    callees = _callees(names, edges)

    # Classify edges; lane edges are grouped by (side, target) into one shared lane.
    direct: list[_Edge] = []
    returns: list[_Edge] = []  # from a callee straight back up to its caller
    loops: list[_Edge] = []
    lanes: dict[tuple[str, str], list[_Edge]] = {}
    for e in edges:
        if e.source == e.target:
            loops.append(e)
        elif callees.get(e.source) == e.target:
            returns.append(e)
        elif layer[e.target] == layer[e.source] + 1:
            direct.append(e)
        else:
            side = "left" if layer[e.target] >= layer[e.source] else "right"
            lanes.setdefault((side, e.target), []).append(e)

    # Lane columns per side: shorter spans nearer the nodes; overlapping spans never share a column.
    column: dict[tuple[str, str], int] = {}
    for side in ("left", "right"):
        taken: list[list[tuple[int, int]]] = []
        groups = [(k, g) for k, g in lanes.items() if k[0] == side]
        spans = {k: (min(layer[x] for e in g for x in (e.source, e.target)), max(layer[x] for e in g for x in (e.source, e.target))) for k, g in groups}
        for k, _ in sorted(groups, key=lambda kg: (spans[kg[0]][1] - spans[kg[0]][0], spans[kg[0]])):
            lo, hi = spans[k]
            col = next((i for i, used in enumerate(taken) if all(hi < a or lo > b for a, b in used)), len(taken))
            if col == len(taken):
                taken.append([])
            taken[col].append((lo, hi))
            column[k] = col
    cols = {side: 1 + max((c for k, c in column.items() if k[0] == side), default=-1) for side in ("left", "right")}
    label_room = max([len(e.label) * CHAR_W + 22 for g in lanes.values() for e in g] + [len(e.label) * CHAR_W + 30 for e in loops] + [30.0])

    widest = max(len(r) for r in rows)
    core_w = (widest - 1) * NODE_GAP + NODE_W
    core_left = MARGIN + cols["left"] * LANE_GAP + label_room
    width = core_left + core_w + label_room + cols["right"] * LANE_GAP + MARGIN
    # Rows are LAYER_GAP apart; a row of callees a little more, so its fan of calls and returns has room.
    row_y: list[float] = []
    for row in rows:
        extra = CALLEE_GAP if row and all(n in callees for n in row) else 0.0
        row_y.append(MARGIN + NODE_H / 2 if not row_y else row_y[-1] + LAYER_GAP + extra)
    height = row_y[-1] + NODE_H / 2 + MARGIN if row_y else 2 * MARGIN + NODE_H
    centre: dict[str, tuple[float, float]] = {}
    for li, row in enumerate(rows):
        for i, n in enumerate(row):
            centre[n] = (core_left + core_w / 2 + (i - (len(row) - 1) / 2) * NODE_GAP, row_y[li])

    def lane_x(side: str, col: int) -> float:
        if side == "left":
            return core_left - label_room - col * LANE_GAP
        return core_left + core_w + label_room + col * LANE_GAP

    # Ports: the y of each stub on a node's side. Stubs whose lane runs upwards sit above those whose
    # lane runs downwards, and outer lanes leave from the far end, so a stub never crosses the lanes
    # that start at its own node.
    slots: dict[tuple[str, str], list[tuple[tuple[int, int], object]]] = {}
    for (side, target), group in lanes.items():
        col = column[(side, target)]
        for e in group:
            up = centre[target][1] < centre[e.source][1]
            slots.setdefault((e.source, side), []).append(((0, col) if up else (1, -col), e))
        up_in = any(centre[e.source][1] < centre[target][1] for e in group)  # the lane arrives from above
        slots.setdefault((target, side), []).append(((0, col) if up_in else (1, -col), ("in", side, target)))
    port: dict[tuple[str, str, object], float] = {}
    for (node, side), items in slots.items():
        items.sort(key=lambda it: it[0])
        gap = min(PORT_GAP, (NODE_H - 10) / max(1, len(items) - 1))
        for i, (_, key) in enumerate(items):
            port[(node, side, key)] = centre[node][1] + (i - (len(items) - 1) / 2) * gap

    style = "fill='none' stroke='#555' stroke-width='1.4' stroke-linejoin='round' marker-end='url(#arrow)'"
    paths: list[str] = []
    labels: list[str] = []
    for e in direct:
        (sx, sy), (tx, ty) = centre[e.source], centre[e.target]
        y0, y1 = sy + NODE_H / 2, ty - NODE_H / 2
        if callees.get(e.target) == e.source:  # the call: left of its return, labelled near the caller
            (ax, ay), (bx, by) = _call_line(centre[e.source], centre[e.target], -PAIR_GAP / 2)
            paths.append(f"<path class='edge' d='M{ax:.1f},{ay:.1f} L{bx:.1f},{by:.1f}' {style}/>")
            labels.append(_label(ax + 0.3 * (bx - ax) - 6, ay + 0.3 * (by - ay), e.label, "end"))
            continue
        paths.append(f"<path class='edge' d='M{sx:.1f},{y0:.1f} L{tx:.1f},{y1:.1f}' {style}/>")
        labels.append(_label((sx + tx) / 2, (y0 + y1) / 2, e.label))
    for e in returns:  # the return: right of its call, labelled near the callee (the two labels never share a height)
        (ax, ay), (bx, by) = _call_line(centre[e.target], centre[e.source], PAIR_GAP / 2)
        paths.append(f"<path class='edge' d='M{bx:.1f},{by:.1f} L{ax:.1f},{ay:.1f}' {style}/>")
        labels.append(_label(ax + 0.75 * (bx - ax) + 6, ay + 0.75 * (by - ay), e.label, "start"))
    for (side, target), group in lanes.items():
        x_lane = lane_x(side, column[(side, target)])
        sign = -1 if side == "left" else 1
        tx, _ = centre[target]
        t_side = tx + sign * NODE_W / 2
        ty = port[(target, side, ("in", side, target))]
        for e in group:
            sx, _ = centre[e.source]
            s_side = sx + sign * NODE_W / 2
            sy = port[(e.source, side, e)]
            paths.append(f"<path class='edge' d='M{s_side:.1f},{sy:.1f} H{x_lane:.1f} V{ty:.1f} H{t_side + sign:.1f}' {style}/>")
            labels.append(_label(s_side + sign * 8, sy, e.label, "end" if side == "left" else "start"))
    for e in loops:  # over the node's top right corner, clear of the side ports
        x, y = centre[e.source]
        right, top = x + NODE_W / 2, y - NODE_H / 2
        paths.append(
            f"<path class='edge' d='M{right - 26:.1f},{top:.1f} C{right - 20:.1f},{top - 30:.1f} "
            f"{right + 30:.1f},{top - 22:.1f} {right + 1:.1f},{top + 7:.1f}' {style}/>"
        )
        labels.append(_label(right + 22, top - 12, e.label, "start"))

    nodes: list[str] = []
    for n, (x, y) in centre.items():
        terminal = n in (START, END)
        fill = "#bfb6fc" if n == END else ("#ffffff" if n == START else "#f2f0ff")
        rx = NODE_H / 2 if terminal else 6
        nodes.append(
            f"<g class='node'><rect x='{x - NODE_W / 2:.1f}' y='{y - NODE_H / 2:.1f}' width='{NODE_W:.0f}' "
            f"height='{NODE_H:.0f}' rx='{rx:.0f}' fill='{fill}' stroke='#7c6fd6' stroke-width='1.5'/>"
            f"<text x='{x:.1f}' y='{y + 5:.1f}' text-anchor='middle' font-size='14' fill='#222' {FONT}>{escape(n)}</text></g>"
        )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
        f"viewBox='0 0 {width:.0f} {height:.0f}'>"
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' markerHeight='7' "
        "orient='auto'><path d='M0,0 L10,5 L0,10 z' fill='#555'/></marker></defs>"
        f"<rect width='100%' height='100%' fill='white'/>{''.join(paths)}{''.join(nodes)}{''.join(labels)}</svg>"
    )


def show_graph(graph: Any | None = None) -> Any:
    """An ``IPython.display.SVG`` of :func:`graph_svg`, which a notebook renders as a picture."""
    try:
        from IPython.display import SVG
    except ImportError:
        raise UsageError(
            "show_graph() displays the picture in Jupyter and needs IPython (`pip install ipykernel`); "
            "outside a notebook use graph_svg() and write the SVG text to a file."
        ) from None
    return SVG(data=graph_svg(graph))
