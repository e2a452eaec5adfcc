"""The README's "How kasloop is built" is kept true: every name its table points at imports, and every
package of the tree is in the table (issue 16: a newcomer finds each concept from the folder names alone)."""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from pathlib import Path

from conftest import find_cycle

ROOT = Path(__file__).resolve().parent.parent
SECTION = re.compile(r"^## How kasloop is built\n(.*?)^## ", re.S | re.M)
ROW = re.compile(r"^\| `(kasloop[\w.]*)` \| `([^`]+)` \| [^|]+ \| (.+) \|$", re.M)


def table() -> dict[str, tuple[str, list[str]]]:
    """package -> (folder, the dotted names of its "start reading at" column)."""
    section = SECTION.search((ROOT / "README.md").read_text())
    assert section is not None, 'README.md has no "## How kasloop is built" section'
    rows = {package: (folder, re.findall(r"`([\w.]+)`", names)) for package, folder, names in ROW.findall(section.group(1))}
    assert len(rows) >= 10, f"the table was not read: {sorted(rows)}"
    return rows


def test_every_name_the_table_points_at_imports() -> None:
    missing = []
    for package, (_, names) in table().items():
        assert names, f"{package}: no names to start reading at"
        for dotted in names:
            assert dotted == package or dotted.startswith(package + "."), f"{dotted} is listed under {package}"
            module, _, attribute = dotted.rpartition(".")
            try:
                getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError) as exc:
                missing.append(f"{dotted}: {exc}")
    assert not missing, missing


def test_every_package_of_the_tree_is_in_the_table() -> None:
    """A new package (or one that moved) must be described before it lands: the packages pyproject.toml ships
    (but the data-only ones) are exactly the table's, each in the folder the table names."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"kasloop": "kasloop", **pyproject["package-dir"]}
    shipped = {
        package for package in pyproject["packages"]
        if any(path.suffix == ".py" for path in (ROOT / folders.get(package, package.replace(".", "/"))).iterdir())
    }
    rows = table()
    assert shipped == set(rows), f"in pyproject but not the README: {sorted(shipped - set(rows))}; in the README only: {sorted(set(rows) - shipped)}"
    for package, (folder, _) in rows.items():
        expected = folders.get(package, package.replace(".", "/"))
        assert folder.rstrip("/") == expected, f"{package} lives in {expected}/, the README says {folder}"


PACKAGES = ("graphs", "nodes", "tools", "checkpoints", "runtime", "channels", "guardrails", "safety", "models", "config", "reporting", "support", "cli", "memory")
FOLDERS = {"kasloop": ROOT / "kasloop", "kasloop.graphs": ROOT / "graphs", "kasloop.nodes": ROOT / "nodes", "kasloop.tools": ROOT / "tools", "kasloop.checkpoints": ROOT / "checkpoints"}


def _room(module: str) -> str:
    """A package of the table, or a module at the top of ``kasloop/`` (``agent``, ``errors``, ``state``...)."""
    parts = module.split(".")
    return f"kasloop.{parts[1]}" if len(parts) > 1 and parts[1] in PACKAGES else ".".join(parts[:2])


def package_graph() -> dict[str, set[str]]:
    """Which room imports which (imports under ``if TYPE_CHECKING:`` aside; late imports included)."""
    graph: dict[str, set[str]] = {}
    for base, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("").parts
            module = ".".join((base, *relative)).removesuffix(".__init__")
            tree = ast.parse(path.read_text())
            typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kasloop") and id(node) not in typing_only:
                    source, target = _room(module), _room(node.module)
                    if source != target:
                        graph.setdefault(source, set()).add(target)
    return graph


def test_no_two_rooms_of_the_house_import_each_other() -> None:
    """The diagram's rows hold: no circle between packages (and the modules at the top of ``kasloop/``),
    which is stricter than no circle between modules."""
    graph = package_graph()
    assert {"kasloop.runtime", "kasloop.checkpoints"} <= graph["kasloop.agent"], "the graph is read"
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])
