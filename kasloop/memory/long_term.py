"""Tier-3 long-term memory: goals, learnings and notes that outlive any thread.

Scope: **one memory per kasloop database**, shared by all its threads: what
one thread learns, the next thread (or the same one a thousand cycles later)
can recall. Several agents sharing one database keep apart by ``namespace``
(``tool_settings.memory.namespace`` in kasloop.toml); items live in
LangGraph's SQLite store (table ``store``, same file and connection as the
checkpoints) under the namespace ``("kasloop", NAMESPACE, KIND)`` with KIND
one of ``goal``, ``learning`` or ``note``.

The items live in :class:`kasloop.checkpoints.store.KasloopStore`, a
LangGraph ``BaseStore`` whose ``asearch(ns, query=...)`` is keyword-ranked
(FTS5, bm25). :class:`LongTermMemory` is a thin typed API over it, which the ``remember`` / ``recall`` tools, the perceive node and
``kasloop memory`` use. Embeddings are not used: keyword search needs no
model and finds an exact learning among thousands.

For perceive: ``await relevant_learnings(memory, text)`` (the same as
``memory.search(text, kinds=["learning"], limit=3, trusted_only=True)``); an
empty or stopword-only text gives ``[]``.

An item may be marked ``untrusted``: written from outside content (a learning
made while an error page or a channel message was in the thread's context).
It is kept, listed, exported and found by ``search``, shown as
``[learning 1a2b3c4d untrusted]``, but never recalled into a prompt by perceive
(``relevant_learnings``), so no thread takes it as an instruction. The mark
sticks: adding the same text again never clears it (``kasloop memory delete``
does, with the item).

act runs every tool call inside :func:`memory_trust`: while the thread has
outside content in context, whatever that call adds to memory (``remember``,
any user tool) is marked untrusted; and a call that reads an untrusted item
(``recall``, ``search``, ``list``, ``get``) has its result treated as outside
content (it taints the thread), whatever tool made the call.

What an item is (kinds, key, limits) and its JSON and markdown export files are
:mod:`kasloop.memory.items`; this module keeps the items and says who may trust them.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiosqlite
from langgraph.store.base import GetOp, Op, PutOp, SearchItem, SearchOp
from pydantic import ValidationError

from kasloop.support.atomic_files import atomic_write
from kasloop.checkpoints.sqlite import SqliteDatabase
from kasloop.checkpoints.store import KasloopStore, fts_query, open_store
from kasloop.errors import KasloopError, UsageError
from kasloop.safety.secrets import known_secrets
from kasloop.memory.items import (
    DEFAULT_NAMESPACE,
    KINDS,
    NAMESPACE_PATTERN,
    MemoryItem,
    MemoryKind,
    _Entry,
    _entry_error,
    _item_from_value,
    _value,
    file_format,
    memory_key,
    parse_json,
    parse_markdown,
    to_json_text,
    to_markdown,
)

if TYPE_CHECKING:
    from kasloop.checkpoints.database import Database
    from kasloop.tools.base import ToolResources

__all__ = ["LongTermMemory", "MemoryTrust", "memory_trust", "relevant_learnings", "shared_memory"]

# --------------------------------------------------------------------------- trust of one tool call


@dataclass
class MemoryTrust:
    """What one tool call did with outside content, as far as memory is concerned."""

    outside: bool
    """The calling thread has outside content in context: items added now are marked untrusted."""
    read_untrusted: bool = False
    """An item marked untrusted was returned to the call (its result quotes outside content)."""


_TRUST: ContextVar[MemoryTrust | None] = ContextVar("kasloop_memory_trust", default=None)


@contextmanager
def memory_trust(outside: bool) -> Iterator[MemoryTrust]:
    """Run one tool call in this block (act does): see the module docstring."""
    trust = MemoryTrust(outside=outside)
    token = _TRUST.set(trust)
    try:
        yield trust
    finally:
        _TRUST.reset(token)


def _written_untrusted(untrusted: bool) -> bool:
    trust = _TRUST.get()
    return untrusted or (trust is not None and trust.outside)


def _seen(items: Sequence[MemoryItem]) -> None:
    trust = _TRUST.get()
    if trust is not None and any(item.untrusted for item in items):
        trust.read_untrusted = True


# --------------------------------------------------------------------------- the memory


class LongTermMemory:
    """Goals, learnings and notes of one kasloop database (one ``namespace`` of it), searchable by keyword.

    Open it with ``await LongTermMemory.open(db)`` on an open ``Database``;
    every method is async. ``memory.store`` is the LangGraph ``BaseStore``
    underneath, for graphs that want ``runtime.store``.
    """

    def __init__(self, store: KasloopStore, namespace: str = DEFAULT_NAMESPACE) -> None:
        if not re.fullmatch(NAMESPACE_PATTERN, namespace):
            raise UsageError(f"Memory namespace `{namespace}` must be 1 to 64 letters, digits, `_` or `-`; choose another name.")
        self.store = store
        self.namespace = namespace

    @classmethod
    async def open(cls, db: Database, namespace: str = DEFAULT_NAMESPACE) -> LongTermMemory:
        return cls(await open_store(db), namespace)

    def close(self) -> None:
        self.store.close()

    def _ns(self, kind: str | None = None) -> tuple[str, ...]:
        return ("kasloop", self.namespace) if kind is None else ("kasloop", self.namespace, kind)

    @staticmethod
    def _check_kind(kind: str) -> MemoryKind:
        if kind not in KINDS:
            raise UsageError(f"Memory kind `{kind}` does not exist; use one of {', '.join(KINDS)}.")
        return cast(MemoryKind, kind)

    async def add(
        self, text: str, *, kind: str = "note", tags: Iterable[str] = (), source: str | None = None, untrusted: bool = False
    ) -> MemoryItem:
        """Remember ``text``. The same kind and text again updates that item (``updated_at``, new tags) instead of adding one.

        ``untrusted``: the text was made from outside content (also implied inside :func:`memory_trust` of a
        thread with outside content in context); the mark is kept when the item is added again.

        Raises:
            UsageError: empty or too long text, unknown kind, bad tag.
        """
        kind = self._check_kind(kind)
        redactor = known_secrets()  # `kasloop memory add`, an import, a tool: no secret reaches the store or its index
        text, tags, source = redactor.text(text), [redactor.text(t) for t in tags], redactor.text(source) if source is not None else None
        try:
            entry = _Entry(kind=kind, text=text, tags=list(tags), source=source)
        except ValidationError as exc:
            raise UsageError(f"Cannot remember this: {_entry_error(exc)}.") from None
        key = memory_key(kind, entry.text)
        now = time.time()
        old = await self.get(key)
        item = MemoryItem(
            key=key, kind=kind, text=old.text if old else entry.text,
            tags=tuple(dict.fromkeys([*(old.tags if old else ()), *entry.tags])),
            source=entry.source if entry.source is not None else (old.source if old else None),
            created_at=old.created_at if old else now, updated_at=now,
            untrusted=_written_untrusted(untrusted) or (old is not None and old.untrusted),
        )
        await self.store.aput(self._ns(kind), key, _value(item), index=False)
        return item

    async def search(
        self, query: str, *, kinds: Iterable[str] | None = None, limit: int = 5, trusted_only: bool = False
    ) -> list[MemoryItem]:
        """Items matching ``query``'s words, most relevant first; ``[]`` for an empty or stopword-only query.

        ``trusted_only``: leave out items marked untrusted (still ``limit`` items when that many trusted ones match).
        """
        if limit < 1 or fts_query(query) is None:
            return []
        chosen = tuple(dict.fromkeys(self._check_kind(k) for k in kinds)) if kinds is not None else KINDS
        if not chosen:
            return []
        namespaces = [self._ns()] if set(chosen) == set(KINDS) else [self._ns(kind) for kind in chosen]
        if not trusted_only:
            ops: list[Op] = [SearchOp(ns, None, limit, 0, query) for ns in namespaces]
            found = [_item_from_value(h.key, h.value, h.score) for hits in await self.store.abatch(ops) for h in cast(list[SearchItem], hits)]
        else:
            found = []
            page = max(limit * 4, 20)
            for ns in namespaces:
                kept: list[MemoryItem] = []
                offset = 0
                while len(kept) < limit:
                    hits = cast(list[SearchItem], await self.store.asearch(ns, query=query, limit=page, offset=offset))
                    kept += [item for item in (_item_from_value(h.key, h.value, h.score) for h in hits) if not item.untrusted]
                    if len(hits) < page:
                        break
                    offset += page
                found += kept
        found.sort(key=lambda item: -(item.score or 0.0))
        _seen(found[:limit])
        return found[:limit]

    async def list(self, kind: str | None = None, limit: int | None = None) -> list[MemoryItem]:
        """Items newest first (by ``updated_at``), of one kind or all."""
        ns = self._ns(None if kind is None else self._check_kind(kind))
        hits = await self.store.asearch(ns, limit=-1)  # SQLite: LIMIT -1 is no limit
        items = sorted((_item_from_value(h.key, h.value) for h in hits), key=lambda i: (-i.updated_at, i.key))
        items = items if limit is None else items[: max(limit, 0)]
        _seen(items)
        return items

    async def get(self, key: str) -> MemoryItem | None:
        results = await self.store.abatch([GetOp(self._ns(kind), key) for kind in KINDS])
        for found in results:
            if found is not None:
                item = _item_from_value(found.key, found.value)  # type: ignore[union-attr]
                _seen([item])
                return item
        return None

    async def delete(self, key: str) -> bool:
        """Forget one item; ``False`` if there was none with this key."""
        item = await self.get(key)
        if item is None:
            return False
        await self.store.adelete(self._ns(item.kind), key)
        return True

    async def count(self) -> int:
        return len(await self.store.asearch(self._ns(), limit=-1))

    # -- export / import ----------------------------------------------------------------

    async def export(self, path: str | Path, fmt: str | None = None) -> int:
        """Write every item to ``path`` as JSON or markdown (from the suffix, or ``fmt``), atomically.

        The file is written to a temporary file in the same folder, fsynced and
        renamed over ``path``: a failure leaves the old file as it was.
        Returns the number of items written.
        """
        target = Path(path)
        fmt = file_format(target, fmt)
        items = sorted(await self.list(), key=lambda i: (KINDS.index(i.kind), i.created_at, i.key))
        text = to_markdown(items, self.namespace) if fmt == "markdown" else to_json_text(items, self.namespace)
        try:
            atomic_write(target, text.encode())
        except OSError as exc:
            raise KasloopError(f"Cannot write `{target}`: {exc.strerror or exc}; nothing was written and an existing file is unchanged.") from None
        return len(items)

    async def import_(self, path: str | Path, fmt: str | None = None) -> int:
        """Add (or restore) every item of a JSON or markdown export; the whole file is checked first.

        An item whose kind and text already exist is replaced by the file's
        version (tags, source, timestamps). Returns the number of items imported.

        Raises:
            UsageError: the file is missing or any entry is bad (named); nothing is imported then.
        """
        source = Path(path)
        fmt = file_format(source, fmt)
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"`{source}` does not exist; give the path of a memory export (.json or .md).") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"Cannot read `{source}`: {exc}.") from None
        raw = parse_markdown(text, source) if fmt == "markdown" else parse_json(text, source)
        now = time.time()
        items: dict[tuple[str, str], MemoryItem] = {}
        for where, data in raw:
            try:
                entry = _Entry.model_validate(data)
            except ValidationError as exc:
                raise UsageError(f"`{source}` {where}: {_entry_error(exc)}. Fix the file and import again; nothing was imported.") from None
            created = entry.created_at if entry.created_at is not None else now
            item = MemoryItem(
                key=memory_key(entry.kind, entry.text), kind=entry.kind, text=entry.text, tags=tuple(entry.tags),
                source=entry.source, created_at=created, updated_at=entry.updated_at if entry.updated_at is not None else created,
                untrusted=entry.untrusted,
            )
            items[(item.kind, item.key)] = item
        if items:
            await self.store.abatch([PutOp(self._ns(i.kind), i.key, _value(i), index=False) for i in items.values()])
        return len(items)


async def relevant_learnings(memory: LongTermMemory, text: str, limit: int = 3) -> list[MemoryItem]:
    """The trusted learnings most relevant to ``text`` (what perceive injects); ``[]`` when nothing matches.

    A learning marked untrusted is never among them: it may quote outside content, and perceive puts
    these in front of every thread's model.
    """
    return await memory.search(text, kinds=["learning"], limit=limit, trusted_only=True)


async def shared_memory(resources: ToolResources, namespace: str = DEFAULT_NAMESPACE) -> LongTermMemory:
    """The agent's memory for ``namespace``, opened once per ``ToolResources`` and closed with it.

    With no kasloop database (a graph served by ``langgraph dev``), memory
    lives in an in-process SQLite database for the life of the resources.
    """

    async def open_db() -> Any:
        pending = aiosqlite.connect(":memory:")
        # Nobody may close a graph served without a database: a daemon worker never keeps the process alive.
        pending._thread.daemon = True  # noqa: SLF001 - aiosqlite has no public switch for this
        conn = await pending
        conn.row_factory = sqlite3.Row
        return SqliteDatabase(conn, Path(":memory:"))

    async def close_db(db: Any) -> None:
        await db.conn.close()

    async def open_memory() -> LongTermMemory:
        db = resources.database
        if db is None:
            db = await resources.shared("memory.database", open_db, close_db)
        return await LongTermMemory.open(db, namespace)

    async def close_memory(memory: LongTermMemory) -> None:
        memory.close()

    return await resources.shared(f"memory.{namespace}", open_memory, close_memory)
