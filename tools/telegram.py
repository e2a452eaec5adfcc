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
import sqlite3
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.telegram_api import (
    _CHAT_RE,
    TelegramClient,
    TelegramError,
    TelegramSettings,
    _bot_id,
    _settings,
    _token,
    describe_update,
    redact,
)

# The Bot API itself (the settings, the token, the client, an update read as data) is kasloop.tools.telegram_api,
# shared with kasloop's approvals bot and the update pump. This module keeps the family's description (above),
# what it records (sent messages, the getUpdates offset), the tools and their arguments, and re-exports the
# names importers use.
__all__ = [
    "TELEGRAM_TOOLS",
    "TelegramClient",
    "TelegramError",
    "TelegramSettings",
    "TelegramState",
    "describe_update",
    "redact",
]

MAX_TEXT = 4096  # Telegram's limit for one message
MAX_CALLBACK_BYTES = 64  # Telegram's limit for callback_data
ALLOWED_UPDATES = ["message", "callback_query"]


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


async def _updates_params(state: TelegramState, bot: str, **params: Any) -> tuple[int | None, dict[str, Any]]:
    """The stored offset and the ``getUpdates`` parameters that continue from it (nothing is read twice)."""
    offset = await state.get("offset", bot)
    params["allowed_updates"] = ALLOWED_UPDATES
    if offset is not None:
        params["offset"] = offset
    return offset, params


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
