"""The event log: an append-only record of every node, tool call, approval and error.

Rows are only ever inserted (a trigger refuses updates); ``kasloop history``
reads them back in order.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kasloop.checkpoints.sqlite import Database

__all__ = ["EventLog"]


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, thread_id: str, step: int, kind: str, **data: Any) -> None:
        await self.db.execute(
            "INSERT INTO kasloop_events (thread_id, ts, step, kind, data) VALUES (?, ?, ?, ?, ?)",
            (thread_id, time.time(), step, kind, json.dumps(data, default=str, ensure_ascii=False)),
        )

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
