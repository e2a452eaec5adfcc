"""The notebooks in ``notebooks/`` run top to bottom, so they cannot rot.

Each is executed in a real IPython kernel (nbclient + ipykernel, the venv's own
Python) on the scripted model; any failing cell, including the notebooks' own
``assert``s, fails the test. The kernel's temporary folder is the test's, so a
notebook that forgets to clean up is caught too. The graph picture is checked
twice: as an SVG output of the executed quickstart, and through
``kasloop.reporting.notebook.graph_svg`` directly (well-formed, every node and edge drawn,
deterministic).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="install the test extra: pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="install the test extra: pip install -e '.[test]'")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

from kasloop.reporting.notebook import graph_svg  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ["autonomy_and_approvals", "ecosystem", "memory_and_recovery", "quickstart", "teams"]
SVG_NS = "{http://www.w3.org/2000/svg}"
CELL_TIMEOUT = 120


def _execute(path: Path, cwd: Path) -> Any:
    """Run every cell in a fresh kernel of this Python (never a user-installed ``python3`` kernelspec)."""
    notebook = nbformat.read(path, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[])  # only the native kernel: sys.executable -m ipykernel_launcher
    assert specs.get_kernel_spec("python3").argv[0] == sys.executable
    manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = nbclient.NotebookClient(
        notebook, km=manager, timeout=CELL_TIMEOUT, startup_timeout=120, resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return notebook


def _outputs(notebook: Any) -> list[dict[str, Any]]:
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]


def test_the_notebooks_are_the_expected_ones_and_committed_without_outputs() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code, path.name
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: clear the outputs before committing"
        first = notebook.cells[0].source
        assert 'MODEL = "local"' in first and "openai:gpt-4o-mini" in first, f"{path.name} must say how to switch models"
        assert any("shutil.rmtree(work)" in c.source for c in code), f"{path.name} must remove its temporary folder"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_top_to_bottom(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_tmp = tmp_path / "tmp"
    kernel_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))  # the kernel inherits it: tempfile.mkdtemp lands here
    for var in ("OPENAI_API_KEY", "KASLOOP_MODEL", "KASLOOP_HOME"):
        monkeypatch.delenv(var, raising=False)
    try:
        executed = _execute(NOTEBOOKS / f"{name}.ipynb", tmp_path)
    except nbclient.exceptions.CellExecutionError as exc:  # show the failing cell's error, not nbclient's internals
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the kernel colours its tracebacks
        pytest.fail(f"{name}.ipynb failed:\n{plain}", pytrace=False)
    outputs = _outputs(executed)
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    leftovers = [p.name for p in kernel_tmp.iterdir() if p.name.startswith("kasloop-notebook-")]
    assert leftovers == [], f"{name}.ipynb left its temporary folder behind"
    assert not (tmp_path / ".kasloop").exists()  # nothing written to the kernel's working directory
    if any("show_graph" in c.source for c in executed.cells if c.cell_type == "code"):
        pictures = [o for o in outputs if o.output_type == "display_data" or o.output_type == "execute_result"]
        svgs = [o.data["image/svg+xml"] for o in pictures if "image/svg+xml" in o.get("data", {})]
        assert svgs, f"{name}.ipynb shows the graph but produced no SVG output"
        root = ET.fromstring(svgs[0])
        labels = {t.text for t in root.iter(f"{SVG_NS}text")}
        assert {"perceive", "decide", "act", "self_diagnose", "human_approval"} <= labels


def test_quickstart_shows_the_graph_picture() -> None:
    source = "".join(c.source for c in nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4).cells)
    assert "show_graph()" in source


def test_graph_svg_draws_every_node_and_edge_of_the_agent_loop() -> None:
    from kasloop.cli.graph import mermaid

    svg = graph_svg()
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == f"{SVG_NS}svg"
    assert float(root.get("width", 0)) > 0 and float(root.get("height", 0)) > 0
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    nodes = ["__start__", "perceive", "decide", "act", "self_diagnose", "human_approval", "__end__"]
    assert all(texts.count(n) == 1 for n in nodes), texts
    edges = [p for p in root.iter(f"{SVG_NS}path") if p.get("class") == "edge"]
    assert len(edges) == mermaid().count("-->") + mermaid().count(".->")  # one path per edge of the graph
    for label in ("needs approval", "approve / edit", "reject / respond", "refused or step left", "transient: retry"):
        assert label in texts
    assert graph_svg() == svg  # deterministic: the same graph always gives the same picture


def test_graph_svg_draws_any_compiled_graph_and_escapes_names() -> None:
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        n: int

    def step(state: State) -> State:
        return {"n": state["n"] + 1}

    builder = StateGraph(State)
    builder.add_node("a<b", step)
    builder.add_node("c&d", step)
    builder.add_edge(START, "a<b")
    builder.add_conditional_edges("a<b", lambda s: "again" if s["n"] < 3 else "next", {"again": "a<b", "next": "c&d"})
    builder.add_conditional_edges("c&d", lambda s: "back" if s["n"] < 5 else "stop", {"back": "a<b", "stop": END})
    svg = graph_svg(builder.compile())
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "a<b" in texts and "c&d" in texts and "back" in texts and "again" in texts
    assert len([p for p in root.iter(f"{SVG_NS}path") if p.get("class") == "edge"]) == 5
