"""Approval channels: each pending request goes out to Telegram, email or a webhook, and decisions come back.

A decision from a channel counts only if it comes from someone the config
names, and never from the model or a tool. Each incoming channel has secrets
of its own, in ``KASLOOP_APPROVAL_*`` variables that no tool setting may name
and whose values no other variable may hold (kasloop refuses to start
otherwise), and no tool may reach kasloop's receivers
(``kasloop.channels.receivers``):

* Telegram: requests are sent by kasloop's own approvals bot (not the tools'
  bot); a press counts only on the very message kasloop sent for that
  approval (chat and message id recorded when it was sent) and only from one
  of ``approvers`` (user ids).
* Email: replies are read from the approvals' own mailbox (not the tools'); the
  sender must be one of ``approvers`` *and* quote the request's one-time code,
  which only the request email carried (a forged From header alone is not
  enough).
* Webhook: the callback must carry a valid HMAC signature made with the
  approval channel's own secret, a fresh timestamp and a delivery id never
  seen before.

Everything refused is logged as ``approval_refused`` on the request's thread;
accepted decisions are typed (``kasloop.approvals``) and go through
``Agent.decide`` like ``kasloop approve``, so expiry, staleness and argument
hashes are checked by the same :func:`kasloop.approvals.check_decision`.
Which requests were announced where is kept in ``kasloop_announcements``
(with the one-time code and the sent message's reference), so each goes out
once per channel.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kasloop.approvals import Approve, Reject
from kasloop.checkpoints.events import EventLog
from kasloop.checkpoints.database import Database
from kasloop.config import AgentConfig

__all__ = ["AnnouncementLog", "Channel", "Incoming", "Refuse", "announce", "channels_for", "notify", "request_text"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A decision a channel received from an approver (already checked to come from one)."""

    approval_id: str
    decision: Approve | Reject
    by: str


Refuse = Callable[[str, str, str], Awaitable[None]]
"""``async (approval_id, by, why)``: log a refused decision."""
Decide = Callable[[Incoming], Awaitable[str]]
"""``async (incoming) -> text``: apply a decision; the text says how it went (for the approver)."""


class Channel(Protocol):
    name: str

    async def send(self, record: dict[str, Any], code: str) -> str:
        """Announce ``record``; returns a reference (message id)."""
        ...

    async def poll(self, db: Database, decide: Decide, refuse: Refuse) -> None:
        """Take the decisions that arrived since the last poll (push channels do nothing)."""
        ...

    async def notify(self, subject: str, text: str, data: dict[str, Any]) -> str:
        """Tell people something nobody has to decide (a level-4 thread escalated or paused); returns a reference."""
        ...


class AnnouncementLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, approval_id: str, channel: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM kasloop_announcements WHERE approval_id = ? AND channel = ?", (approval_id, channel))
        return None if row is None else {k: row[k] for k in row.keys()}

    async def record(self, approval_id: str, channel: str, ref: str, code: str) -> None:
        await self.db.execute(
            "INSERT INTO kasloop_announcements (approval_id, channel, ref, code, sent_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (approval_id, channel) DO UPDATE SET ref = excluded.ref, code = excluded.code, sent_at = excluded.sent_at",
            (approval_id, channel, ref, code, time.time()),
        )


def request_text(record: dict[str, Any]) -> str:
    """The request as people read it in a chat or a mail."""
    args = json.dumps(record["args"], ensure_ascii=False, indent=1)
    if len(args) > 1500:
        args = args[:1500] + "…"
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record["expires_at"]))
    return (
        f"kasloop needs a decision ({record.get('kind', 'tool_call')}).\n"
        f"Thread: {record['thread']}\nTool: {record['tool']} (risk {record['risk']})\nWhy: {record['reason']}\n"
        f"Arguments: {args}\nApproval id: {record['approval_id']}\nExpires: {expires}"
    )


def channels_for(config: AgentConfig) -> list[Channel]:
    """The channels ``config`` turns on, in a fixed order."""
    from kasloop.channels.email import EmailChannel
    from kasloop.channels.telegram import TelegramChannel
    from kasloop.channels.webhook import WebhookChannel

    wanted = config.approval_channels
    found: list[Channel] = []
    if wanted.telegram is not None:
        found.append(TelegramChannel(wanted.telegram, config.tool_settings))
    if wanted.email is not None:
        found.append(EmailChannel(wanted.email, config.tool_settings))
    if wanted.webhook is not None:
        found.append(WebhookChannel(wanted.webhook, config.tool_settings, config.workspace))
    return found


async def announce(db: Database, config: AgentConfig, records: Iterable[dict[str, Any]]) -> None:
    """Send each request to each channel of ``config`` once; a failure is logged and retried at the next announce."""
    channels = channels_for(config)
    if not channels:
        return
    log, events = AnnouncementLog(db), EventLog(db)
    for record in records:
        for channel in channels:
            if await log.get(record["approval_id"], channel.name) is not None:
                continue
            code = secrets.token_hex(4).upper()
            try:
                ref = await channel.send(record, code)
            except Exception as exc:  # noqa: BLE001 - a channel outage must never lose the request; the CLI still has it
                message = getattr(exc, "message", None) or str(exc)
                await events.append(record["thread"], 0, "announce_failed", approval_id=record["approval_id"], channel=channel.name, message=message[:300])
                continue
            await log.record(record["approval_id"], channel.name, ref, code)
            await events.append(record["thread"], 0, "approval_announced", approval_id=record["approval_id"], channel=channel.name, ref=ref)


async def notify(db: Database, config: AgentConfig, thread_id: str, key: str, subject: str, text: str) -> None:
    """Send a notice once per ``key`` and channel (e.g. "escalated at step 12"); failures are logged, never raised."""
    log, events = AnnouncementLog(db), EventLog(db)
    for channel in channels_for(config):
        if await log.get(key, channel.name) is not None:
            continue
        try:
            ref = await channel.notify(subject, text, {"thread": thread_id, "key": key})
        except Exception as exc:  # noqa: BLE001 - a notice that cannot be sent must not stop anything
            message = getattr(exc, "message", None) or str(exc)
            await events.append(thread_id, 0, "notify_failed", channel=channel.name, message=message[:300])
            continue
        await log.record(key, channel.name, ref, "")
        await events.append(thread_id, 0, "notified", channel=channel.name, subject=subject)
