"""Checkpoint pruning: keep the newest K checkpoints of each thread, so the file grows with work, not with time.

LangGraph writes one checkpoint per node and keeps them all (time travel).
An agent that runs for days would fill the disk with history nobody reads:
kasloop keeps the newest ``keep`` checkpoints per thread and namespace (the
newest one is what ``resume`` and pending approvals need; the others allow a
short look back) and deletes the rest together with their pending writes.
The event log and the act ledger, not old checkpoints, are the record of
what happened.

The event log has a retention policy of its own (``prune_events``): it is
append-only (a trigger refuses every UPDATE, so no row is ever rewritten),
and old rows can only go as a whole, oldest first, by age or by count.
"""

from __future__ import annotations

import time

from kasloop.checkpoints.database import Connection, Database

__all__ = ["prune_events", "prune_thread"]


async def prune_thread(db: Database, thread_id: str, keep: int) -> int:
    """Delete all but the newest ``keep`` checkpoints of ``thread_id`` (per namespace); returns how many went."""
    return await db.saver.aprune_keep(thread_id, keep)


async def prune_events(db: Database, thread_id: str, *, keep_days: float | None, keep_last: int | None, now: float | None = None) -> int:
    """Apply the event-log retention policy to one thread: drop rows older than ``keep_days`` and all but
    the newest ``keep_last``. ``None`` switches a limit off. Returns how many rows went."""
    if keep_days is None and keep_last is None:
        return 0
    cutoff = (now if now is not None else time.time()) - keep_days * 86400 if keep_days is not None else None

    def prune(conn: Connection) -> int:
        gone = 0
        if cutoff is not None:
            gone += conn.execute("DELETE FROM kasloop_events WHERE thread_id = ? AND ts < ?", (thread_id, cutoff)).rowcount
        if keep_last is not None:
            gone += conn.execute(
                "DELETE FROM kasloop_events WHERE thread_id = ? AND id <= (SELECT id FROM kasloop_events WHERE thread_id = ?"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (thread_id, thread_id, keep_last),
            ).rowcount
        conn.commit()
        return gone

    return await db.call(prune)
