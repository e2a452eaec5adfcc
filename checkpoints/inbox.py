"""The inbox: messages from outside (CLI ``tell``, Telegram, IMAP, webhooks) waiting for a thread.

Receivers only append; a message waits in the database while the agent is
not running. perceive reads the messages newer than the last one its thread
took (``after``, kept in the checkpointed state) and marks them taken. The
state, not the mark, decides delivery: if the process dies before perceive's
checkpoint is written, the next perceive reads the same messages again, and
once it is written they are never read again. Exactly once, with no
two-phase commit between the inbox and the checkpointer.
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

    async def unread(self, thread_id: str) -> int:
        """How many messages are not yet taken (a count; nothing is loaded)."""
        row = await self.db.fetchone("SELECT count(*) FROM kasloop_inbox WHERE thread_id = ? AND taken_at IS NULL", (thread_id,))
        return int(row[0]) if row is not None else 0

    async def newer(self, thread_id: str, after: int = 0) -> bool:
        """Whether ``thread_id`` has messages with an id above ``after`` (reads only)."""
        row = await self.db.fetchone("SELECT 1 FROM kasloop_inbox WHERE thread_id = ? AND id > ? LIMIT 1", (thread_id, after))
        return row is not None

    async def take(self, thread_id: str, after: int = 0) -> list[InboxItem]:
        """Messages of ``thread_id`` with an id above ``after``, oldest first, marked taken."""

        def read_and_mark(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            rows = conn.execute(
                "SELECT * FROM kasloop_inbox WHERE thread_id = ? AND id > ? ORDER BY id", (thread_id, after)
            ).fetchall()
            if rows:
                conn.execute(
                    f"UPDATE kasloop_inbox SET taken_at = ? WHERE taken_at IS NULL AND id IN ({','.join('?' * len(rows))})",
                    (time.time(), *(r["id"] for r in rows)),
                )
                conn.commit()
            return rows

        return [_item(r) for r in await self.db.call(read_and_mark)]
