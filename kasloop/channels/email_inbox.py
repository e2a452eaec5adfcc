"""The email inbox feed: unread mail of the tools' mailbox, handed on to a thread's inbox.

:func:`poll_inbox` reads the unread mail of ``email.inbox_folder`` from the
senders ``email.inbox_senders`` allows (one IMAP session, through the email
tool family's settings, network gate and :func:`~kasloop.tools.email.take_unread`),
marks it read and hands each one to ``deliver(thread_id, "email", text, data)``
for ``email.inbox_thread``. The daemon calls it each cycle
(``kasloop.runtime.polling.poll_inbox``). The approvals mailbox is another
mailbox (``kasloop.channels.email``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from kasloop.channels.inbox_feed import Deliver
from kasloop.tools.base import ToolFailure
from kasloop.tools.email import EmailSettings
from kasloop.tools.email_connection import _password
from kasloop.tools.email_read import _imap_session, take_unread

__all__ = ["poll_inbox"]


async def poll_inbox(settings: EmailSettings | dict[str, Any], deliver: Deliver) -> int:
    """Feed unread mail from ``inbox_senders`` into ``inbox_thread`` (one IMAP session); returns how many.

    Used by the daemon each cycle, like the Telegram pump and the webhook receiver.
    """
    conf = settings if isinstance(settings, EmailSettings) else EmailSettings.model_validate(settings)
    if conf.inbox_thread is None:
        return 0
    if conf.imap is None or not conf.imap.username:
        raise ToolFailure("permanent", "email.inbox_thread needs tool_settings.email.imap (host, username)")
    password = _password(conf.imap, "imap")
    assert password is not None
    patterns = [p.lower() for p in conf.inbox_senders]
    mails = await asyncio.to_thread(_imap_session, conf.imap, password, lambda conn: take_unread(conn, conf.inbox_folder, max_bytes=conf.max_read_bytes, senders=patterns))
    for sender, subject, body, message_id in mails:
        text = f"Email from {sender}: {subject}\n\n{body}"[:4000]
        await deliver(conf.inbox_thread, "email", text, {"from": sender, "subject": subject, "message_id": message_id})
    return len(mails)
