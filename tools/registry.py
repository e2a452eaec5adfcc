"""The tool registry: every tool kasloop ships, the selection an agent gets, and its settings check.

An agent's config names families (``files``) or single tools (``files_read``);
it gets exactly those and nothing else. ``tool_settings`` in the config holds
one table per family; :func:`check_tool_settings` validates them when the
config is loaded, so a typo fails at once with one line instead of at the
first tool call hours into a run. ``tool_traits`` lays the config's gating
traits over your own tools (:func:`with_traits`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kasloop.config.connections import ToolTraitSettings
from kasloop.errors import ConfigError
from kasloop.guardrails.policy import use_builtin_tools
from kasloop.tools.base import SettingsFailure, Tool, ToolContext, ToolFailure
from kasloop.tools.browser import BROWSER_TOOLS
from kasloop.tools.browser_settings import BrowserSettings
from kasloop.tools.email import EMAIL_TOOLS, EmailSettings
from kasloop.tools.files import FILES_TOOLS, FilesSettings
from kasloop.tools.http import HTTP_TOOLS, HttpPolicy
from kasloop.tools.memory import MEMORY_TOOLS, MemorySettings
from kasloop.tools.process import PROCESS_TOOLS, ProcessSettings
from kasloop.tools.shell import SHELL_TOOLS
from kasloop.tools.shell_policy import ShellPolicy
from kasloop.tools.telegram import TELEGRAM_TOOLS
from kasloop.tools.telegram_api import TelegramSettings
from kasloop.tools.webhook import WEBHOOK_TOOLS, WebhookSettings

__all__ = ["FAMILIES", "SETTINGS", "all_tools", "check_tool_settings", "select_tools", "with_traits"]

FAMILIES: dict[str, tuple[Tool, ...]] = {
    "files": FILES_TOOLS,
    "shell": SHELL_TOOLS,
    "http": HTTP_TOOLS,
    "process": PROCESS_TOOLS,
    "email": EMAIL_TOOLS,
    "telegram": TELEGRAM_TOOLS,
    "webhook": WEBHOOK_TOOLS,
    "browser": BROWSER_TOOLS,
    "memory": MEMORY_TOOLS,
}


def _policy_check(family: str, policy: type[HttpPolicy] | type[ShellPolicy]) -> Callable[[dict[str, Any], Path], None]:
    def check(raw: dict[str, Any], workspace: Path) -> None:
        policy.from_context(ToolContext(workspace=workspace, extra={family: raw}))

    return check


def _model_check(model: type[BaseModel]) -> Callable[[dict[str, Any], Path], None]:
    def check(raw: dict[str, Any], workspace: Path) -> None:
        model.model_validate(raw)

    return check


SETTINGS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "files": _model_check(FilesSettings),
    "shell": _policy_check("shell", ShellPolicy),
    "http": _policy_check("http", HttpPolicy),  # HttpSettings, then the gate built from it
    "process": _model_check(ProcessSettings),
    "email": _model_check(EmailSettings),
    "telegram": _model_check(TelegramSettings),
    "webhook": _model_check(WebhookSettings),
    "browser": _model_check(BrowserSettings),
    "memory": _model_check(MemorySettings),
}
"""Family → check of its ``tool_settings`` table (raises on a bad key or value)."""


def check_tool_settings(settings: dict[str, Any], workspace: Path) -> None:
    """Validate every ``tool_settings`` table against its family.

    Raises:
        ConfigError: one line naming the family, the key and what is wrong.
    """
    for family, raw in settings.items():
        check = SETTINGS.get(family)
        if check is None:
            raise ConfigError(
                f"tool_settings has an unknown family `{family}`; families: {', '.join(SETTINGS)}. Fix kasloop.toml."
            )
        if not isinstance(raw, dict):
            raise ConfigError(f"tool_settings.{family} must be a table of settings, got `{raw!r}`. Fix kasloop.toml.")
        try:
            check(raw, workspace)
        except SettingsFailure as exc:
            where = f"tool_settings.{family}.{exc.key}" if exc.key else f"tool_settings.{family}"
            raise ConfigError(f"{where}: {exc.problem}. Fix kasloop.toml.") from None
        except ToolFailure as exc:
            raise ConfigError(f"tool_settings.{family}: {exc.message}. Fix kasloop.toml.") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"tool_settings.{family}.{where}: {err['msg']}. Fix kasloop.toml.") from None


def all_tools(extra: Iterable[Tool] = ()) -> dict[str, Tool]:
    """Every registered tool by name, plus ``extra`` (user-defined) tools."""
    tools = {tool.name: tool for family in FAMILIES.values() for tool in family}
    for tool in extra:
        if tool.name in tools:
            raise ConfigError(f"Tool name `{tool.name}` is already taken; give your tool another name.")
        tools[tool.name] = tool
    return tools


use_builtin_tools(all_tools)  # rules given a tool's name (not the Tool) judge it by its declared arguments


def select_tools(names: Iterable[str], extra: Iterable[Tool] = (), traits: Mapping[str, ToolTraitSettings] | None = None) -> dict[str, Tool]:
    """Resolve family and tool names to the tools an agent gets; ``traits`` (the config's ``tool_traits``) are laid
    over the ``extra`` tools first, so a family they name selects too.

    Raises:
        ConfigError: a name is neither a family nor a tool, or a trait names a built-in tool.
    """
    extra = with_traits(extra, traits or {})
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


def with_traits(tools: Iterable[Tool], traits: Mapping[str, ToolTraitSettings]) -> tuple[Tool, ...]:
    """Your own ``tools`` with the config's ``[tool_traits.NAME]`` laid over what each declared (only the values
    set there). Used wherever a config meets the tools given to an agent, so a thread's stored policy decides.

    Raises:
        ConfigError: a trait names a built-in tool (built-ins keep their own traits: ``risk_overrides`` changes a risk).
    """
    builtin = sorted(set(traits) & {t.name for family in FAMILIES.values() for t in family})
    if builtin:
        raise ConfigError(
            f"tool_traits.{builtin[0]}: a built-in tool keeps its own traits; change its risk with risk_overrides instead."
        )
    changed: list[Tool] = []
    for item in tools:
        settings = traits.get(item.name)
        update = settings.model_dump(exclude_none=True) if settings is not None else {}
        changed.append(dataclasses.replace(item, **update) if update else item)
    return tuple(changed)
