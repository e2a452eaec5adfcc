"""The tool contract in one import: every name a tool, a node or a test needs, from the modules that hold it.

A tool is a pydantic args model (its JSON schema is what the model sees), a
name, a description, a risk, an idempotent flag, a timeout and an output
limit. ``run_tool`` validates, runs with a timeout, classifies every failure
and truncates output head + tail, so no tool raises into the graph.

The pieces live in one module per job, and this module re-exports them so that
``from kasloop.tools.base import Tool, run_tool`` keeps working everywhere:

* :mod:`kasloop.tools.contract`: what a tool is: :class:`Tool`, :class:`ToolContext`,
  :class:`ToolResult`, :class:`ToolFailure`, the argument declarations (:func:`arg_meta`,
  :func:`arg_specs`: which arguments are paths, URLs or hosts) and :func:`openai_schema`;
* :mod:`kasloop.tools.run`: running one call: :func:`run_tool`, the protected-path check,
  :func:`truncate`, :func:`text_safe` and the texts the model reads when a call is refused;
* :mod:`kasloop.tools.settings`: how a family is configured: :class:`ToolSettings`,
  :class:`SettingsFailure`;
* :mod:`kasloop.tools.resources`: what an agent's tools share across calls: :class:`ToolResources`.
"""

from __future__ import annotations

from kasloop.state import ToolErrorKind
from kasloop.tools.contract import (
    ARG_KIND_KEY,
    DEFAULT_OUTPUT_LIMIT,
    UNTRUSTED_FAMILIES,
    ArgKind,
    ArgSpec,
    ReconcileFunc,
    Tool,
    ToolContext,
    ToolFailure,
    ToolFunc,
    ToolResult,
    arg_meta,
    arg_specs,
    openai_schema,
)
from kasloop.tools.resources import ToolResources
from kasloop.tools.run import (
    BAD_ARGS_TEMPLATE,
    DEFAULT_HEAD,
    DEFAULT_TAIL,
    DENIED_TEMPLATE,
    PROTECTED_TEMPLATE,
    UNKNOWN_TOOL_TEMPLATE,
    check_protected,
    protected_refusal,
    run_tool,
    text_safe,
    truncate,
)
from kasloop.tools.settings import SettingsFailure, ToolSettings, settings_failure

__all__ = [
    "ARG_KIND_KEY",
    "ArgKind",
    "ArgSpec",
    "BAD_ARGS_TEMPLATE",
    "PROTECTED_TEMPLATE",
    "ReconcileFunc",
    "SettingsFailure",
    "UNKNOWN_TOOL_TEMPLATE",
    "Tool",
    "ToolContext",
    "ToolErrorKind",
    "ToolFailure",
    "ToolResources",
    "ToolResult",
    "ToolSettings",
    "UNTRUSTED_FAMILIES",
    "arg_meta",
    "arg_specs",
    "check_protected",
    "openai_schema",
    "protected_refusal",
    "run_tool",
    "settings_failure",
    "text_safe",
    "truncate",
    # Importable from here as before the split, though never listed: kept for the modules that use them.
    "DEFAULT_HEAD",
    "DEFAULT_OUTPUT_LIMIT",
    "DEFAULT_TAIL",
    "DENIED_TEMPLATE",
    "ToolFunc",
]
