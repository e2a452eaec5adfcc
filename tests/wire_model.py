"""A model server on 127.0.0.1 speaking OpenAI's chat-completions wire format, for tests of what kasloop sends and does.

Decisions come from a queue of canned replies (tool calls may carry any ids,
duplicates included); kasloop's side calls (the working-memory summary and
the self-diagnosis) are answered by echoing the request, so whatever outside
text reaches them comes back in their answer. Every request body is recorded,
so a test sees exactly what kasloop sent: which text was in the system
message and which in other messages. Like the real API, a request whose
tool messages do not answer exactly the assistant's tool-call ids is refused
with HTTP 400.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from conftest import send_json, served

__all__ = ["WireModel", "wire_model"]


def _id_problem(messages: list[dict[str, Any]]) -> str | None:
    """What OpenAI would refuse: a tool call left unanswered, or a tool message answering no call."""
    open_ids: list[str] = []
    for message in messages:
        if message.get("role") == "assistant":
            if open_ids:
                return f"tool calls {open_ids} were not answered"
            open_ids = [c["id"] for c in message.get("tool_calls") or []]
            if len(set(open_ids)) != len(open_ids):
                return f"duplicate tool call ids {open_ids}"
        elif message.get("role") == "tool":
            if message.get("tool_call_id") not in open_ids:
                return f"tool message for unknown id {message.get('tool_call_id')!r}"
            open_ids.remove(message["tool_call_id"])
    return None


class WireModel:
    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = model.answer(body)
                send_json(self, status, payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reply(self, content: str | None = None, calls: list[tuple[str, dict[str, Any], str]] = (), finish: str | None = None) -> None:
        """Queue one decision: text, or tool calls given as (name, args, id); ``finish`` overrides the
        finish reason (``"length"``: the reply was cut off at the token limit)."""
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if finish is not None:
            message["_finish"] = finish
        if calls:
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}} for name, args, call_id in calls
            ]
        self.replies.append(message)

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """The decide requests (with tools), in order."""
        return [r for r in self.requests if r.get("tools")]

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(body)
        messages = body["messages"]
        problem = _id_problem(messages)
        if problem is not None:
            return 400, {"error": {"message": f"Invalid messages: {problem}", "type": "invalid_request_error"}}
        if body.get("tools"):
            message = self.replies.pop(0)
        else:  # a side call: echo what it was given (outside text included), as a careless model would
            message = {"role": "assistant", "content": "Echo: " + " ".join(str(m.get("content")) for m in messages[1:])[-1500:]}
        message = dict(message)
        finish = message.pop("_finish", None) or ("tool_calls" if message.get("tool_calls") else "stop")
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 1, "model": "test-model",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }


@contextmanager
def wire_model() -> Iterator[WireModel]:
    model = WireModel()
    with served(model.server):
        yield model
