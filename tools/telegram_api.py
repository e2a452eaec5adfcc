"""Talking to the Telegram Bot API: the ``telegram`` settings, the bot token, the client, updates as data.

The telegram tools (:mod:`kasloop.tools.telegram`), kasloop's approvals bot
(:mod:`kasloop.channels.telegram`) and the update pump (:mod:`kasloop.channels.telegram_updates`) all speak
to the Bot API the same way, so the wire lives here, apart from any one of them: the settings and where the
token comes from, a client that keeps the token out of httpx's logs and errors (:class:`_TokenTransport`,
:func:`redact`) and classifies every failure (:class:`TelegramError`), and an update read as
``(chat, text, data)`` (:func:`describe_update`). What the family records (sent messages, the offset) and
the tools are :mod:`kasloop.tools.telegram`, whose docstring describes the family and its settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kasloop.safety.approval_secrets import refuse_approval_env, tool_secret_problem
from kasloop.tools.base import ToolContext, ToolErrorKind, ToolFailure

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TOKEN_ENV",
    "TOKEN_PLACEHOLDER",
    "TelegramClient",
    "TelegramError",
    "TelegramSettings",
    "describe_update",
    "redact",
]

DEFAULT_BASE_URL = "https://api.telegram.org"
DEFAULT_TOKEN_ENV = "KASLOOP_TELEGRAM_TOKEN"
TOKEN_PLACEHOLDER = "***"
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,200}$")
_CHAT_RE = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")


# --------------------------------------------------------------------------- settings


def _chat_key(chat: int | str) -> str:
    """One spelling per chat: ids as decimal text, usernames lower-case with ``@``."""
    text = str(chat).strip()
    return text.lower() if text.startswith("@") else text


class TelegramSettings(BaseModel):
    """``tool_settings.telegram`` (see the docstring of :mod:`kasloop.tools.telegram`)."""

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


def _bot_id(token: str) -> str:
    """The public part of the token (the bot's user id): the key of the bot's offset."""
    return token.split(":", 1)[0]


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
