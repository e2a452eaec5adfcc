"""A model server on 127.0.0.1 speaking Anthropic's Messages API wire format, for tests of what kasloop sends and does.

The Anthropic counterpart of wire_model.py: ``ChatAnthropic(model=...,
base_url=wire.url, api_key="test-key", max_retries=0)`` talks to it over real
HTTP, through the real ``anthropic`` client, with no internet. Decisions (a
request that carries ``tools``) come from a queue of canned replies, each
``{"text": "..."}`` or ``{"tool_use": [{"name": "files_write", "input": {...}}, ...]}``
(optionally with ``"text"`` too), plus an optional ``"usage"``
(``{"input_tokens": N, "output_tokens": M}``; by default estimated from the
sizes of the request and the reply, never 0). A tool call gets the id
``toolu_<n>``, unique for the server's life, unless it names its own
``"id"`` (any id, duplicates included, as wire_model.py allows); a reply's
``"stop_reason"`` overrides ``end_turn`` / ``tool_use`` (``"max_tokens"``: the
reply was cut off at the token limit). kasloop's side calls (the
working-memory summary and the self-diagnosis, sent without tools) are
answered by echoing the text of the last user message, so whatever outside
text reaches them comes back in their answer. Every request body and its
headers are recorded, so a test sees exactly what kasloop sent: which text was
in ``system`` and which in the messages.

Like the real API, a request is refused with the real error shape
(``{"type": "error", "error": {"type": ..., "message": ...}}``): 401 without
an API key (``x-api-key``, or ``Authorization: Bearer``, which is how the
anthropic 2.x client sends ``api_key=``); 400 without ``anthropic-version``,
``model``, an integer ``max_tokens`` or a ``messages`` list, or when an
assistant's ``tool_use`` blocks are not answered exactly by ``tool_result``
blocks in the next user message. A decision asked for after the canned
replies ran out gets a 500 ``api_error``, so a test notices. ``"stream": true``
is answered with Server-Sent Events in Anthropic's streaming format.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from conftest import send_json, served

__all__ = ["AnthropicWire", "anthropic_wire"]

_REPLY_KEYS = {"text", "tool_use", "usage", "stop_reason"}
_TOOL_USE_KEYS = {"name", "input", "id"}


def _error(kind: str, message: str) -> dict[str, Any]:
    """The real API's error body."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def _check_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """A canned reply, checked when queued so a mistake in a test fails there and not in the server thread."""
    if not isinstance(reply, dict) or not (set(reply) <= _REPLY_KEYS) or not ({"text", "tool_use"} & set(reply)):
        raise ValueError(f"a canned reply is {{'text': str}} and/or {{'tool_use': [{{'name': str, 'input': dict}}, ...]}}, got {reply!r}")
    if "text" in reply and not isinstance(reply["text"], str):
        raise ValueError(f"'text' must be a string, got {reply['text']!r}")
    calls = reply.get("tool_use", [])
    if "tool_use" in reply and (not isinstance(calls, list) or not calls):
        raise ValueError(f"'tool_use' must be a non-empty list of calls, got {calls!r}")
    for call in calls:
        if not isinstance(call, dict) or not (set(call) <= _TOOL_USE_KEYS) or not isinstance(call.get("name"), str) or not isinstance(call.get("input", {}), dict):
            raise ValueError(f"a tool call is {{'name': str, 'input': dict}} (optionally 'id': str), got {call!r}")
    usage = reply.get("usage")
    if usage is not None and not (isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in ("input_tokens", "output_tokens"))):
        raise ValueError(f"'usage' must be {{'input_tokens': int, 'output_tokens': int}}, got {usage!r}")
    return reply


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _body_problem(body: Any) -> str | None:
    """What the real API would refuse in the request's shape (before looking at tool ids)."""
    if not isinstance(body, dict):
        return "body: Input should be a valid dictionary"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool) or body["max_tokens"] < 1:
        return "max_tokens: Input should be a valid integer greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages: Field required" if messages is None else "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if not isinstance(content, (str, list)):
            return f"messages.{i}.content: Input should be a valid string or list of content blocks"
        if isinstance(content, list) and not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in content):
            return f"messages.{i}.content: every content block needs a `type`"
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or not all(isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in system):
            return "system: Input should be a valid string or a list of text blocks"
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            custom = isinstance(tool, dict) and tool.get("type") in (None, "custom")
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or (custom and not isinstance(tool.get("input_schema"), dict)):
                return f"tools.{i}: a custom tool needs `name` and `input_schema`"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    return None


def _tool_problem(messages: list[dict[str, Any]]) -> str | None:
    """What Anthropic would refuse: a ``tool_use`` not answered in the next message, or a ``tool_result`` answering none."""
    seen: set[str] = set()
    open_ids: list[str] = []  # the previous assistant message's tool_use ids
    open_at = 0
    for i, message in enumerate(messages):
        blocks = _blocks(message)
        if open_ids and message["role"] != "user":
            return _unanswered(open_at, open_ids)
        if message["role"] == "assistant":
            open_ids, open_at = [], i
            for j, block in enumerate(blocks):
                if block["type"] == "tool_result":
                    return f"messages.{i}.content.{j}: `tool_result` blocks are only allowed in user messages"
                if block["type"] == "tool_use":
                    if block.get("id") in seen:
                        return f"messages.{i}.content.{j}: `tool_use` ids must be unique"
                    seen.add(block.get("id"))
                    open_ids.append(block.get("id"))
        else:
            answered: set[str] = set()
            for j, block in enumerate(blocks):
                if block["type"] == "tool_use":
                    return f"messages.{i}.content.{j}: `tool_use` blocks are only allowed in assistant messages"
                if block["type"] == "tool_result":
                    tool_use_id = block.get("tool_use_id")
                    if tool_use_id not in open_ids or tool_use_id in answered:
                        return (
                            f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. "
                            "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        )
                    answered.add(tool_use_id)
            missing = [t for t in open_ids if t not in answered]
            if missing:
                return _unanswered(open_at, missing)
            open_ids = []
    if open_ids:
        return _unanswered(open_at, open_ids)
    return None


def _unanswered(index: int, ids: list[str]) -> str:
    return (
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(map(str, ids))}. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
    )


def _text_of(message: dict[str, Any]) -> str:
    """A user message's text: its text blocks and the text its tool results carry."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in _blocks(message):
        if block["type"] == "text":
            parts.append(str(block.get("text", "")))
        elif block["type"] == "tool_result":
            inner = block.get("content")
            parts.append(inner if isinstance(inner, str) else " ".join(str(b.get("text", "")) for b in inner or [] if isinstance(b, dict)))
    return " ".join(parts)


def _credential(headers: dict[str, str]) -> str | None:
    """The API key: ``x-api-key``, or ``Authorization: Bearer`` (how anthropic 2.x sends ``api_key=``)."""
    bearer = headers.get("authorization", "")
    return headers.get("x-api-key") or (bearer[len("Bearer ") :].strip() if bearer.lower().startswith("bearer ") else None) or None


def _tokens(data: Any) -> int:
    return max(1, len(json.dumps(data)) // 4)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _events(message: dict[str, Any]) -> list[bytes]:
    """``message`` as Anthropic streams it: start, ping, each block in deltas, the stop reason and usage, stop."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}
    events = [_sse("message_start", {"type": "message_start", "message": start}), _sse("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"], 8)]
        else:
            opened = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": piece} for piece in _pieces(json.dumps(block["input"]), 12)]
        events.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened}))
        events += [_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas]
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(_sse("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]},
    }))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


class AnthropicWire:
    """The server; see the module docstring. ``url`` is ChatAnthropic's ``base_url``."""

    def __init__(self, *replies: dict[str, Any]) -> None:
        self.replies: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._messages = 0
        self._tool_uses = 0
        self._lock = threading.Lock()
        self.add(*replies)
        wire = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.partition("?")[0].rstrip("/") != "/v1/messages":
                    self._send(404, _error("not_found_error", f"Not found: {self.path}"))
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, _error("invalid_request_error", "The request body is not valid JSON."))
                    return
                status, payload = wire.answer(body, {k.lower(): v for k, v in self.headers.items()})
                if isinstance(payload, list):
                    self._send_events(payload)
                else:
                    self._send(status, payload)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                send_json(self, status, payload)

            def _send_events(self, events: list[bytes]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Content-Length", str(sum(len(e) for e in events)))
                self.end_headers()
                for event in events:  # one write per event, as a real stream arrives
                    self.wfile.write(event)
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, *replies: dict[str, Any]) -> None:
        """Queue more canned decisions (same form as ``anthropic_wire``'s arguments)."""
        checked = [_check_reply(r) for r in replies]
        with self._lock:
            self.replies.extend(checked)

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """The decide requests (with tools), in order."""
        return [r for r in self.requests if r.get("tools")]

    def answer(self, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any] | list[bytes]]:
        """Status and JSON body, or the SSE events of a streamed reply."""
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if not _credential(headers):
                return 401, _error("authentication_error", "x-api-key header is required")
            if not headers.get("anthropic-version"):
                return 400, _error("invalid_request_error", "anthropic-version: header is required")
            problem = _body_problem(body) or _tool_problem(body["messages"])
            if problem is not None:
                return 400, _error("invalid_request_error", problem)
            if body.get("tools"):
                if not self.replies:
                    decided = len(self.decisions)
                    return 500, _error("api_error", f"anthropic_wire: no canned reply left for decision request {decided} (queue more replies)")
                reply = self.replies.pop(0)
            else:  # a side call: echo what it was given (outside text included), as a careless model would
                last_user = next((m for m in reversed(body["messages"]) if m["role"] == "user"), {})
                reply = {"text": ("Echo: " + _text_of(last_user))[-1500:]}
            content: list[dict[str, Any]] = []
            if "text" in reply and (reply["text"] or "tool_use" not in reply):
                content.append({"type": "text", "text": reply["text"]})
            for call in reply.get("tool_use", []):
                self._tool_uses += 1
                content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{self._tool_uses}", "name": call["name"], "input": call.get("input", {})})
            usage = reply.get("usage") or {
                "input_tokens": _tokens([body.get("system"), body["messages"], body.get("tools")]),
                "output_tokens": _tokens(content),
            }
            self._messages += 1
            message = {
                "id": f"msg_{self._messages}", "type": "message", "role": "assistant", "model": body["model"], "content": content,
                "stop_reason": reply.get("stop_reason") or ("tool_use" if reply.get("tool_use") else "end_turn"), "stop_sequence": None,
                "usage": {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]},
            }
            return (200, _events(message)) if body.get("stream") else (200, message)


@contextmanager
def anthropic_wire(*replies: dict[str, Any]) -> Iterator[AnthropicWire]:
    """Serve ``replies`` as the decisions, in order, while the block runs."""
    wire = AnthropicWire(*replies)
    with served(wire.server):
        yield wire
