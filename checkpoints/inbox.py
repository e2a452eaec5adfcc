"""The inbox: messages from outside (CLI ``tell``, Telegram, IMAP, webhooks) waiting for a thread.

Receivers only append; perceive takes what is new. A row is taken at most
once (``taken_at`` is set in the same statement that reads it), so a message
is never shown to the agent twice, and never lost when the agent is not
running: it waits in the database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from kasloop.checkpoints.sqlite import Database

__all__ = ["Inbox", "InboxItem"]


@dataclass(frozen=True)
class InboxItem:
    id: int
    thread_id: str
    source: str
    text: str
    data: dict[str, Any]
    received_at: float


def _item(row: sqlite3.Row) -> InboxItem:
    return InboxItem(
        id=row["id"], thread_id=row["thread_id"], source=row["source"], text=row["text"],
        data=json.loads(row["data"]), received_at=row["received_at"],
    )


class Inbox:
    """Messages for threads, stored in the kasloop database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, thread_id: str, source: str, text: str, **data: Any) -> int:
        """Append one message for ``thread_id``; returns its id."""

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO kasloop_inbox (thread_id, source, text, data, received_at) VALUES (?, ?, ?, ?, ?)",
                (thread_id, source, text, json.dumps(data, default=str), time.time()),
            )
            conn.commit()
            return int(cur.lastrowid or 0)

        return await self.db.call(write)

    async def pending(self, thread_id: str) -> list[InboxItem]:
        """Messages not yet taken, oldest first (reading does not take them)."""
        rows = await self.db.fetchall(
            "SELECT * FROM kasloop_inbox WHERE thread_id = ? AND taken_at IS NULL ORDER BY id", (thread_id,)
        )
        return [_item(r) for r in rows]

    async def take(self, thread_id: str) -> list[InboxItem]:
        """Messages not yet taken, oldest first, marked taken in the same transaction."""

        def read_and_mark(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            rows = conn.execute(
                "UPDATE kasloop_inbox SET taken_at = ? WHERE thread_id = ? AND taken_at IS NULL RETURNING *",
                (time.time(), thread_id),
            ).fetchall()
            conn.commit()
            return rows

        rows = await self.db.call(read_and_mark)
        return sorted((_item(r) for r in rows), key=lambda item: item.id)
