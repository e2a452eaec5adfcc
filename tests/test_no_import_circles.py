"""No import circle among kasloop's modules, late imports included (issue 16).

An ``import`` inside a function that is there only because the imported module imports this one is
still a circle: it just fails later, or never in the tests. So the graph here is read from the source
with :mod:`ast`, every ``import`` anywhere in a file counted (module level, functions, methods), except
under ``if TYPE_CHECKING:`` (never run). A circle is a strongly connected component of more than one
module; the failure names each one with the file and line of every import in it.

An import names the module it imports, not the packages Python runs on the way
(``kasloop/tools/__init__.py`` for ``kasloop.tools.files``): a package that re-exports its own
submodules would otherwise be in a circle with each of them. Importing a package itself
(``from kasloop.tools import Tool``) is an edge to the package's ``__init__``.

A late import that is not a circle may stay, with a comment saying why (an optional dependency
such as psycopg in ``checkpoints/backends.py``).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Graph = dict[str, dict[str, tuple[Path, int]]]
"""module → {imported module: (file, line) of the first import of it}."""


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """``kasloop`` and its sub-packages kept in top-level folders (``graphs/`` is ``kasloop.graphs``), from pyproject.toml."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {package: root / folder for package, folder in mapping.items()}


def module_files(packages: Mapping[str, Path]) -> dict[str, Path]:
    """Every module of ``packages`` (recursively; ``pkg/__init__.py`` is ``pkg``) → its file."""
    folders = {folder.resolve() for folder in packages.values()}
    found: dict[str, Path] = {}
    for package, folder in packages.items():
        nested = folders - {folder.resolve()}
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if any(folder.resolve().joinpath(*parts[:i]) in nested for i in range(1, len(parts))):
                continue  # in a folder that is a package of its own
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except what is under ``if TYPE_CHECKING:`` (its ``else`` runs, so it counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, known: Mapping[str, Path]) -> str | None:
    """``name`` or the closest package above it that is one of ``known`` (``kasloop.x.Name`` → ``kasloop.x``)."""
    while name not in known:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import of one of ``known`` that runs (anywhere in the file)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _run_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _known(alias.name, known)) is not None:
                    yield node.lineno, target
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"  # ``from pkg import module`` imports pkg.module
                target = sub if sub in known else _known(base, known)
                if target is not None:
                    yield node.lineno, target


def import_graph(packages: Mapping[str, Path] | None = None) -> tuple[Graph, dict[str, Path]]:
    """The import graph of ``packages`` (default: kasloop's, from pyproject.toml) and its modules' files."""
    known = module_files(package_dirs() if packages is None else packages)
    graph: Graph = {}
    for module, path in known.items():
        edges: dict[str, tuple[Path, int]] = {}
        for line, target in imports_of(module, path, known):
            if target != module:
                edges.setdefault(target, (path, line))
        graph[module] = edges
    return graph, known


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, {})):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def one_loop(graph: Graph, component: list[str]) -> list[str]:
    """A shortest way round the circle from its first module back to it, ``[a, b, ..., a]``."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node]):
            if target == start:
                return [*paths[node], start]
            if target in members and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"{component} is not a circle")


def describe(graph: Graph, component: list[str], root: Path = ROOT) -> str:
    """One circle for a person: the loop, then every import between its modules with file and line."""

    def where(source: str, target: str) -> str:
        path, line = graph[source][target]
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        return f"{shown}:{line}"

    loop = one_loop(graph, component)
    steps = " -> ".join(f"{a} ({where(a, b)})" for a, b in zip(loop, loop[1:], strict=False)) + f" -> {loop[-1]}"
    edges = [f"    {source} -> {target}  {where(source, target)}" for source in component for target in sorted(graph[source]) if target in component]
    return f"circle of {len(component)} modules: {steps}\n" + "\n".join(edges)


def test_no_import_circle() -> None:
    graph, _ = import_graph()
    found = circles(graph)
    assert not found, "import circles (late imports count; move the shared piece down or pass it in):\n" + "\n".join(
        describe(graph, component) for component in found
    )


def test_the_graph_is_read_with_late_imports_and_all_packages() -> None:
    graph, known = import_graph()
    assert {"kasloop.agent", "kasloop.graphs.team", "kasloop.nodes.act", "kasloop.tools.files", "kasloop.checkpoints.sqlite"} <= set(known)
    assert "kasloop.tools.files" in graph["kasloop.tools.registry"]
    # A late import (here: psycopg is an optional dependency) is an edge like any other.
    assert "kasloop.checkpoints.postgres" in graph["kasloop.checkpoints.backends"]


def test_the_circle_finder_sees_late_imports_and_skips_type_checking(tmp_path: Path) -> None:
    """It can fail: a circle closed by an import inside a function is found; one under TYPE_CHECKING is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import D\nelse:\n    import pkg.e\n"
    )
    (pkg / "d.py").write_text("import pkg.c\n")
    (pkg / "e.py").write_text("class E:\n    def m(self):\n        from .c import x\n")
    graph, _ = import_graph({"pkg": pkg})
    assert graph["pkg.b"] == {"pkg.a": (pkg / "b.py", 2)}
    assert "pkg.d" not in graph["pkg.c"], "TYPE_CHECKING imports never run"
    assert set(graph["pkg.e"]) == {"pkg.c"}, "a relative import inside a method"
    assert circles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.e"]]
    text = describe(graph, ["pkg.a", "pkg.b"], root=tmp_path)
    assert "pkg.a (pkg/a.py:1) -> pkg.b (pkg/b.py:2) -> pkg.a" in text
