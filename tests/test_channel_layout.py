"""The layout of ``kasloop.channels`` (issue 16): tools stay tools, ``base`` holds types, no import circles.

These read the source with :mod:`ast` rather than run anything: what they pin is where code lives
and which module imports which (including imports inside functions and under ``TYPE_CHECKING``,
which a runtime check would miss), not behaviour; the channels' behaviour has its own tests.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

from conftest import find_cycle

ROOT = Path(__file__).resolve().parent.parent
CHANNELS = ROOT / "kasloop" / "channels"
TOOLS = ROOT / "tools"
PACKAGE = "kasloop.channels"


def channel_modules() -> dict[str, Path]:
    """``kasloop.channels.<name>`` (and the package itself) → its file."""
    found = {f"{PACKAGE}.{path.stem}": path for path in sorted(CHANNELS.glob("*.py")) if path.stem != "__init__"}
    return {PACKAGE: CHANNELS / "__init__.py", **found}


def imported_modules(path: Path, known: Mapping[str, Path] | None = None) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every absolute import anywhere in ``path``; ``from pkg import sub`` names ``pkg.sub``
    when ``pkg.sub`` is one of ``known`` (a submodule), else ``pkg``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield node.lineno, sub if known is not None and sub in known else node.module


def import_graph() -> dict[str, set[str]]:
    """Which module of ``kasloop.channels`` imports which other one (anywhere in its file)."""
    modules = channel_modules()
    return {
        name: {target for _, target in imported_modules(path, modules) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_tools_import_nothing_from_the_channels() -> None:
    """Channels may use tools; a tool never reaches into the channels (the network gate reads which
    addresses are kasloop's receivers from ``kasloop.safety.receivers``, not from here)."""
    found = [
        f"{path.name}:{line} imports {module}"
        for path in sorted(TOOLS.glob("*.py"))
        for line, module in imported_modules(path, channel_modules())
        if module == PACKAGE or module.startswith(f"{PACKAGE}.")
    ]
    assert not found, found


def test_base_holds_types_and_constants_only() -> None:
    """No function at module level (no I/O, no fan-out) and no method with a body: classes are data or Protocols."""
    tree = ast.parse((CHANNELS / "base.py").read_text())
    functions = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert not functions, f"kasloop/channels/base.py defines functions {functions}; put them in fanout.py or the channel's module"
    with_bodies = [
        f"{cls.name}.{fn.name}"
        for cls in tree.body if isinstance(cls, ast.ClassDef)
        for fn in cls.body if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for stmt in fn.body
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and (stmt.value.value is Ellipsis or isinstance(stmt.value.value, str)))
    ]  # fmt: skip
    assert not with_bodies, f"methods with a body in kasloop/channels/base.py: {with_bodies} (Protocol stubs only)"
    graph = import_graph()
    assert graph[f"{PACKAGE}.base"] == set(), "base.py imports no other channel module"


def test_no_import_circle_within_the_channels() -> None:
    graph = import_graph()
    assert graph[f"{PACKAGE}.fanout"] >= {f"{PACKAGE}.email", f"{PACKAGE}.telegram", f"{PACKAGE}.webhook"}, "the graph is read"
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_approval_channels_import_only_shared_types_and_records() -> None:
    """The channels are imported by the fan-out, never the other way round (that was the old late-import circle)."""
    shared = {f"{PACKAGE}.base", f"{PACKAGE}.announcements"}
    graph = import_graph()
    for name in ("email", "telegram", "webhook"):
        assert graph[f"{PACKAGE}.{name}"] <= shared, f"{name}.py imports {sorted(graph[f'{PACKAGE}.{name}'] - shared)}"


def test_the_circle_finder_finds_a_circle() -> None:
    """The check above can fail: a circle through a late import is found like any other."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_channels_depend_on_nothing_above_them() -> None:
    """``Agent`` is a facade over ``kasloop.runtime``, which uses the channels; a channel or receiver that
    imported either (even under ``TYPE_CHECKING``) would point back up, as the old ``agent.py`` <->
    ``channels/runner.py`` circle did. The receiver decides through the ``Decider`` protocol of ``base``."""
    found = [
        f"{path.name}:{line} imports {module}"
        for name, path in channel_modules().items()
        for line, module in imported_modules(path)
        if module == "kasloop.agent" or module.startswith("kasloop.runtime")
    ]
    assert not found, found
    receiver_imports = {module for _, module in imported_modules(CHANNELS / "webhook_receiver.py", channel_modules())}
    assert f"{PACKAGE}.base" in receiver_imports, "the receiver works through base.Decider (the check reads imports)"
    polling = ROOT / "kasloop" / "runtime" / "polling.py"
    assert "kasloop.agent" not in {module for _, module in imported_modules(polling)}, "the daemon's polling works through the sessions"


def test_the_receivers_live_under_channels_and_tools_stay_tools() -> None:
    """The signed webhook receiver, the Telegram update pump, the email inbox poll and the inbox feed are
    channels (what comes in); the tool modules only define what the model may call and what it sends."""
    receivers = {"make_webhook_app", "approvals_app", "serve_approvals", "DeliveryLog", "DatabaseDeliveryLog", "inbox_deliver", "pump_updates", "poll_once", "poll_inbox"}
    defined_in_tools = [
        f"{path.name}: {node.name}"
        for path in sorted(TOOLS.glob("*.py"))
        for node in ast.parse(path.read_text()).body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in receivers
    ]
    assert not defined_in_tools, defined_in_tools
    defined_in_channels = {
        node.name
        for path in channel_modules().values()
        for node in ast.parse(path.read_text()).body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    assert receivers <= defined_in_channels, sorted(receivers - defined_in_channels)
