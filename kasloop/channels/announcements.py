"""What was announced where: the ``kasloop_announcements`` records, and the text a request is announced with.

Each request (and each notice) goes out once per channel: the record keeps the
channel's reference to what it sent (a message id) and the request's one-time
code, which the channels check when a decision comes back
(``kasloop.channels.telegram``, ``kasloop.channels.email``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from kasloop.checkpoints.database import Database

__all__ = ["AnnouncementLog", "request_text"]


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
