"""The act ledger: an intent row before every tool call, its result after.

This is what makes resume safe whatever the checkpoint durability: a call
whose result is recorded is never executed again (the recorded result is
reused); a call with an intent but no result crashed mid-way, and is re-run
only if the tool is idempotent — otherwise its outcome is unknown and a
human or self-diagnosis decides.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from kasloop.checkpoints.sqlite import Database

__all__ = ["Ledger", "LedgerEntry", "idempotency_key"]


def idempotency_key(thread_id: str, turn: int, call_id: str, attempt: int = 0) -> str:
    """Stable key of one execution attempt of one tool call (also sent to far sides that support it)."""
    raw = json.dumps([thread_id, turn, call_id, attempt])
    return "ksl-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    tool: str
    arg_hash: str
    idempotent: bool
    result: dict[str, Any] | None


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def lookup(self, key: str) -> LedgerEntry | None:
        row = await self.db.fetchone(
            "SELECT key, tool, arg_hash, idempotent, result FROM kasloop_ledger WHERE key = ?", (key,)
        )
        if row is None:
            return None
        result = json.loads(row["result"]) if row["result"] is not None else None
        return LedgerEntry(row["key"], row["tool"], row["arg_hash"], bool(row["idempotent"]), result)

    async def claim(
        self, key: str, *, thread_id: str, call_id: str, tool: str, arg_hash: str, idempotent: bool
    ) -> LedgerEntry | None:
        """Return the existing entry for ``key``; if there is none, commit an intent row and return None."""

        def claim_row(conn: Any) -> Any:
            row = conn.execute(
                "SELECT key, tool, arg_hash, idempotent, result FROM kasloop_ledger WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO kasloop_ledger (key, thread_id, call_id, tool, arg_hash, idempotent, intent_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, thread_id, call_id, tool, arg_hash, int(idempotent), time.time()),
                )
                conn.commit()
            return row

        row = await self.db.call(claim_row)
        if row is None:
            return None
        result = json.loads(row["result"]) if row["result"] is not None else None
        return LedgerEntry(row["key"], row["tool"], row["arg_hash"], bool(row["idempotent"]), result)

    async def record_intent(
        self, key: str, *, thread_id: str, call_id: str, tool: str, arg_hash: str, idempotent: bool
    ) -> None:
        """Committed before the tool runs."""
        await self.db.execute(
            "INSERT OR IGNORE INTO kasloop_ledger (key, thread_id, call_id, tool, arg_hash, idempotent, intent_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, thread_id, call_id, tool, arg_hash, int(idempotent), time.time()),
        )

    async def record_result(self, key: str, result: dict[str, Any]) -> None:
        """Committed right after the tool returns."""
        await self.db.execute(
            "UPDATE kasloop_ledger SET result = ?, result_at = ? WHERE key = ?",
            (json.dumps(result, ensure_ascii=False), time.time(), key),
        )

    async def entries(self, thread_id: str) -> list[LedgerEntry]:
        rows = await self.db.fetchall(
            "SELECT key, tool, arg_hash, idempotent, result FROM kasloop_ledger WHERE thread_id = ? ORDER BY intent_at",
            (thread_id,),
        )
        return [
            LedgerEntry(r["key"], r["tool"], r["arg_hash"], bool(r["idempotent"]), json.loads(r["result"]) if r["result"] else None)
            for r in rows
        ]
