"""In-process ledger and event log, for graphs run without a kasloop database.

``graphs/agent.py``'s module-level ``graph`` (LangGraph Studio, ``langgraph
dev``) runs under the server's own checkpointer; these keep the ledger's
guarantees within that process.
"""

from __future__ import annotations

import time
from typing import Any

from kasloop.checkpoints.ledger import LedgerEntry

__all__ = ["MemoryEventLog", "MemoryLedger"]


class MemoryLedger:
    def __init__(self) -> None:
        self._rows: dict[str, LedgerEntry] = {}

    async def claim(self, key: str, *, thread_id: str, call_id: str, tool: str, arg_hash: str, idempotent: bool) -> LedgerEntry | None:
        existing = self._rows.get(key)
        if existing is None:
            self._rows[key] = LedgerEntry(key, tool, arg_hash, idempotent, None)
        return existing

    async def record_result(self, key: str, result: dict[str, Any]) -> None:
        entry = self._rows[key]
        self._rows[key] = LedgerEntry(entry.key, entry.tool, entry.arg_hash, entry.idempotent, result)


class MemoryEventLog:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def append(self, thread_id: str, step: int, kind: str, **data: Any) -> None:
        self.events.append({"thread_id": thread_id, "ts": time.time(), "step": step, "kind": kind, **data})
