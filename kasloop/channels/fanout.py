"""Fan-out: each pending request (and each notice) goes to every channel a config turns on, once per channel.

A channel that is down does not lose anything: the failure is logged
(``announce_failed``, ``notify_failed``) and the request is sent at the next
announce; the CLI always has it. What went where is kept by
:class:`~kasloop.channels.announcements.AnnouncementLog`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from kasloop.channels.announcements import AnnouncementLog
from kasloop.channels.base import Channel
from kasloop.channels.email import EmailChannel
from kasloop.channels.telegram import TelegramChannel
from kasloop.channels.webhook import WebhookChannel
from kasloop.checkpoints.database import Database
from kasloop.checkpoints.events import EventLog
from kasloop.config.schema import AgentConfig

__all__ = ["announce", "channels_for", "notify"]


def channels_for(config: AgentConfig) -> list[Channel]:
    """The channels ``config`` turns on, in a fixed order."""
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
