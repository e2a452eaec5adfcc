"""Approval requests as Telegram messages with Approve / Reject buttons.

The bot (``tool_settings.telegram``: token variable, base URL) posts each
request to ``approval_channels.telegram.chat_id``. A press arrives as a
``callback_query`` with ``kasloop:<approval id>:approve|reject``; it counts
only if the presser's user id is in ``approvers``. Other updates polled in
the same call go to the inbox as ``pump_updates`` would deliver them, so the
two never compete for the bot's update offset.
"""

from __future__ import annotations

from typing import Any

from kasloop.channels.base import Decide, Incoming, Refuse, request_text
from kasloop.checkpoints.sqlite import Database
from kasloop.config import TelegramApprovals
from kasloop.tools.telegram import APPROVAL_PREFIX, TelegramClient, TelegramSettings, TelegramState, _token, inbox_deliver, poll_once

__all__ = ["TelegramChannel"]


class TelegramChannel:
    name = "telegram"

    def __init__(self, approvals: TelegramApprovals, tool_settings: dict[str, Any]) -> None:
        self.approvals = approvals
        self.settings = TelegramSettings.model_validate(tool_settings.get("telegram") or {})

    async def send(self, record: dict[str, Any], code: str) -> str:
        approval_id = record["approval_id"]
        buttons = [[
            {"text": "Approve", "callback_data": f"{APPROVAL_PREFIX}{approval_id}:approve"},
            {"text": "Reject", "callback_data": f"{APPROVAL_PREFIX}{approval_id}:reject"},
        ]]
        params = {"chat_id": self.approvals.chat_id, "text": request_text(record), "reply_markup": {"inline_keyboard": buttons}}
        async with TelegramClient(self.settings, _token(self.settings)) as client:
            message = await client.call("sendMessage", params)
        return str(message.get("message_id", "")) if isinstance(message, dict) else ""

    async def notify(self, subject: str, text: str, data: dict[str, Any]) -> str:
        async with TelegramClient(self.settings, _token(self.settings)) as client:
            message = await client.call("sendMessage", {"chat_id": self.approvals.chat_id, "text": f"{subject}\n\n{text}"[:4000]})
        return str(message.get("message_id", "")) if isinstance(message, dict) else ""

    async def poll(self, db: Database, decide: Decide, refuse: Refuse) -> None:
        async def on_press(query: dict[str, Any]) -> str:
            _, approval_id, decision = (str(query.get("data", "")).split(":") + ["", ""])[:3]
            user = query.get("from") if isinstance(query.get("from"), dict) else {}
            by = f"telegram:{user.get('username') or user.get('id', '?')}"
            if user.get("id") not in self.approvals.approvers:
                await refuse(approval_id, by, f"telegram user {user.get('id')} is not an approver")
                return "You are not an approver for this agent."
            if decision not in ("approve", "reject"):
                await refuse(approval_id, by, f"unknown button `{decision}`")
                return "Unknown button."
            return await decide(Incoming(approval_id, decision, by))

        await poll_once(self.settings, inbox_deliver(db), state=TelegramState(db), on_approval=on_press)
