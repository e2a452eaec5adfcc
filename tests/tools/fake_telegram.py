"""A local Telegram Bot API server for tests: the real wire format on 127.0.0.1.

Requests go to ``/bot<token>/<method>`` with JSON, form or query parameters;
answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
"description": "..."}`` as the real API sends them. Implemented:
``getMe``, ``sendMessage`` (with ``reply_markup.inline_keyboard``),
``getUpdates`` (``offset`` confirms earlier updates, ``limit``, ``timeout`` long
poll that returns as soon as an update is queued: a ``threading.Condition``)
and ``answerCallbackQuery`` (each query may be answered once).

Every request is recorded (:class:`Call`: method, token, parameters, raw body),
including refused ones. Tests queue incoming traffic with
:meth:`FakeTelegram.queue_message` and :meth:`FakeTelegram.queue_callback`, and
make the next calls fail with :meth:`FakeTelegram.fail_next`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from conftest import send_json

TOKEN = "123456789:AAHfakeTokenForKasloopTests_0123456789"
BOT_ID = 123456789


@dataclass
class Call:
    """One request as it arrived."""

    method: str
    token: str
    params: dict[str, Any]
    body: bytes
    content_type: str


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None = None


@dataclass
class FakeTelegram:
    """State of the fake Bot API; start it with :func:`running_fake_telegram`."""

    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    updates: list[dict[str, Any]] = field(default_factory=list)
    open_queries: set[str] = field(default_factory=set)
    failures: list[_Failure] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closing: bool = False
    httpd: ThreadingHTTPServer | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _update_ids: Iterator[int] = field(default_factory=lambda: itertools.count(500))

    # ---------------------------------------------------------------- for tests

    @property
    def base_url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add_chat(self, chat_id: int, username: str = "alice") -> dict[str, Any]:
        with self.cond:
            chat = {"id": chat_id, "type": "private", "first_name": username.title(), "username": username}
            self.chats[chat_id] = chat
            return chat

    def queue_message(self, chat_id: int, text: str, username: str = "alice") -> int:
        """A user writes ``text`` to the bot; returns the update id."""
        chat = self.chats.get(chat_id) or self.add_chat(chat_id, username)
        user = {"id": chat_id, "is_bot": False, "first_name": chat["first_name"], "username": chat["username"]}
        message = {"message_id": next(self._ids), "from": user, "chat": chat, "date": int(time.time()), "text": text}
        return self._queue({"message": message})

    def queue_callback(self, chat_id: int, message_id: int, data: str) -> tuple[int, str]:
        """A user presses the button with ``data`` under bot message ``message_id``; returns (update id, query id)."""
        chat = self.chats.get(chat_id) or self.add_chat(chat_id)
        user = {"id": chat_id, "is_bot": False, "first_name": chat["first_name"], "username": chat["username"]}
        original = next((m for m in self.sent if m["message_id"] == message_id), {"message_id": message_id, "chat": chat, "date": 0})
        query_id = f"{chat_id}{next(self._ids):06d}"
        with self.cond:
            self.open_queries.add(query_id)
        query = {"id": query_id, "from": user, "message": original, "chat_instance": str(chat_id), "data": data}
        return self._queue({"callback_query": query}), query_id

    def fail_next(self, method: str, status: int, description: str, *, retry_after: int | None = None) -> None:
        """The next call of ``method`` fails with this Bot API error."""
        with self.cond:
            self.failures.append(_Failure(method, status, description, retry_after))

    def calls_of(self, method: str) -> list[Call]:
        with self.cond:
            return [c for c in self.calls if c.method == method]

    def _queue(self, body: dict[str, Any]) -> int:
        with self.cond:
            update_id = next(self._update_ids)
            self.updates.append({"update_id": update_id, **body})
            self.cond.notify_all()
            return update_id

    # ---------------------------------------------------------------- the API

    def handle(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.cond:
            for failure in self.failures:
                if failure.method == method:
                    self.failures.remove(failure)
                    body: dict[str, Any] = {"ok": False, "error_code": failure.status, "description": failure.description}
                    if failure.retry_after is not None:
                        body["parameters"] = {"retry_after": failure.retry_after}
                    return failure.status, body
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        return handler(params)

    @staticmethod
    def _error(status: int, description: str) -> tuple[int, dict[str, Any]]:
        return status, {"ok": False, "error_code": status, "description": description}

    def api_getMe(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": {"id": BOT_ID, "is_bot": True, "first_name": "Kas", "username": "kas_test_bot"}}

    def api_sendMessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = params.get("chat_id")
        text = params.get("text")
        if chat_id is None or chat_id == "":
            return self._error(400, "Bad Request: chat_id is empty")
        if not isinstance(text, str) or not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        try:
            chat_key = int(chat_id)
        except (TypeError, ValueError):
            return self._error(400, "Bad Request: chat not found")
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            try:
                markup = json.loads(markup)
            except ValueError:
                return self._error(400, "Bad Request: can't parse reply keyboard markup JSON object")
        if markup is not None:
            rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                return self._error(400, "Bad Request: field \"inline_keyboard\" of the InlineKeyboardMarkup should be an Array of Arrays")
            for row in rows:
                for button in row:
                    data = button.get("callback_data") if isinstance(button, dict) else None
                    if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                        return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
        with self.cond:
            if chat_key in self.blocked:
                return self._error(403, "Forbidden: bot was blocked by the user")
            chat = self.chats.get(chat_key)
            if chat is None:
                return self._error(400, "Bad Request: chat not found")
            bot = {"id": BOT_ID, "is_bot": True, "first_name": "Kas", "username": "kas_test_bot"}
            message: dict[str, Any] = {"message_id": next(self._ids), "from": bot, "chat": chat, "date": int(time.time()), "text": text}
            if markup is not None:
                message["reply_markup"] = markup
            self.sent.append(message)
            return 200, {"ok": True, "result": message}

    def api_getUpdates(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            offset = int(params.get("offset", 0) or 0)
            limit = max(1, min(100, int(params.get("limit", 100) or 100)))
            timeout = max(0.0, float(params.get("timeout", 0) or 0))
        except (TypeError, ValueError):
            return self._error(400, "Bad Request: wrong parameter value")
        deadline = time.monotonic() + timeout
        with self.cond:
            if offset > 0:  # confirms every update before it, as the real API does
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            elif offset < 0:
                self.updates = self.updates[offset:]
            while not self.updates and not self.closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return 200, {"ok": True, "result": [dict(u) for u in self.updates[:limit]]}

    def api_answerCallbackQuery(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        query_id = str(params.get("callback_query_id") or "")
        with self.cond:
            if query_id not in self.open_queries:
                return self._error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
            self.open_queries.discard(query_id)
            self.answers.append(dict(params))
            return 200, {"ok": True, "result": True}


def _params(handler: BaseHTTPRequestHandler, body: bytes) -> dict[str, Any]:
    """Parameters from the query string, then a JSON or form body (as the real API accepts)."""
    params: dict[str, Any] = dict(parse_qsl(urlsplit(handler.path).query))
    ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if body and ctype == "application/json":
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("JSON body is not an object")
        params.update(data)
    elif body and ctype == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode()))
    return params


class _Handler(BaseHTTPRequestHandler):
    timeout = 70  # long polls last up to 50 s

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        send_json(self, status, body)

    def _handle(self) -> None:
        fake: FakeTelegram = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        token, _, method = path.removeprefix("/bot").partition("/") if path.startswith("/bot") else ("", "", "")
        try:
            params = _params(self, body)
        except ValueError:
            params = {}
        with fake.cond:
            fake.calls.append(Call(method, token, params, body, self.headers.get("Content-Type") or ""))
            fake.cond.notify_all()  # tests may wait for a request to arrive
        if not path.startswith("/bot") or not method:
            self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        elif token != fake.token:
            self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        else:
            self._reply(*fake.handle(method, params))

    do_GET = do_POST = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def start_fake_telegram(token: str = TOKEN) -> FakeTelegram:
    fake = FakeTelegram(token=token)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.fake = fake  # type: ignore[attr-defined]
    fake.httpd = httpd
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return fake


def stop_fake_telegram(fake: FakeTelegram) -> None:
    with fake.cond:
        fake.closing = True
        fake.cond.notify_all()  # wake long polls
    assert fake.httpd is not None
    fake.httpd.shutdown()
    fake.httpd.server_close()
