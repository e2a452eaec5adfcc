"""Approval requests as Telegram messages with Approve / Reject buttons, from kasloop's own approvals bot.

The approvals bot is not the tools' bot: its token is in
``approval_channels.telegram.token_env`` (``KASLOOP_APPROVAL_TELEGRAM_TOKEN``),
which no tool may read, and kasloop refuses to start when it holds the tools'
token. So a model can neither send a message as the approvals bot nor read
(and swallow) its button presses. Each request goes to
``approval_channels.telegram.chat_id``; the chat and message id of what was
sent are recorded. A press arrives as a ``callback_query`` with
``kasloop:<approval id>:approve|reject`` and counts only if

1. the presser's user id is in ``approvers``, and
2. the button is on the very message kasloop sent for that approval (same
   chat, same message id): callback data copied onto any other message, a
   notice, or another request's message is refused.

Everything else the approvals bot receives is ignored (the tools' bot feeds
the inbox, see ``kasloop.runtime.polling.poll_inbox``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from kasloop.guardrails.approvals import Approve, Reject, approval_secret_problem
from kasloop.channels.announcements import AnnouncementLog, request_text
from kasloop.channels.base import APPROVAL_PREFIX, Decide, Incoming, Refuse
from kasloop.checkpoints.database import Database
from kasloop.config.schema import TelegramApprovals
from kasloop.errors import ConfigError
from kasloop.tools.base import ToolFailure
from kasloop.tools.telegram import TelegramState, _updates_params
from kasloop.tools.telegram_api import (
    _TOKEN_RE,
    DEFAULT_BASE_URL,
    TelegramClient,
    TelegramError,
    TelegramSettings,
    _bot_id,
)

__all__ = ["TelegramChannel", "message_ref"]


def message_ref(message: Any) -> str:
    """``"<chat id>:<message id>"`` of a Bot API message (how a sent request is recorded and a press matched)."""
    if not isinstance(message, dict):
        return ""
    chat = message.get("chat") if isinstance(message.get("chat"), dict) else {}
    return f"{chat.get('id', '')}:{message.get('message_id', '')}"


class TelegramChannel:
    name = "telegram"

    def __init__(self, approvals: TelegramApprovals, tool_settings: dict[str, Any]) -> None:
        self.approvals = approvals
        tools = tool_settings.get("telegram") or {}
        conf: dict[str, Any] = {"base_url": approvals.base_url or tools.get("base_url") or DEFAULT_BASE_URL}
        if "timeout" in tools:
            conf["timeout"] = tools["timeout"]
        self.settings = TelegramSettings.model_validate(conf)

    def _token(self) -> str:
        """The approvals bot's token (checked again here: never a value a tool's variable holds)."""
        name = self.approvals.token_env
        problem = approval_secret_problem("approval_channels.telegram.token_env", name)
        if problem is not None:
            raise ConfigError(f"Refusing to use the Telegram approval channel: {problem}.")
        token = os.environ.get(name, "").strip()
        if not token:
            raise ToolFailure("permanent", f"no token for the approvals bot: set the environment variable `{name}` (approval_channels.telegram.token_env)")
        if not _TOKEN_RE.match(token):
            raise ToolFailure("permanent", f"the environment variable `{name}` does not hold a bot token of the form 123456:ABC-def")
        return token

    async def send(self, record: dict[str, Any], code: str) -> str:
        approval_id = record["approval_id"]
        buttons = [[
            {"text": "Approve", "callback_data": f"{APPROVAL_PREFIX}{approval_id}:approve"},
            {"text": "Reject", "callback_data": f"{APPROVAL_PREFIX}{approval_id}:reject"},
        ]]
        params = {"chat_id": self.approvals.chat_id, "text": request_text(record), "reply_markup": {"inline_keyboard": buttons}}
        async with TelegramClient(self.settings, self._token()) as client:
            message = await client.call("sendMessage", params)
        return message_ref(message)

    async def notify(self, subject: str, text: str, data: dict[str, Any]) -> str:
        async with TelegramClient(self.settings, self._token()) as client:
            message = await client.call("sendMessage", {"chat_id": self.approvals.chat_id, "text": f"{subject}\n\n{text}"[:4000]})
        return message_ref(message)

    async def poll(self, db: Database, decide: Decide, refuse: Refuse) -> None:
        token = self._token()
        state, bot = TelegramState(db), _bot_id(token)
        async with TelegramClient(self.settings, token) as client:
            _, params = await _updates_params(state, bot, timeout=0)
            updates = await client.call("getUpdates", params)
            for update in updates if isinstance(updates, list) else []:
                query = update.get("callback_query") if isinstance(update, dict) else None
                if isinstance(query, dict):
                    answer = await self._press(db, query, decide, refuse)
                    with contextlib.suppress(TelegramError):  # a press not acknowledged only spins a while in the app
                        await client.call("answerCallbackQuery", {"callback_query_id": str(query.get("id", "")), "text": answer[:200]})
                if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                    await state.put("offset", bot, update["update_id"] + 1)  # each update is handled once

    async def _press(self, db: Database, query: dict[str, Any], decide: Decide, refuse: Refuse) -> str:
        data = str(query.get("data", ""))
        approval_id, _, decision = data.removeprefix(APPROVAL_PREFIX).partition(":") if data.startswith(APPROVAL_PREFIX) else ("", "", "")
        user = query.get("from") if isinstance(query.get("from"), dict) else {}
        by = f"telegram:{user.get('username') or user.get('id', '?')}"
        if not approval_id:
            await refuse("", by, "not a kasloop approval button")
            return "This is not a kasloop approval button."
        if user.get("id") not in self.approvals.approvers:
            await refuse(approval_id, by, f"telegram user {user.get('id')} is not an approver")
            return "You are not an approver for this agent."
        sent = await AnnouncementLog(db).get(approval_id, self.name)
        if sent is None or not sent["ref"] or sent["ref"] != message_ref(query.get("message")):
            await refuse(approval_id, by, "the button is not on the request kasloop sent for this approval")
            return "This button is not on kasloop's request for that approval; nothing was decided."
        if decision not in ("approve", "reject"):
            await refuse(approval_id, by, f"unknown button `{decision}`")
            return "Unknown button."
        return await decide(Incoming(approval_id, Approve() if decision == "approve" else Reject(), by))
