"""Where the receivers put what they receive: a thread's inbox.

Every receiver (the signed webhook app, the Telegram update pump, the email
inbox poll) hands each message to an async ``deliver(thread_id, source, text,
data)``; :func:`inbox_deliver` is the one that appends it to the thread's
:class:`~kasloop.checkpoints.inbox.Inbox` (redacted there), where the thread's
next perceive reads it exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kasloop.checkpoints.database import Database
from kasloop.checkpoints.inbox import Inbox

__all__ = ["Deliver", "inbox_deliver"]

Deliver = Callable[[str, str, str, dict[str, Any]], Awaitable[Any]]
"""``async (thread_id, source, text, data)``: hand one received message to a thread."""


def inbox_deliver(database: Database) -> Deliver:
    """A ``deliver`` callback that appends to the thread's inbox in ``database``."""
    inbox = Inbox(database)

    async def deliver(thread_id: str, source: str, text: str, data: dict[str, Any]) -> None:
        await inbox.put(thread_id, source, text, **data)

    return deliver
