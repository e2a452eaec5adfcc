"""The thread registry: each thread's goal, stored policy and last known status.

The policy (autonomy, tools, rules, budgets, workspace, model) is written once
when the thread starts and read back on every resume, so the limits a thread
runs under cannot be changed by the process that resumes it, by the model or
by a tool.

The goal and the policy (config values) are redacted before they are written
(``kasloop.safety.secrets.known_secrets``): a secret pasted into a goal or a
``system_prompt`` is stored as ``[redacted:NAME]``. Secrets belong in
environment variables (``*_env`` settings), never in config values.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypedDict

from kasloop.checkpoints.database import Database
from kasloop.safety.secrets import known_secrets

__all__ = ["ThreadRecord", "ThreadStore", "policy_row"]


class ThreadRecord(TypedDict):
    thread: str
    goal: str
    policy: dict[str, Any]
    status: str
    created_at: float
    updated_at: float


def _record(row: Any) -> ThreadRecord:
    return ThreadRecord(
        thread=row["thread_id"], goal=row["goal"], policy=json.loads(row["policy"]), status=row["status"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


class ThreadStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, thread_id: str, goal: str, policy: dict[str, Any]) -> None:
        now = time.time()
        redactor = known_secrets()
        await self.db.execute(
            "INSERT INTO kasloop_threads (thread_id, goal, policy, status, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (thread_id, redactor.text(goal), json.dumps(redactor.deep(policy)), "running", now, now),
        )

    async def get(self, thread_id: str) -> ThreadRecord | None:
        row = await self.db.fetchone("SELECT * FROM kasloop_threads WHERE thread_id = ?", (thread_id,))
        return _record(row) if row else None

    async def set_status(self, thread_id: str, status: str) -> None:
        await self.db.execute(
            "UPDATE kasloop_threads SET status = ?, updated_at = ? WHERE thread_id = ?", (status, time.time(), thread_id)
        )

    async def all(self) -> list[ThreadRecord]:
        rows = await self.db.fetchall("SELECT * FROM kasloop_threads ORDER BY updated_at DESC")
        return [_record(r) for r in rows]


def policy_row(thread_id: str, policy: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The update that replaces a thread's stored policy, committed with the decision or command behind it.

    Only a human action (``kasloop budget``, approving a budget request) writes it; nothing a model or
    tool says can reach it."""
    return (
        "UPDATE kasloop_threads SET policy = ?, updated_at = ? WHERE thread_id = ?",
        (json.dumps(known_secrets().deep(policy)), time.time(), thread_id),
    )
