"""The inbox: messages from outside (CLI ``tell``, Telegram, IMAP, webhooks) waiting for a thread.

Receivers only append; a message waits in the database while the agent is
not running. perceive reads the messages newer than the last one its thread
took (``after``, kept in the checkpointed state) and marks them taken. The
state, not the mark, decides delivery: if the process dies before perceive's
checkpoint is written, the next perceive reads the same messages again, and
once it is written they are never read again. Exactly once, with no
two-phase commit between the inbox and the checkpointer.

Reading costs a database round trip every cycle, and the inbox is almost
always empty. So every ``put`` (from any process) also replaces a small
signal file next to the database (``kasloop.db.inbox``), and ``take`` skips
the read while that file is unchanged since its last empty read, for at most
:data:`RECHECK_EVERY` cycles (so a message written without the signal is
still read soon).

A message is redacted before its row is written (``kasloop.safety.secrets``: every
secret this process knows, in every encoding, plus the ``redactor`` given),
whoever puts it (``tell``, the Telegram, email and webhook receivers): no
row ever holds a secret, read or not.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kasloop.checkpoints.database import Connection, Database, Row
from kasloop.safety.secrets import Redactor, known_secrets, remember_secrets

__all__ = ["RECHECK_EVERY", "Inbox", "InboxItem"]

RECHECK_EVERY = 10
"""Cycles a thread may skip reading the inbox while the signal file is unchanged."""


@dataclass(frozen=True)
class InboxItem:
    id: int
    thread_id: str
    source: str
    text: str
    data: dict[str, Any]
    received_at: float


def _item(row: Row) -> InboxItem:
    return InboxItem(
        id=row["id"], thread_id=row["thread_id"], source=row["source"], text=row["text"],
        data=json.loads(row["data"]), received_at=row["received_at"],
    )


class Inbox:
    """Messages for threads, stored in the kasloop database."""

    def __init__(self, db: Database, redactor: Redactor | None = None) -> None:
        self.db = db
        if redactor:
            remember_secrets(redactor)  # known to every store of this process from now on
        self._quiet: dict[str, tuple[tuple[int, int, int] | None, int, int]] = {}
        """thread → (signal seen at the last empty read, ``after`` then, reads skipped since)."""

    def _signal_path(self) -> Path | None:
        path = self.db.path  # None on Postgres: no file to put the signal next to, every take reads
        return path.with_name(path.name + ".inbox") if path is not None and path.name != ":memory:" else None

    def _signal(self) -> tuple[int, int, int] | None:
        path = self._signal_path()
        if path is None:
            return None
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return (0, 0, 0)  # nothing was ever put (creating the file is a change too)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _touch(self) -> None:
        """Replace the signal file (a new inode each time, so even two puts in one clock tick differ)."""
        path = self._signal_path()
        if path is None:
            return
        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
        try:
            temp.write_text(uuid.uuid4().hex)
            os.replace(temp, path)
        except OSError:  # the signal only saves reads; the message is in the database either way
            temp.unlink(missing_ok=True)

    async def put(self, thread_id: str, source: str, text: str, **data: Any) -> int:
        """Append one message for ``thread_id``, redacted; returns its id."""
        redactor = known_secrets()
        source, text, data = redactor.text(source), redactor.text(text), redactor.deep(data)

        def write(conn: Connection) -> int:
            cur = conn.execute(
                "INSERT INTO kasloop_inbox (thread_id, source, text, data, received_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                (thread_id, source, text, json.dumps(data, default=str), time.time()),
            )
            message_id = int(cur.fetchone()[0])  # RETURNING: both SQLite and Postgres (no lastrowid there)
            conn.commit()
            return message_id

        message_id = await self.db.call(write)
        self._touch()  # after the commit: a reader that sees the new signal finds the row
        return message_id

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
        signal = self._signal()
        quiet = self._quiet.get(thread_id)
        if signal is not None and quiet is not None and quiet[:2] == (signal, after) and quiet[2] < RECHECK_EVERY:
            self._quiet[thread_id] = (signal, after, quiet[2] + 1)
            return []

        def read_and_mark(conn: Connection) -> list[Row]:
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

        rows = await self.db.call(read_and_mark)
        if rows:
            self._quiet.pop(thread_id, None)
        else:
            self._quiet[thread_id] = (signal, after, 0)
        return [_item(r) for r in rows]
