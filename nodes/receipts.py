"""A tool result copied into a new call: caught before any human (or any tool) sees the call.

Small models, after a successful write, often propose the same write again with the
tool's own receipt as the new content: ``files_write notes.md "Wrote 39 bytes to
notes.md."``. Approved by a busy human, that replaces the file with the receipt.
So decide answers such a call itself, at every level, the way the model layer
already answers a receipt given back as a text reply (:func:`kasloop.models.chat.echoed_result`).

A *receipt* is the result of a call with a side effect (any risk but ``read``):
what kasloop says it did, never data the task could want to carry on; so is an
error or refusal message (kasloop's text, not outside content). Results of
``read`` tools (a file's content, a page) are data: copying them into a write is
how a copy goal works, and it stays allowed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage

from kasloop.tools.base import Tool

__all__ = ["COPIED_RESULT", "RECEIPT_SHAPES", "copied_receipt", "last_result", "receipts"]

RECEIPT_SHAPES = re.compile(r"^(Wrote|Appended) \d+ bytes to .+\.$|^started p-[0-9a-f]{6} \(pid \d+\)", re.MULTILINE)
"""kasloop's receipts that no one writes as content, recognised by shape too (from an evicted turn or
another thread); other receipts ("Moved a to b.") are caught only as results still in working memory."""

COPIED_RESULT = (
    "Refused: `{arg}` repeats what an earlier call returned (\"{receipt}\"), which is kasloop's report of that call, "
    "not content the task asks for. Nothing ran. If the task is done, answer in plain text; otherwise write the content the task asks for."
)
MIN_RECEIPT_CHARS = 8


def _envelopes(messages: Iterable[BaseMessage]) -> Iterator[tuple[ToolMessage, dict[str, Any]]]:
    """Each tool message with its JSON envelope (``{"tool", "ok", "result" | "error", "message", ...}``)."""
    for message in messages:
        if not isinstance(message, ToolMessage):
            continue
        try:
            envelope = json.loads(str(message.content))
        except ValueError:
            continue
        if isinstance(envelope, dict):
            yield message, envelope


def receipts(messages: Iterable[BaseMessage], tools: Mapping[str, Tool]) -> list[str]:
    """kasloop's reports in working memory (newest last): the results of successful side-effect calls, and
    the error and refusal messages of every call whose result is not outside content.

    Measured on the embedded model once receipts were refused: it wrote the refusal itself ("Refused:
    `content` repeats what an earlier call returned...") as the file's content. An error message is
    kasloop's text (or a local tool's), never content a task asks for.
    """
    found: list[str] = []
    for message, envelope in _envelopes(messages):
        if envelope.get("untrusted"):
            continue
        tool = tools.get(message.name or "")
        if envelope.get("ok"):
            text = envelope.get("result") if tool is not None and tool.risk != "read" else None
        else:
            text = envelope.get("message") if tool is None or not tool.returns_untrusted else None
        if isinstance(text, str) and len(text.strip()) >= MIN_RECEIPT_CHARS:
            found.append(text.strip())
    return found


def last_result(messages: Iterable[BaseMessage], tools: Mapping[str, Tool]) -> str | None:
    """The newest successful side-effect call's result ("Wrote 39 bytes to notes.md."), or None."""
    found = None
    for message, envelope in _envelopes(messages):
        tool = tools.get(message.name or "")
        if envelope.get("ok") and not envelope.get("untrusted") and tool is not None and tool.risk != "read":
            result = envelope.get("result")
            if isinstance(result, str) and result.strip():
                found = result.strip() if len(result.strip()) <= 200 else result.strip()[:199] + "…"
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def copied_receipt(args: Mapping[str, Any], known: Iterable[str]) -> tuple[str, str] | None:
    """``(argument, receipt)`` when an argument is, or holds, a receipt; else None."""
    known = [k for k in known if k]
    for name, value in args.items():
        for text in _strings(value):
            stripped = text.strip()
            if not stripped:
                continue
            for receipt in known:
                if stripped == receipt or receipt in stripped and len(receipt) * 2 >= len(stripped):
                    return name, receipt
            shaped = RECEIPT_SHAPES.search(stripped)
            if shaped is not None and len(shaped.group(0)) * 2 >= len(stripped):
                return name, shaped.group(0)
    return None
