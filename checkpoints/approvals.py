"""Durable approval requests and the audit trail of every decision.

A request is written when the graph pauses in ``human_approval``; it stays
``pending`` until a human decides it (from any process) or the thread moves
on, which makes it ``stale``. Decisions are recorded with who, which
channel, when and the argument hash they were bound to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from kasloop.checkpoints.database import Connection, Database

__all__ = ["ApprovalRecord", "ApprovalStore", "Decision"]


class Decision(TypedDict, total=False):
    """A human's answer to one approval request, as stored and handed to the graph.

    Made from a typed decision (``kasloop.guardrails.approvals.Approve / Edit / Reject / Respond``) by
    ``kasloop.guardrails.approvals.check_decision``, the one check every channel's decision passes.
    """

    decision: Literal["approve", "edit", "reject", "respond"]
    args: dict[str, Any]
    """New arguments (``edit``)."""
    reason: str
    """Why (``reject``): shown to the model."""
    text: str
    """Given to the model instead of a tool result (``respond``)."""
    arg_hash: str
    """The hash the decision is bound to (the request's, or the edited args')."""


class ApprovalRecord(TypedDict):
    approval_id: str
    thread: str
    batch_id: str
    call_id: str
    kind: str
    tool: str
    args: dict[str, Any]
    risk: str
    reason: str
    arg_hash: str
    status: str
    decision: Decision | None
    created_at: float
    expires_at: float
    decided_at: float | None
    decided_by: str | None
    channel: str | None
    path: str
    """Where in a team the request was made (``research-3f9a2c1b``: that specialist); ``""``: the thread's own agent."""


_COLUMNS = (
    "approval_id, thread_id, batch_id, call_id, kind, tool, args, risk, reason, arg_hash, status, decision,"
    " created_at, expires_at, decided_at, decided_by, channel, path"
)


def _record(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=row["approval_id"],
        thread=row["thread_id"],
        batch_id=row["batch_id"],
        call_id=row["call_id"],
        kind=row["kind"],
        tool=row["tool"],
        args=json.loads(row["args"]),
        risk=row["risk"],
        reason=row["reason"],
        arg_hash=row["arg_hash"],
        status=row["status"],
        decision=json.loads(row["decision"]) if row["decision"] else None,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        channel=row["channel"],
        path=row["path"] or "",
    )


class ApprovalStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, request: dict[str, Any]) -> bool:
        """Record a request; False if it was already recorded (the same id twice is one row)."""
        return 1 == await self.db.execute(
            f"INSERT INTO kasloop_approvals ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (
                request["approval_id"], request["thread"], request["batch_id"], request["call_id"], request["kind"],
                request["tool"], json.dumps(request["args"], ensure_ascii=False), request["risk"], request["reason"],
                request["arg_hash"], "pending", None, request["created_at"], request["expires_at"], None, None, None,
                request.get("path", ""),
            ),
        )

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM kasloop_approvals WHERE approval_id = ?", (approval_id,))
        return _record(row) if row else None

    async def batch(self, batch_id: str) -> list[ApprovalRecord]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM kasloop_approvals WHERE batch_id = ? ORDER BY rowid", (batch_id,)
        )
        return [_record(r) for r in rows]

    async def pending(self, thread_id: str | None = None) -> list[ApprovalRecord]:
        sql = f"SELECT {_COLUMNS} FROM kasloop_approvals WHERE status = 'pending'"
        params: tuple[Any, ...] = ()
        if thread_id is not None:
            sql += " AND thread_id = ?"
            params = (thread_id,)
        rows = await self.db.fetchall(sql + " ORDER BY created_at, rowid", params)
        return [_record(r) for r in rows]

    async def decide(
        self, approval_id: str, decision: Decision, *, by: str, channel: str, writes: Sequence[tuple[str, tuple[Any, ...]]] = ()
    ) -> bool:
        """Record a decision; False if the request was no longer pending (someone else decided).

        ``writes`` (statements such as an ``event_row``, or a budget raise in the thread's policy) run in the
        same transaction, only if the decision was recorded, so a crash can never keep one without the other.
        """
        status = {"approve": "approved", "edit": "edited", "reject": "rejected", "respond": "responded"}[decision["decision"]]

        def write(conn: Connection) -> bool:
            changed = conn.execute(
                "UPDATE kasloop_approvals SET status = ?, decision = ?, decided_at = ?, decided_by = ?, channel = ?"
                " WHERE approval_id = ? AND status = 'pending'",
                (status, json.dumps(decision, ensure_ascii=False), time.time(), by, channel, approval_id),
            ).rowcount == 1
            if changed:
                for statement in writes:
                    conn.execute(*statement)
            return bool(changed)

        return await self.db.write(write)

    async def expired(self, thread_id: str, now: float) -> list[ApprovalRecord]:
        """Pending requests of ``thread_id`` whose ``expires_at`` has passed."""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM kasloop_approvals WHERE thread_id = ? AND status = 'pending' AND expires_at < ? ORDER BY rowid",
            (thread_id, now),
        )
        return [_record(r) for r in rows]

    async def budget_granted(self, thread_id: str) -> bool:
        """Whether the thread's latest budget request was approved or edited: a thread still paused after that
        was not resumed since (every new pause at levels 2 and 3 makes a new, pending request)."""
        row = await self.db.fetchone(
            "SELECT status FROM kasloop_approvals WHERE thread_id = ? AND kind = 'budget' ORDER BY rowid DESC LIMIT 1", (thread_id,)
        )
        return row is not None and row[0] in ("approved", "edited")

    async def mark_stale(self, thread_id: str, keep_batch: str | None) -> None:
        """Requests of a thread that moved on can no longer be decided."""
        await self.db.execute(
            "UPDATE kasloop_approvals SET status = 'stale' WHERE thread_id = ? AND status = 'pending' AND batch_id != ?",
            (thread_id, keep_batch or ""),
        )
