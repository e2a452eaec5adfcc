"""The act ledger: an intent row before every tool call, its result after.

This is what makes resume safe whatever the checkpoint durability: a call
whose result is recorded is never executed again (the recorded result is
reused, and only for the same tool and arguments: ``LedgerEntry.matches``);
a call with an intent but no result crashed mid-way, and is re-run only if
the tool is idempotent — otherwise its outcome is unknown and a human or
self-diagnosis decides.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from kasloop.checkpoints.database import Connection, Database

__all__ = ["Ledger", "LedgerEntry", "idempotency_key"]


def idempotency_key(thread_id: str, turn: int, call_id: str, attempt: int = 0) -> str:
    """Stable key of one execution attempt of one tool call (also sent to far sides that support it).

    ``call_id`` is the id kasloop gave the call (unique in its model turn), never the model's own id:
    a model that gives two calls one id must not make them one ledger row.
    """
    raw = json.dumps([thread_id, turn, call_id, attempt])
    return "ksl-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    tool: str
    arg_hash: str
    idempotent: bool
    result: dict[str, Any] | None

    def matches(self, tool: str, arg_hash: str) -> bool:
        """Whether this entry was recorded for ``tool`` with these arguments: a row is reused only then.

        A key names one call kasloop proposed; a row under it for other arguments means the key was
        reused (a rewritten history, a bug): act reports a conflict instead of a result that never ran.
        """
        return self.tool == tool and self.arg_hash == arg_hash


def _entry(row: Any) -> LedgerEntry:
    result = json.loads(row["result"]) if row["result"] is not None else None
    return LedgerEntry(row["key"], row["tool"], row["arg_hash"], bool(row["idempotent"]), result)


_SELECT = "SELECT key, tool, arg_hash, idempotent, result FROM kasloop_ledger"


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self, key: str, *, thread_id: str, call_id: str, tool: str, arg_hash: str, idempotent: bool
    ) -> LedgerEntry | None:
        """Return the existing entry for ``key``; if there is none, commit an intent row and return None.

        One round trip: the look-up and the intent are a single unit of work
        (rolled back whole if it fails).
        """

        def claim_row(conn: Connection) -> Any:
            row = conn.execute(f"{_SELECT} WHERE key = ?", (key,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO kasloop_ledger (key, thread_id, call_id, tool, arg_hash, idempotent, intent_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, thread_id, call_id, tool, arg_hash, int(idempotent), time.time()),
                )
            return row

        row = await self.db.write(claim_row)
        return None if row is None else _entry(row)

    async def record_result(self, key: str, result: dict[str, Any], *, now: bool = True) -> None:
        """Committed right after the tool returns (``now``), or with the node's checkpoint.

        act passes ``now=False`` for idempotent tools only: if the process dies before that
        commit, the call is run again, which an idempotent tool makes harmless; a side effect
        that must not repeat is always recorded at once.
        """
        sql = "UPDATE kasloop_ledger SET result = ?, result_at = ? WHERE key = ?"
        params = (json.dumps(result, ensure_ascii=False), time.time(), key)
        if now:
            await self.db.execute(sql, params)
        else:
            self.db.defer(sql, params)

    async def entries(self, thread_id: str) -> list[LedgerEntry]:
        rows = await self.db.fetchall(f"{_SELECT} WHERE thread_id = ? ORDER BY intent_at, rowid", (thread_id,))
        return [_entry(r) for r in rows]
