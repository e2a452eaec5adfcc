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
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import aiosqlite
from langgraph.store.base import GetOp, Op, PutOp, SearchItem, SearchOp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kasloop.support.atomic_files import atomic_write
from kasloop.checkpoints.sqlite import SqliteDatabase
from kasloop.checkpoints.store import KasloopStore, fts_query, open_store
from kasloop.errors import KasloopError, UsageError
from kasloop.guardrails.secrets import known_secrets

if TYPE_CHECKING:
    from kasloop.checkpoints.database import Database
    from kasloop.tools.base import ToolResources

__all__ = [
    "DEFAULT_NAMESPACE",
    "KINDS",
    "KasloopStore",
    "LongTermMemory",
    "MemoryItem",
    "MemoryKind",
    "MemoryTrust",
    "fts_query",
    "memory_trust",
    "relevant_learnings",
    "shared_memory",
]

MemoryKind = Literal["goal", "learning", "note"]
KINDS: tuple[MemoryKind, ...] = get_args(MemoryKind)
DEFAULT_NAMESPACE = "memory"
NAMESPACE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TEXT_CHARS = 20_000
MAX_TAGS = 20
FORMATS = ("json", "markdown")

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


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class MemoryItem:
    """One remembered goal, learning or note. ``key`` is derived from kind + text, so adding twice is one item."""

    key: str
    kind: MemoryKind
    text: str
    tags: tuple[str, ...] = ()
    source: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    score: float | None = field(default=None, compare=False)
    """bm25 relevance from ``search`` (higher is better); ``None`` elsewhere."""
    untrusted: bool = False
    """Written from outside content: never recalled into a prompt (see the module docstring)."""

    def to_json(self) -> dict[str, Any]:
        data = {
            "key": self.key, "kind": self.kind, "text": self.text, "tags": list(self.tags), "source": self.source,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }
        if self.untrusted:
            data["untrusted"] = True
        return data

    def line(self, width: int = 300) -> str:
        """One line for a model or a terminal: ``[learning 1a2b3c4d] text (tags: a, b)`` (``untrusted`` after the key if so)."""
        text = " ".join(self.text.split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        tags = f" (tags: {', '.join(self.tags)})" if self.tags else ""
        mark = " untrusted" if self.untrusted else ""
        return f"[{self.kind} {self.key[:8]}{mark}] {text}{tags}"


def _normalise_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def memory_key(kind: str, text: str) -> str:
    """The item key: same kind and text (whitespace aside) → same key."""
    canonical = " ".join(text.split())
    return hashlib.sha256(f"{kind}\x00{canonical}".encode()).hexdigest()[:16]


class _Entry(BaseModel):
    """One item as written in an export file (or given to ``add``); validated before anything is written."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    kind: MemoryKind = "note"
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    source: str | None = Field(default=None, max_length=500)
    created_at: float | None = Field(default=None, ge=0)
    updated_at: float | None = Field(default=None, ge=0)
    untrusted: bool = False

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        value = _normalise_text(value)
        if not value:
            raise ValueError("text is empty")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        tags: list[str] = []
        for tag in value:
            tag = tag.strip()
            if not tag or len(tag) > 50 or "\n" in tag:
                raise ValueError(f"tag {json.dumps(tag, ensure_ascii=False)} must be 1 to 50 characters on one line")
            if tag not in tags:
                tags.append(tag)
        return tags


def _entry_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "entry"
    return f"`{where}`: {err['msg']}"


def _item_from_value(key: str, value: dict[str, Any], score: float | None = None) -> MemoryItem:
    return MemoryItem(
        key=key, kind=value["kind"], text=value["text"], tags=tuple(value.get("tags") or ()), source=value.get("source"),
        created_at=float(value["created_at"]), updated_at=float(value["updated_at"]), score=score,
        untrusted=value.get("untrusted") is True,
    )


def _value(item: MemoryItem) -> dict[str, Any]:
    return {k: v for k, v in item.to_json().items() if k != "key"}


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


# --------------------------------------------------------------------------- file formats


def file_format(path: Path, fmt: str | None) -> str:
    """``json`` or ``markdown``: the explicit ``fmt``, else from the suffix."""
    if fmt is not None:
        if fmt in ("md",):
            return "markdown"
        if fmt not in FORMATS:
            raise UsageError(f"Format `{fmt}` is not supported; use json or markdown.")
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".md", ".markdown"):
        return "markdown"
    raise UsageError(f"Cannot tell the format of `{path}` from its name; use a .json or .md file or pass --format json|markdown.")


def to_json_text(items: Sequence[MemoryItem], namespace: str) -> str:
    doc = {"kasloop_memory": 1, "namespace": namespace, "items": [i.to_json() for i in items]}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def parse_json(text: str, source: Path) -> list[tuple[str, Any]]:
    """Entries of a JSON export (the object ``to_json_text`` writes, or a bare list of items)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"`{source}` is not valid JSON (line {exc.lineno}: {exc.msg}); nothing was imported.") from None
    entries = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise UsageError(f"`{source}` must hold a list of items or an object with `items`; nothing was imported.")
    return [(f"entry {n} (items[{n - 1}])", entry) for n, entry in enumerate(entries, start=1)]


_HEADINGS: dict[MemoryKind, str] = {"goal": "Goals", "learning": "Learnings", "note": "Notes"}
_META = re.compile(r"^<!-- kasloop (\{.*\}) -->$")


def _meta_comment(item: MemoryItem) -> str:
    meta = {k: v for k, v in item.to_json().items() if k not in ("kind", "text")}
    # `<` and `>` escaped so no value can close the HTML comment.
    return "<!-- kasloop " + json.dumps(meta, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e") + " -->"


def to_markdown(items: Sequence[MemoryItem], namespace: str) -> str:
    """A readable export: one ``## Kind`` section per kind, one bullet per item, metadata in an HTML comment.

    Continuation lines of a multi-line text are indented two spaces, so the
    file parses back to exactly the same items.
    """
    lines = [f"# kasloop memory `{namespace}`", "", f"{len(items)} items. Import with `kasloop memory import FILE`.", ""]
    for kind in KINDS:
        chosen = [i for i in items if i.kind == kind]
        if not chosen:
            continue
        lines += [f"## {_HEADINGS[kind]}", ""]
        for item in chosen:
            first, *rest = item.text.split("\n")
            lines.append(f"- {first}")
            lines += [f"  {line}" if line else "" for line in rest]
            lines += [f"  {_meta_comment(item)}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def parse_markdown(text: str, source: Path) -> list[tuple[str, Any]]:
    """Entries of a markdown export; hand-written files work too (``## Learnings`` then ``- text`` bullets)."""
    headings = {name.lower(): kind for kind, name in _HEADINGS.items()} | {kind: kind for kind in KINDS}
    entries: list[tuple[str, Any]] = []
    kind: str | None = None
    current: tuple[int, list[str]] | None = None

    def finish() -> None:
        if current is None:
            return
        line_no, body = current
        while body and not body[-1].strip():
            body.pop()
        data: dict[str, Any] = {"kind": kind}
        if body and len(body) > 1 and (m := _META.match(body[-1].strip())):
            try:
                meta = json.loads(m.group(1))
            except json.JSONDecodeError as exc:
                raise UsageError(f"`{source}` line {line_no + len(body) - 1}: the kasloop comment is not valid JSON ({exc.msg}); nothing was imported.") from None
            if not isinstance(meta, dict):
                raise UsageError(f"`{source}` line {line_no + len(body) - 1}: the kasloop comment must be a JSON object; nothing was imported.")
            data |= {k: v for k, v in meta.items() if k not in ("kind", "text")}
            body = body[:-1]
        data["text"] = "\n".join(body)
        entries.append((f"entry {len(entries) + 1} (line {line_no})", data))

    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            finish()
            current = None
            name = line[3:].strip().lower()
            if name not in headings:
                raise UsageError(
                    f"`{source}` line {number}: unknown section `{line[3:].strip()}`; use ## Goals, ## Learnings or ## Notes. Nothing was imported."
                )
            kind = headings[name]
        elif line.startswith("- ") or line == "-":
            finish()
            if kind is None:
                raise UsageError(f"`{source}` line {number}: an item before any ## Goals / ## Learnings / ## Notes heading; nothing was imported.")
            current = (number, [line[2:]])
        elif current is not None and (line.startswith("  ") or not line.strip()):
            current[1].append(line[2:] if line.startswith("  ") else "")
        elif kind is None:
            continue  # title and introduction before the first section
        elif line.strip():
            raise UsageError(f"`{source}` line {number}: expected `- text` or a two-space indented line; nothing was imported.")
    finish()
    return entries
