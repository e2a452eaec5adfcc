"""Running one tool call: :func:`run_tool` validates, refuses protected paths, runs with a timeout,
classifies every failure and truncates output head + tail, so no tool raises into the graph.

This is the one path every call takes (act, the channels, the benchmarks), apart from what a tool is
(:mod:`kasloop.tools.contract`): the texts the model reads when a call is refused, the protected-path check,
truncation and making output storable as UTF-8 all live here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langgraph.errors import GraphBubbleUp
from pydantic import ValidationError

from kasloop.tools.contract import DEFAULT_OUTPUT_LIMIT, Tool, ToolContext, ToolFailure, ToolResult

__all__ = [
    "BAD_ARGS_TEMPLATE",
    "DEFAULT_HEAD",
    "DEFAULT_TAIL",
    "DENIED_TEMPLATE",
    "PROTECTED_TEMPLATE",
    "UNKNOWN_TOOL_TEMPLATE",
    "check_protected",
    "protected_refusal",
    "run_tool",
    "text_safe",
    "truncate",
]

# Text the model reads (kept apart from the messages people read in kasloop.errors).
UNKNOWN_TOOL_TEMPLATE = "Error: `{name}` is not one of your tools. Valid tools: {valid}. Call one of those instead."
BAD_ARGS_TEMPLATE = "Error: invalid arguments for `{name}`: {details}. Please fix your call."
DENIED_TEMPLATE = "Refused by policy: `{name}` may not be called with these arguments ({reason}). Choose another way."
PROTECTED_TEMPLATE = (
    "Refused: `{value}` ({arg}) is kasloop's own state (its home, database, config or a secret file): "
    "no tool may read, write, list, move or delete it. Choose another path."
)

DEFAULT_HEAD = 2000
DEFAULT_TAIL = 1000


def truncate(text: str, limit: int = DEFAULT_OUTPUT_LIMIT) -> str:
    """Keep the head and the tail of long output, with a marker saying how much was cut.

    The split keeps the default 2:1 head-to-tail ratio (2,000 + 1,000 of a
    4,000 limit), leaving room for the marker.
    """
    if len(text) <= limit:
        return text
    head = limit * DEFAULT_HEAD // DEFAULT_OUTPUT_LIMIT
    tail = limit * DEFAULT_TAIL // DEFAULT_OUTPUT_LIMIT
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[-tail:]}"


def _validation_details(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def text_safe(text: str) -> str:
    """``text`` with every lone surrogate written out, so it can be stored as UTF-8 (JSON, checkpoints).

    A file name that is not valid UTF-8 reaches Python as surrogate escapes (``os.fsdecode``); its bytes are
    shown as ``\\xNN``, any other lone surrogate as ``\\uNNNN``.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out: list[str] = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _safe_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` as it is when it is storable as UTF-8 JSON, else with every string made :func:`text_safe`."""
    try:
        json.dumps(metadata, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return _safe_value(metadata)  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        pass  # not JSON at all: the ledger's own serialisation decides
    return metadata


def _safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return text_safe(value)
    if isinstance(value, dict):
        return {_safe_value(k): _safe_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe_value(v) for v in value]
    return value


def _path_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _shown(value: str) -> str:
    shown = text_safe(value)
    return shown if len(shown) <= 200 else shown[:199] + "…"


def check_protected(tool: Tool, args: Mapping[str, Any], ctx: ToolContext) -> ToolResult | None:
    """The refusal of a call that names one of kasloop's protected paths, or None.

    Every path argument of ``tool`` (:attr:`Tool.path_args`) is resolved as the tool would resolve it:
    against ``ctx.workspace`` (absolute paths as they are), ``..`` and symlinks followed; the lexical and
    the resolved spelling are both checked, case-insensitively, and an existing file by inode (a hard link).
    A path argument with ``tree`` (moving or deleting a folder) is also refused when it *holds* a protected
    path. This runs for every tool, whether or not its paths are jailed to the workspace.
    """
    protected = ctx.resources.protected
    if not protected:
        return None
    tree = set(tool.tree_args)
    for name in tool.path_args:
        for value in _path_values(args.get(name)):
            if "\x00" in value:
                continue  # the tool refuses it as bad arguments
            try:
                candidate = Path(value)
                target = candidate if candidate.is_absolute() else Path(ctx.workspace) / candidate
                hit = protected.violation(target, containing=name in tree)
            except (OSError, ValueError):
                continue
            if hit is not None:
                return protected_refusal(value, f"argument `{name}`")
    return None


def protected_refusal(value: str, where: str) -> ToolResult:
    """The ``denied`` result for a call that would touch kasloop's own state at ``value`` (``where``: which argument)."""
    message = PROTECTED_TEMPLATE.format(value=_shown(value), arg=where)
    return ToolResult(ok=False, output=message, error_kind="denied", metadata={"protected": True})


def _finish(result: ToolResult, limit: int) -> ToolResult:
    return ToolResult(
        ok=result.ok, output=truncate(text_safe(result.output), limit), error_kind=result.error_kind, metadata=_safe_metadata(result.metadata)
    )


async def run_tool(tool: Tool, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Validate, refuse protected paths, run with a timeout, classify failures, truncate output.

    Never raises a tool's error; the output is always storable as UTF-8 (see :func:`text_safe`).
    """
    try:
        parsed = tool.args_model.model_validate(args)
    except ValidationError as exc:
        details = text_safe(_validation_details(exc))
        return ToolResult(ok=False, output=BAD_ARGS_TEMPLATE.format(name=tool.name, details=details), error_kind="bad_args")
    try:
        values = parsed.model_dump(by_alias=True)
    except Exception:  # noqa: BLE001 - an exotic args model: check what the model sent
        values = dict(args)
    refused = check_protected(tool, values, ctx)
    if refused is not None:
        return refused
    limit = tool.output_limit
    try:
        outcome = await asyncio.wait_for(tool.func(parsed, ctx), timeout=tool.timeout)
    except GraphBubbleUp:
        raise
    except ToolFailure as exc:
        return _finish(ToolResult(ok=False, output=f"Error: {exc.message}", error_kind=exc.kind), limit)
    except TimeoutError:
        return ToolResult(ok=False, output=f"Error: `{tool.name}` timed out after {tool.timeout:g} s.", error_kind="timeout")
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        return _finish(ToolResult(ok=False, output=f"Error: {type(exc).__name__}: {exc}", error_kind="transient"), limit)
    except Exception as exc:  # noqa: BLE001 - a tool's bug must not crash the loop
        return _finish(ToolResult(ok=False, output=f"Error: {type(exc).__name__}: {exc}", error_kind="permanent"), limit)
    if isinstance(outcome, ToolResult):
        return _finish(outcome, limit)
    text = outcome if isinstance(outcome, str) else json.dumps(outcome, default=str)
    return _finish(ToolResult(ok=True, output=text, metadata={"chars": len(text)}), limit)
