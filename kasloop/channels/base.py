"""Approval channels: each pending request goes out to Telegram, email or a webhook, and decisions come back.

A decision from a channel counts only if it comes from someone the config
names, and never from the model or a tool. Each incoming channel has secrets
of its own, in ``KASLOOP_APPROVAL_*`` variables that no tool setting may name
and whose values no other variable may hold (kasloop refuses to start
otherwise), and no tool may reach kasloop's receivers
(``kasloop.safety.receivers``):

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
accepted decisions are typed (``kasloop.guardrails.approvals``) and go through
``Agent.decide`` like ``kasloop approve``, so expiry, staleness and argument
hashes are checked by the same :func:`kasloop.guardrails.approvals.check_decision`.

This module holds the types every channel shares, and nothing that does I/O.
Sending each request to the channels a config turns on is
``kasloop.channels.fanout``; what was announced where (with the one-time code
and the sent message's reference) is ``kasloop.channels.announcements``; the
receivers that feed thread inboxes are ``kasloop.channels.telegram_updates``
and ``kasloop.channels.email_inbox``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kasloop.guardrails.approvals import Approve, Reject
from kasloop.checkpoints.database import Database

__all__ = ["APPROVAL_PREFIX", "Channel", "Decide", "Decider", "Incoming", "Refuse"]

APPROVAL_PREFIX = "kasloop:"
# A press with this prefix that reaches the tools' bot is only a message (``telegram_send`` can put any
# callback data on its buttons); decisions are taken from kasloop's own approvals bot, and only on the
# message it sent for that approval (``kasloop.channels.telegram``).
"""``callback_data`` of kasloop's approval buttons: ``kasloop:<approval id>:approve|reject``."""


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


class Decider(Protocol):
    """What a receiver decides through (``kasloop.runtime.sessions.Sessions`` is one: ``agent.sessions``):
    the one decision check and the thread's stored policy, as ``kasloop approve``. A protocol here, so the
    channels need nothing from the runtime above them."""

    @property
    def config(self) -> Any: ...  # this process's AgentConfig (its ``approval_channels``)

    async def decide(self, approval_id: str, decision: Any, *, by: str | None, channel: str, resume: bool) -> Any:
        """Check and record a decision; the result has ``thread``, ``status`` and ``approvals``."""
        ...

    async def resume(self, thread_id: str) -> Any:
        """Continue a thread whose pause is fully decided."""
        ...
