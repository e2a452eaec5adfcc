"""The tool registry: every tool kasloop ships, and the selection an agent gets.

An agent's config names families (``files``) or single tools (``files_read``);
it gets exactly those and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable

from kasloop.errors import ConfigError
from kasloop.tools.base import Tool
from kasloop.tools.files import FILES_TOOLS
from kasloop.tools.http import HTTP_TOOLS
from kasloop.tools.shell import SHELL_TOOLS

__all__ = ["FAMILIES", "all_tools", "select_tools"]

FAMILIES: dict[str, tuple[Tool, ...]] = {
    "files": FILES_TOOLS,
    "shell": SHELL_TOOLS,
    "http": HTTP_TOOLS,
}


def all_tools(extra: Iterable[Tool] = ()) -> dict[str, Tool]:
    """Every registered tool by name, plus ``extra`` (user-defined) tools."""
    tools = {tool.name: tool for family in FAMILIES.values() for tool in family}
    for tool in extra:
        if tool.name in tools:
            raise ConfigError(f"Tool name `{tool.name}` is already taken; give your tool another name.")
        tools[tool.name] = tool
    return tools


def select_tools(names: Iterable[str], extra: Iterable[Tool] = ()) -> dict[str, Tool]:
    """Resolve family and tool names to the tools an agent gets.

    Raises:
        ConfigError: a name is neither a family nor a tool.
    """
    extra = tuple(extra)
    known = all_tools(extra)
    extra_families: dict[str, list[Tool]] = {}
    for tool in extra:
        if tool.family:
            extra_families.setdefault(tool.family, []).append(tool)
    chosen: dict[str, Tool] = {}
    for name in names:
        if name in FAMILIES:
            chosen.update({t.name: t for t in FAMILIES[name]})
        elif name in extra_families:
            chosen.update({t.name: t for t in extra_families[name]})
        elif name in known:
            chosen[name] = known[name]
        else:
            families = ", ".join(sorted({*FAMILIES, *extra_families}))
            tools = ", ".join(sorted(known))
            raise ConfigError(
                f"Unknown tool `{name}`; families: {families}; tools: {tools}. Choose with --tools or `tools` in kasloop.toml."
            )
    return chosen
