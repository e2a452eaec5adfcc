"""What the daemon (or ``Agent.poll_approvals`` / ``poll_inbox``) does with the channels each cycle.

Announcing requests and notices for a thread uses the thread's own stored
policy (its ``approval_channels``, see ``ThreadSession.announce``); polling for
decisions and inbox messages uses the polling process's config. Decisions are
typed (``kasloop.guardrails.approvals``) and go through ``Sessions.decide``, so they get
every check ``kasloop approve`` gets.
"""

from __future__ import annotations

from typing import Any

from kasloop.guardrails.approvals import approval_json
from kasloop.channels.base import Incoming
from kasloop.channels.email_inbox import poll_inbox as poll_mailbox
from kasloop.channels.fanout import channels_for
from kasloop.channels.inbox_feed import inbox_deliver
from kasloop.channels.telegram_updates import poll_once
from kasloop.checkpoints import ApprovalStore, EventLog
from kasloop.errors import ApprovalError, ApprovalExpired, KasloopError
from kasloop.runtime.sessions import Sessions
from kasloop.tools.base import ToolFailure
from kasloop.tools.telegram import TelegramState

__all__ = ["poll_approvals", "poll_inbox"]


async def poll_approvals(sessions: Sessions) -> int:
    """Take the decisions that arrived on this agent's approval channels (Telegram buttons, email replies).

    Pending requests not yet announced (a channel was down) are announced first. Decided
    tool calls are recorded without resuming (``resume`` or the daemon continues the thread);
    an approved budget raise continues its thread here. Returns how many decisions were recorded.
    Signed webhook callbacks arrive on ``kasloop.channels.webhook_receiver.approvals_app`` instead.
    """
    channels = channels_for(sessions.config)
    if not channels:
        return 0
    recorded = 0
    async with sessions.open() as db:
        events, store = EventLog(db), ApprovalStore(db)
        by_thread: dict[str, list[dict[str, Any]]] = {}
        for record in await store.pending():
            by_thread.setdefault(record["thread"], []).append(approval_json(record))
        for thread_id, records in by_thread.items():
            await sessions.session(db, thread_id, sessions.config).announce(records)  # under the thread's stored policy

        async def refuse(approval_id: str, by: str, why: str, channel: str = "") -> None:
            record = await store.get(approval_id) if approval_id else None
            await events.append(record["thread"] if record else "", 0, "approval_refused", approval_id=approval_id, by=by, channel=channel, reason=why)

        for channel in channels:
            async def decide(incoming: Incoming, name: str = channel.name) -> str:
                nonlocal recorded
                record = await store.get(incoming.approval_id)
                try:
                    await sessions.decide(incoming.approval_id, incoming.decision, by=incoming.by, channel=name, resume=record is not None and record["kind"] == "budget")
                except ApprovalExpired as exc:  # the check logged this refusal itself
                    return f"Not recorded: {exc.message}"
                except ApprovalError as exc:
                    await refuse(incoming.approval_id, incoming.by, exc.message, name)
                    return f"Not recorded: {exc.message}"
                recorded += 1
                return f"Recorded: {incoming.decision.decision}."

            async def refused(approval_id: str, by: str, why: str, name: str = channel.name) -> None:
                await refuse(approval_id, by, why, name)

            try:
                await channel.poll(db, decide, refused)
            except (KasloopError, ToolFailure) as exc:
                await events.append("", 0, "channel_error", channel=channel.name, message=exc.message[:300])
    return recorded


async def poll_inbox(sessions: Sessions) -> int:
    """Feed new mail into the inbox (``tool_settings.email.inbox_thread``), and Telegram messages to the
    tools' bot (``tool_settings.telegram`` ``chat_threads`` / ``default_thread``; the approvals bot is
    another bot, polled by ``poll_approvals``). The daemon calls this every cycle; returns how many messages arrived."""
    settings = sessions.config.tool_settings
    email, telegram = settings.get("email") or {}, settings.get("telegram") or {}
    wants_telegram = telegram.get("chat_threads") or telegram.get("default_thread")
    if not email.get("inbox_thread") and not wants_telegram:
        return 0
    arrived = 0
    async with sessions.open() as db:
        deliver = inbox_deliver(db)
        if email.get("inbox_thread"):
            arrived += await poll_mailbox(email, deliver)
        if wants_telegram:
            arrived += await poll_once(telegram, deliver, state=TelegramState(db))
    return arrived
