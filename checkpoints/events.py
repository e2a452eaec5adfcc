"""The event log: an append-only record of every node, tool call, approval and error.

Rows are only ever inserted (a trigger refuses updates); ``kasloop history``
reads them back in order.

An append costs no round trip of its own: the row is deferred to the
database's next unit of work (``Database.defer``), which for a node is the
commit of its own writes, so the log says what a node did exactly when the
node's result is saved, and a busy loop does not pay a hop and a commit per
event. Reads in this process (``history``) commit pending rows first; other
processes see them at that next commit, at the latest when the database is
closed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kasloop.checkpoints.sqlite import Database
from kasloop.logs import EVENTS_LOGGER, log_event

__all__ = ["EventLog", "event_row"]

_EVENTS = logging.getLogger(EVENTS_LOGGER)


def event_row(thread_id: str, step: int, kind: str, **data: Any) -> tuple[str, tuple[Any, ...]]:
    """The insert of one event, for a caller that must commit it together with its own write.

    Every event passes here, so this is also where it goes to the ``kasloop.events`` logger
    (a JSON line with ``kasloop.logs.configure()``; nothing when that logger is not enabled).
    """
    if _EVENTS.isEnabledFor(logging.INFO):
        log_event(thread_id, step, kind, data)
    return (
        "INSERT INTO kasloop_events (thread_id, ts, step, kind, data) VALUES (?, ?, ?, ?, ?)",
        (thread_id, time.time(), step, kind, json.dumps(data, default=str, ensure_ascii=False)),
    )


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, thread_id: str, step: int, kind: str, **data: Any) -> None:
        """Queue the row for the next commit (see the module docstring); ``flush`` commits it now."""
        self.db.defer(*event_row(thread_id, step, kind, **data))

    async def flush(self) -> None:
        """Commit the queued rows now."""
        await self.db.flush()

    async def history(self, thread_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, ts, step, kind, data FROM kasloop_events WHERE thread_id = ? ORDER BY id"
        params: tuple[Any, ...] = (thread_id,)
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT ?) ORDER BY id"  # the last `limit` events, oldest first
            params = (thread_id, limit)
        rows = await self.db.fetchall(sql, params)
        return [
            {"id": r["id"], "ts": r["ts"], "step": r["step"], "kind": r["kind"], **json.loads(r["data"])}
            for r in rows
        ]
