"""The ``telegram`` family: a Telegram bot over the Bot API (httpx, JSON bodies).

Tools:

``telegram_send``    ``sendMessage`` to one chat, optionally with inline buttons
                     (``buttons``: rows of ``{text, callback_data}``, sent as
                     ``reply_markup.inline_keyboard``). Risk high, not idempotent.
``telegram_updates`` ``getUpdates`` from the stored offset: new messages and button
                     presses (callback queries), one line each. Risk read.
``telegram_answer``  ``answerCallbackQuery``: acknowledge a button press. Risk low.

Every request goes to ``{base_url}/bot{token}/{method}`` exactly as the real API
expects; answers are ``{"ok": true, "result": ...}`` or ``{"ok": false,
"error_code": N, "description": "..."}``. Errors: 429 (``parameters.retry_after``)
and 5xx → ``transient``; 400 → ``bad_args``; 403 (bot blocked, not in the chat) →
``denied``; 401 (token rejected), 404, 409 (another poller) → ``permanent``.

**The token never leaves the transport.** httpx logs every request URL at INFO
and some exceptions carry it, so the client only ever sees
``{base_url}/bot***/{method}``; a small transport (:class:`_TokenTransport`)
puts the token into a private copy of the request right before it is sent.
Every error text is additionally passed through :func:`redact`. The token is
read from the environment variable ``telegram.token_env`` at call time.

**Check before resend.** Telegram has no idempotency keys, so ``telegram_send``
records ``ctx.idempotency_key -> message_id`` after a successful send; a retry of
the same call (same key) returns the earlier message id instead of sending
again. The record, and the ``getUpdates`` offset (so an update is read once),
live in the kasloop database (table ``kasloop_telegram``, created here) when
``ctx.resources.database`` is set, else in memory shared by the agent's calls
(``ctx.resources.shared("telegram.state")``). A crash between Telegram's answer
and the record can still send twice; the act ledger reports such a call as
"outcome unknown". ``telegram_updates`` stores its output under the
idempotency key too, so a retried call returns the same updates.

**Incoming messages for the agent** are not a tool: the update pump
(``kasloop.channels.telegram_updates``) long-polls ``getUpdates`` with this
family's client and offset and hands each message / button press to the
thread mapped by ``chat_threads``. Run either the pump or the
``telegram_updates`` tool for one bot, not both: they share one offset.

Config (``ToolContext.extra["telegram"]``, all optional):

``base_url``        Bot API server (``https://api.telegram.org``); a local Bot API server works too.
``token_env``       name of the environment variable holding the bot token (``KASLOOP_TELEGRAM_TOKEN``); never a
                   ``KASLOOP_APPROVAL_*`` variable (the approvals bot is kasloop's: see ``kasloop.channels.telegram``).
``allow_chats``     list of chat ids / ``@usernames`` the bot may write to and read from;
                    unset = any chat. ``telegram_send`` to another chat → ``denied``.
``chat_threads``    table chat id → kasloop thread id, for the update pump (``kasloop.channels.telegram_updates``).
``default_thread``  thread for chats not in ``chat_threads`` (unset: such chats are dropped).
``timeout``         seconds per request (20).
``poll_timeout``    long-poll seconds of ``getUpdates`` in the update pump (25, at most 50).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kasloop.approval_secrets import refuse_approval_env, tool_secret_problem
from kasloop.tools.base import Tool, ToolContext, ToolErrorKind, ToolFailure, ToolResult

__all__ = [
    "TELEGRAM_TOOLS",
    "TelegramClient",
    "TelegramError",
    "TelegramSettings",
    "TelegramState",
    "describe_update",
    "redact",
]

DEFAULT_BASE_URL = "https://api.telegram.org"
DEFAULT_TOKEN_ENV = "KASLOOP_TELEGRAM_TOKEN"
TOKEN_PLACEHOLDER = "***"
MAX_TEXT = 4096  # Telegram's limit for one message
MAX_CALLBACK_BYTES = 64  # Telegram's limit for callback_data
ALLOWED_UPDATES = ["message", "callback_query"]
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,200}$")
_CHAT_RE = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")


# --------------------------------------------------------------------------- settings


def _chat_key(chat: int | str) -> str:
    """One spelling per chat: ids as decimal text, usernames lower-case with ``@``."""
    text = str(chat).strip()
    return text.lower() if text.startswith("@") else text


class TelegramSettings(BaseModel):
    """``tool_settings.telegram`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = DEFAULT_BASE_URL
    token_env: str = Field(default=DEFAULT_TOKEN_ENV, min_length=1)
    allow_chats: list[int | str] | None = None
    chat_threads: dict[str, str] = Field(default_factory=dict)
    default_thread: str | None = None
    timeout: float = Field(default=20.0, gt=0, le=300)
    poll_timeout: int = Field(default=25, ge=0, le=50)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", url):
            raise ValueError("must be an http(s) URL like https://api.telegram.org")
        return url

    @field_validator("allow_chats")
    @classmethod
    def _chats(cls, value: list[int | str] | None) -> list[int | str] | None:
        for chat in value or []:
            if not _CHAT_RE.match(str(chat).strip()):
                raise ValueError(f"`{chat}` is not a chat id or @username")
        return value

    @field_validator("chat_threads")
    @classmethod
    def _threads(cls, value: dict[str, str]) -> dict[str, str]:
        for chat, thread in value.items():
            if not _CHAT_RE.match(chat.strip()) or not thread.strip():
                raise ValueError(f"`{chat} = {thread!r}` must map a chat id to a thread id")
        return {_chat_key(k): v for k, v in value.items()}

    @field_validator("token_env")
    @classmethod
    def _not_approvals(cls, value: str) -> str:
        return refuse_approval_env(value)

    def chat_allowed(self, chat: int | str) -> bool:
        return self.allow_chats is None or _chat_key(chat) in {_chat_key(c) for c in self.allow_chats}

    def thread_for(self, chat: int | str) -> str | None:
        return self.chat_threads.get(_chat_key(chat), self.default_thread)


def _settings(ctx: ToolContext) -> TelegramSettings:
    try:
        return TelegramSettings.model_validate(ctx.extra.get("telegram") or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "telegram"
        raise ToolFailure("permanent", f"bad telegram config `{key}`: {err['msg']}; fix tool_settings.telegram in kasloop.toml") from None


def _token(settings: TelegramSettings) -> str:
    """The bot token from ``token_env``; its value never appears in a message."""
    token = os.environ.get(settings.token_env, "").strip()
    if not token:
        raise ToolFailure("permanent", f"no Telegram bot token: set the environment variable `{settings.token_env}` (telegram.token_env)")
    if not _TOKEN_RE.match(token):
        raise ToolFailure("permanent", f"the environment variable `{settings.token_env}` does not hold a bot token of the form 123456:ABC-def")
    problem = tool_secret_problem("telegram.token_env", settings.token_env)
    if problem is not None:  # the approvals bot is kasloop's, never a tool's
        raise ToolFailure("denied", problem)
    return token


def redact(text: str, token: str) -> str:
    """``text`` with every spelling of ``token`` (plain or percent-encoded) replaced by ``***``."""
    if not token:
        return text
    for form in {token, token.replace(":", "%3A"), token.replace(":", "%3a")}:
        text = text.replace(form, TOKEN_PLACEHOLDER)
    return text


# --------------------------------------------------------------------------- state: sent messages and offsets


class TelegramState:
    """Small key/value records of the family: ``sent`` messages, ``offset`` per bot, ``updates`` outputs.

    Stored in the kasloop database when one is given (survives restarts; table ``kasloop_telegram``, declared in
    ``kasloop.checkpoints.schema``), else in memory.
    """

    def __init__(self, database: Any = None) -> None:
        self.database = database
        self._memory: dict[tuple[str, str], Any] = {}

    async def get(self, kind: str, key: str) -> Any:
        if self.database is None:
            return self._memory.get((kind, key))

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM kasloop_telegram WHERE kind = ? AND key = ?", (kind, key)).fetchone()
            return None if row is None else str(row[0])

        raw = await self.database.call(read)
        return None if raw is None else json.loads(raw)

    async def put(self, kind: str, key: str, value: Any) -> None:
        if self.database is None:
            self._memory[(kind, key)] = value
            return
        raw = json.dumps(value)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO kasloop_telegram (kind, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (kind, key, raw, time.time()),
            )
            conn.commit()

        await self.database.call(write)


async def _state(ctx: ToolContext) -> TelegramState:
    if ctx.resources.database is not None:
        return TelegramState(ctx.resources.database)

    async def make() -> TelegramState:
        return TelegramState()

    return await ctx.resources.shared("telegram.state", make)


def _bot_id(token: str) -> str:
    """The public part of the token (the bot's user id): the key of the bot's offset."""
    return token.split(":", 1)[0]


async def _updates_params(state: TelegramState, bot: str, **params: Any) -> tuple[int | None, dict[str, Any]]:
    """The stored offset and the ``getUpdates`` parameters that continue from it (nothing is read twice)."""
    offset = await state.get("offset", bot)
    params["allowed_updates"] = ALLOWED_UPDATES
    if offset is not None:
        params["offset"] = offset
    return offset, params


# --------------------------------------------------------------------------- the API client


class TelegramError(ToolFailure):
    """A classified Bot API failure; ``retry_after`` is set for 429 answers."""

    def __init__(self, kind: ToolErrorKind, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(kind, message)
        self.retry_after = retry_after


class _TokenTransport(httpx.AsyncBaseTransport):
    """Puts the token into a private copy of each request, so httpx's logs and errors never see it."""

    def __init__(self, token: str, inner: httpx.AsyncBaseTransport) -> None:
        self._marker = f"/bot{TOKEN_PLACEHOLDER}/".encode()
        self._real = f"/bot{token}/".encode()
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path
        head, marker, tail = path.rpartition(self._marker)
        if marker:
            path = head + self._real + tail
        real = httpx.Request(request.method, request.url.copy_with(raw_path=path), headers=request.headers, stream=request.stream, extensions=request.extensions)
        return await self._inner.handle_async_request(real)

    async def aclose(self) -> None:
        await self._inner.aclose()


class TelegramClient:
    """One bot's Bot API client: ``await client.call("sendMessage", {...})`` returns ``result``."""

    def __init__(self, settings: TelegramSettings, token: str) -> None:
        self.settings = settings
        self.token = token
        self._http = httpx.AsyncClient(
            transport=_TokenTransport(token, httpx.AsyncHTTPTransport(retries=0)),
            trust_env=False,  # a proxy from the environment is not asked to see the token
            timeout=httpx.Timeout(settings.timeout),
            headers={"User-Agent": "kasloop-agent"},
        )

    async def __aenter__(self) -> TelegramClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, params: Mapping[str, Any], *, read_timeout: float | None = None) -> Any:
        url = f"{self.settings.base_url}/bot{TOKEN_PLACEHOLDER}/{method}"
        timeout = httpx.Timeout(self.settings.timeout, read=read_timeout) if read_timeout else httpx.USE_CLIENT_DEFAULT
        try:
            response = await self._http.post(url, json=dict(params), timeout=timeout)
        except httpx.TimeoutException as exc:
            raise TelegramError("transient", self._clean(f"Telegram {method} timed out ({type(exc).__name__}); try again later")) from None
        except httpx.HTTPError as exc:
            kind: Literal["transient", "permanent"] = "transient" if isinstance(exc, (httpx.TransportError,)) else "permanent"
            raise TelegramError(kind, self._clean(f"Telegram {method} failed: {type(exc).__name__}: {exc or 'no details'}")) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("ok") is True and response.status_code < 300:
            return body.get("result")
        raise self._failure(method, response.status_code, body)

    def _clean(self, text: str) -> str:
        return " ".join(redact(text, self.token).split())

    def _failure(self, method: str, status: int, body: Any) -> TelegramError:
        if not isinstance(body, dict):
            kind = "transient" if status >= 500 or status == 429 else "permanent"
            return TelegramError(kind, f"Telegram {method} answered HTTP {status} without a Bot API body; check telegram.base_url")
        code = body.get("error_code") if isinstance(body.get("error_code"), int) else status
        desc = self._clean(str(body.get("description") or f"HTTP {status}"))
        params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        if code == 429:
            retry = params.get("retry_after")
            retry_after = float(retry) if isinstance(retry, (int, float)) else None
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else "; retry later"
            return TelegramError("transient", f"Telegram rate limit on {method} ({desc}){wait}", retry_after=retry_after)
        if code == 401:
            return TelegramError("permanent", f"Telegram rejected the bot token ({desc}); check the token in `{self.settings.token_env}`")
        if code == 403:
            return TelegramError("denied", f"Telegram refused {method} ({desc}); the bot cannot act in this chat")
        if code == 400:
            hint = f"; the group moved: use chat_id {params['migrate_to_chat_id']}" if "migrate_to_chat_id" in params else ""
            return TelegramError("bad_args", f"Telegram rejected {method}: {desc}{hint}")
        if code == 409:
            return TelegramError("permanent", f"Telegram {method} conflict ({desc}); another poller or a webhook is using this bot")
        if code >= 500:
            return TelegramError("transient", f"Telegram {method} failed on the server ({code} {desc}); try again later")
        return TelegramError("permanent", f"Telegram {method} failed ({code} {desc}); check telegram.base_url and the token in `{self.settings.token_env}`")


# --------------------------------------------------------------------------- updates as text


def _who(user: Any) -> str:
    if not isinstance(user, dict):
        return "?"
    if user.get("username"):
        return f"@{user['username']}"
    name = " ".join(str(user.get(k) or "") for k in ("first_name", "last_name")).strip()
    return name or str(user.get("id", "?"))


def _message_text(message: dict[str, Any]) -> str:
    text = message.get("text") or message.get("caption")
    if isinstance(text, str):
        return text
    kinds = [k for k in ("photo", "document", "voice", "audio", "video", "sticker", "location", "contact") if k in message]
    return f"[{kinds[0] if kinds else 'non-text message'}]"


def describe_update(update: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """``(chat_id, text, data)`` of a message or callback-query update; None for other kinds."""
    update_id = update.get("update_id")
    message = update.get("message")
    if isinstance(message, dict) and isinstance(message.get("chat"), dict):
        chat = str(message["chat"].get("id"))
        data = {"kind": "message", "update_id": update_id, "chat_id": chat, "message_id": message.get("message_id"), "from": _who(message.get("from"))}
        return chat, _message_text(message), data
    query = update.get("callback_query")
    if isinstance(query, dict):
        origin = query.get("message") if isinstance(query.get("message"), dict) else {}
        chat = str((origin.get("chat") or {}).get("id", (query.get("from") or {}).get("id", "")))
        data = {
            "kind": "callback_query", "update_id": update_id, "chat_id": chat, "callback_query_id": str(query.get("id", "")),
            "data": query.get("data"), "message_id": origin.get("message_id"), "from": _who(query.get("from")),
        }  # fmt: skip
        return chat, f"[button] {query.get('data', '')}", data
    return None


def _line(data: dict[str, Any], text: str) -> str:
    if data["kind"] == "message":
        return f"message chat={data['chat_id']} msg={data['message_id']} from={data['from']}: {text}"
    return (
        f"button chat={data['chat_id']} on_msg={data['message_id']} from={data['from']} "
        f"callback_query_id={data['callback_query_id']} data={data['data']!r}"
    )


# --------------------------------------------------------------------------- tools


class Button(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=64, description="Button label.")
    callback_data: str = Field(min_length=1, description="Sent back when pressed (max 64 bytes).")

    @field_validator("callback_data")
    @classmethod
    def _short(cls, value: str) -> str:
        if len(value.encode()) > MAX_CALLBACK_BYTES:
            raise ValueError(f"callback_data is at most {MAX_CALLBACK_BYTES} bytes")
        return value


class SendArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat_id: int | str = Field(description="Chat id or @channelusername.")
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="Message text.")
    buttons: list[list[Button]] | None = Field(default=None, description="Rows of inline buttons.")

    @field_validator("chat_id")
    @classmethod
    def _chat(cls, value: int | str) -> int | str:
        if isinstance(value, str) and not _CHAT_RE.match(value.strip()):
            raise ValueError("must be a numeric chat id or @username")
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _buttons(self) -> SendArgs:
        if self.buttons is not None and (not self.buttons or any(not row for row in self.buttons)):
            raise ValueError("buttons must be non-empty rows of buttons")
        if self.buttons and sum(len(row) for row in self.buttons) > 100:
            raise ValueError("at most 100 buttons")
        return self


class UpdatesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100, description="Most updates to return.")
    wait: int = Field(default=0, ge=0, le=50, description="Seconds to wait for a first update.")


class AnswerArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callback_query_id: str = Field(min_length=1, max_length=128, description="From telegram_updates.")
    text: str | None = Field(default=None, max_length=200, description="Short notice shown to the user.")


async def _send(args: SendArgs, ctx: ToolContext) -> ToolResult:
    settings = _settings(ctx)
    if not settings.chat_allowed(args.chat_id):
        raise ToolFailure("denied", f"chat `{args.chat_id}` is not in telegram.allow_chats; write to an allowed chat")
    token = _token(settings)
    state = await _state(ctx)
    key = ctx.idempotency_key
    if key:
        earlier = await state.get("sent", key)
        if earlier is not None:
            text = f"Already sent as message {earlier['message_id']} to chat {earlier['chat_id']} (this call was retried; not sent again)."
            return ToolResult(ok=True, output=text, metadata={**earlier, "resent": False})
    params: dict[str, Any] = {"chat_id": args.chat_id, "text": args.text}
    if args.buttons:
        params["reply_markup"] = {"inline_keyboard": [[b.model_dump() for b in row] for row in args.buttons]}
    async with TelegramClient(settings, token) as client:
        result = await client.call("sendMessage", params)
    message = result if isinstance(result, dict) else {}
    message_id = message.get("message_id")
    chat = message.get("chat") if isinstance(message.get("chat"), dict) else {}
    chat_id = str(chat.get("id", args.chat_id))
    record = {"message_id": message_id, "chat_id": chat_id}
    if key:
        await state.put("sent", key, record)
    return ToolResult(ok=True, output=f"Sent message {message_id} to chat {chat_id}.", metadata=record)


async def _updates(args: UpdatesArgs, ctx: ToolContext) -> ToolResult:
    settings = _settings(ctx)
    token = _token(settings)
    state = await _state(ctx)
    key = ctx.idempotency_key
    if key:
        earlier = await state.get("updates", key)
        if earlier is not None:
            return ToolResult(ok=True, output=earlier["output"], metadata=earlier["metadata"])
    offset, params = await _updates_params(state, _bot_id(token), limit=args.limit, timeout=args.wait)
    async with TelegramClient(settings, token) as client:
        updates = await client.call("getUpdates", params, read_timeout=settings.timeout + args.wait)
    lines: list[str] = []
    skipped = 0
    for update in updates if isinstance(updates, list) else []:
        if isinstance(update.get("update_id"), int):
            offset = max(offset or 0, update["update_id"] + 1)
        described = describe_update(update)
        if described is None or not settings.chat_allowed(described[0]):
            skipped += 1
            continue
        lines.append(_line(described[2], described[1]))
    if offset is not None:
        await state.put("offset", _bot_id(token), offset)
    output = "\n".join(lines) if lines else "No new updates."
    if skipped:
        output += f"\n({skipped} update(s) from other chats or of other kinds skipped)"
    metadata = {"count": len(lines), "skipped": skipped, "offset": offset}
    if key:
        await state.put("updates", key, {"output": output, "metadata": metadata})
    return ToolResult(ok=True, output=output, metadata=metadata)


async def _answer(args: AnswerArgs, ctx: ToolContext) -> ToolResult:
    settings = _settings(ctx)
    token = _token(settings)
    params: dict[str, Any] = {"callback_query_id": args.callback_query_id}
    if args.text:
        params["text"] = args.text
    async with TelegramClient(settings, token) as client:
        await client.call("answerCallbackQuery", params)
    return ToolResult(ok=True, output=f"Answered button press {args.callback_query_id}.", metadata={"callback_query_id": args.callback_query_id})


TELEGRAM_TOOLS: tuple[Tool, ...] = (
    Tool(name="telegram_send", description="Send a Telegram message, optionally with buttons.", args_model=SendArgs, func=_send, risk="high", idempotent=False, timeout=60.0, family="telegram", untrusted=False),
    Tool(name="telegram_updates", description="Read new Telegram messages and button presses.", args_model=UpdatesArgs, func=_updates, risk="read", idempotent=True, timeout=120.0, family="telegram"),
    Tool(name="telegram_answer", description="Acknowledge a Telegram button press.", args_model=AnswerArgs, func=_answer, risk="low", idempotent=True, timeout=60.0, family="telegram", untrusted=False),
)
