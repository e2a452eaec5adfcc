"""The event log: an append-only record of every node, tool call, approval and error.

Rows are only ever inserted (a trigger refuses updates); ``kasloop history``
reads them back in order.

Every event's data is redacted (``kasloop.safety.secrets.known_secrets``: every
secret this process knows, in every encoding) before its row is built and
before it is logged, whoever appends it: the graph's nodes, approvals,
``Agent.run`` (the goal) and ``tell``, the channels.

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

from kasloop.checkpoints.database import Database
from kasloop.support.logs import EVENTS_LOGGER, log_event
from kasloop.safety.secrets import known_secrets

__all__ = ["EventLog", "event_row"]

_EVENTS = logging.getLogger(EVENTS_LOGGER)


def event_row(thread_id: str, step: int, kind: str, **data: Any) -> tuple[str, tuple[Any, ...]]:
    """The insert of one event, for a caller that must commit it together with its own write.

    Every event passes here, so this is also where it goes to the ``kasloop.events`` logger
    (a JSON line with ``kasloop.support.logs.configure()``; nothing when that logger is not enabled), and where
    its data is redacted.
    """
    data = known_secrets().deep(data)
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
        """The thread's events, oldest first, with those of its team's specialists (thread ``T/NAME-…``,
        marked with their ``path``)."""
        # "T/" <= sub-thread < "T0" ('0' follows '/'): a range the thread index serves.
        sql = "SELECT id, ts, step, kind, data, thread_id FROM kasloop_events WHERE thread_id = ? OR (thread_id > ? AND thread_id < ?) ORDER BY id"
        params: tuple[Any, ...] = (thread_id, thread_id + "/", thread_id + "0")
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT ?) AS newest ORDER BY id"  # Postgres wants the alias  # the last `limit` events, oldest first
            params = (*params, limit)
        rows = await self.db.fetchall(sql, params)
        return [
            {"id": r["id"], "ts": r["ts"], "step": r["step"], "kind": r["kind"], **_path(r["thread_id"], thread_id), **json.loads(r["data"])}
            for r in rows
        ]


def _path(row_thread: str, thread_id: str) -> dict[str, str]:
    return {} if row_thread == thread_id else {"path": row_thread[len(thread_id) + 1:]}
