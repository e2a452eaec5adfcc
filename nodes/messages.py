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

__all__ = ["UNTRUSTED_MARK", "failed_call_message", "tool_error", "tool_ok", "untrusted_sources"]


UNTRUSTED_MARK = "kasloop_untrusted"


def tool_ok(call_id: str, tool: str, result: str, *, untrusted: bool = False) -> ToolMessage:
    """A successful result. Outside content says so in the envelope (``"untrusted": true``: data, not
    instructions) and is marked for gating (``response_metadata``, which is never sent to the model)."""
    if not untrusted:
        content = json.dumps({"tool": tool, "ok": True, "result": result}, ensure_ascii=False)
        return ToolMessage(content=content, tool_call_id=call_id, name=tool)
    content = json.dumps({"tool": tool, "ok": True, "untrusted": True, "result": result}, ensure_ascii=False)
    return ToolMessage(content=content, tool_call_id=call_id, name=tool, response_metadata={UNTRUSTED_MARK: True})


def untrusted_sources(messages: list[Any]) -> list[str]:
    """Tools whose outside content is in ``messages`` (working memory), oldest first, once each."""
    found = [m.name or "a tool" for m in messages if isinstance(m, ToolMessage) and m.response_metadata.get(UNTRUSTED_MARK)]
    return list(dict.fromkeys(found))


def tool_error(call_id: str, tool: str, kind: str, message: str) -> ToolMessage:
    content = json.dumps({"tool": tool, "ok": False, "error": kind, "message": message}, ensure_ascii=False)
    return ToolMessage(content=content, tool_call_id=call_id, name=tool, status="error")


def failed_call_message(call: dict[str, Any], *, kind: str, message: str, note: str = "") -> ToolMessage:
    """The error result of a call act could not complete, as recorded on the call (with fallbacks)."""
    error = call.get("error", {})
    text = error.get("output", message)
    return tool_error(call["id"], call["tool"], error.get("kind", kind), f"{text}\n{note}" if note else text)
