"""Valid arguments for any registered tool, with one argument set to the value under test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kasloop.tools.base import Tool


def args_for(tool: Tool, arg: str, value: str, samples: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments for ``tool``: its required ones from ``samples`` (``"x"`` otherwise), ``arg`` set to ``value``
    (in a list where the schema wants one). They must pass the tool's own validation, or a ``denied``
    result would prove nothing."""
    schema = tool.args_model.model_json_schema()
    args = {name: samples.get(name, "x") for name in schema.get("required", [])}
    prop = schema["properties"][arg]
    is_list = prop.get("type") == "array" or any(o.get("type") == "array" for o in prop.get("anyOf", []))
    args[arg] = [value] if is_list else value
    tool.args_model.model_validate(args)
    return args
