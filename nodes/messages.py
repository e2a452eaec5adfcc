"""Tool results as the model sees them: a small JSON envelope, never bare text.

``{"tool": "files_write", "ok": true, "result": "..."}`` or
``{"tool": ..., "ok": false, "error": "denied", "message": "..."}``. The
envelope keeps data apart from instructions (a page that says "ignore your
instructions" arrives as a JSON string value, not as prose), and measured on
the embedded 0.5B model it is what makes it stop after a successful call
instead of repeating it (with plain-text results it repeated the call in most
trials).
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import ToolMessage

__all__ = ["failed_call_message", "tool_error", "tool_ok"]


def tool_ok(call_id: str, tool: str, result: str) -> ToolMessage:
    content = json.dumps({"tool": tool, "ok": True, "result": result}, ensure_ascii=False)
    return ToolMessage(content=content, tool_call_id=call_id, name=tool)


def tool_error(call_id: str, tool: str, kind: str, message: str) -> ToolMessage:
    content = json.dumps({"tool": tool, "ok": False, "error": kind, "message": message}, ensure_ascii=False)
    return ToolMessage(content=content, tool_call_id=call_id, name=tool, status="error")


def failed_call_message(call: dict[str, Any], *, kind: str, message: str, note: str = "") -> ToolMessage:
    """The error result of a call act could not complete, as recorded on the call (with fallbacks)."""
    error = call.get("error", {})
    text = error.get("output", message)
    return tool_error(call["id"], call["tool"], error.get("kind", kind), f"{text}\n{note}" if note else text)
