"""In-process ledger, event log and inbox, for graphs run without a kasloop database.

``graphs/agent.py``'s module-level ``graph`` (LangGraph Studio, ``langgraph
dev``) runs under the server's own checkpointer; these keep the ledger's
guarantees within that process.
"""

from __future__ import annotations

import time
from typing import Any

from kasloop.checkpoints.inbox import InboxItem
from kasloop.checkpoints.ledger import LedgerEntry

__all__ = ["MemoryEventLog", "MemoryInbox", "MemoryLedger"]


class MemoryLedger:
    def __init__(self) -> None:
        self._rows: dict[str, LedgerEntry] = {}

    async def claim(self, key: str, *, thread_id: str, call_id: str, tool: str, arg_hash: str, idempotent: bool) -> LedgerEntry | None:
        existing = self._rows.get(key)
        if existing is None:
            self._rows[key] = LedgerEntry(key, tool, arg_hash, idempotent, None)
        return existing

    async def record_result(self, key: str, result: dict[str, Any], *, now: bool = True) -> None:
        entry = self._rows[key]
        self._rows[key] = LedgerEntry(entry.key, entry.tool, entry.arg_hash, entry.idempotent, result)


class MemoryEventLog:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def append(self, thread_id: str, step: int, kind: str, **data: Any) -> None:
        self.events.append({"thread_id": thread_id, "ts": time.time(), "step": step, "kind": kind, **data})


class MemoryInbox:
    """An in-process inbox for graphs built without a database (same interface as ``Inbox``)."""

    def __init__(self) -> None:
        self.items: list[InboxItem] = []

    async def put(self, thread_id: str, source: str, text: str, **data: Any) -> int:
        item = InboxItem(id=len(self.items) + 1, thread_id=thread_id, source=source, text=text, data=data, received_at=time.time())
        self.items.append(item)
        return item.id

    async def take(self, thread_id: str, after: int = 0) -> list[InboxItem]:
        return [i for i in self.items if i.thread_id == thread_id and i.id > after]
