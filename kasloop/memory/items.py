"""One long-term memory item: its kinds, its key, its limits, and the JSON and markdown files it is exported to.

Why a module of its own: what an item is (a goal, learning or note, keyed by kind and text so that adding it
twice is one item, with bounded text and tags) and how it is written down (the JSON export, and the
markdown export a person can read, edit and import back) need no store and no database.
:mod:`kasloop.memory.long_term` keeps the items in the kasloop database and builds on these; the
``remember`` tool and ``kasloop memory`` take the kinds and limits from here. Names with a ``_`` are shared
with :mod:`kasloop.memory.long_term` only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kasloop.errors import UsageError

__all__ = [
    "DEFAULT_NAMESPACE",
    "FORMATS",
    "KINDS",
    "MAX_TAGS",
    "MAX_TEXT_CHARS",
    "NAMESPACE_PATTERN",
    "MemoryItem",
    "MemoryKind",
    "file_format",
    "memory_key",
    "parse_json",
    "parse_markdown",
    "to_json_text",
    "to_markdown",
]

MemoryKind = Literal["goal", "learning", "note"]
KINDS: tuple[MemoryKind, ...] = get_args(MemoryKind)
DEFAULT_NAMESPACE = "memory"
NAMESPACE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TEXT_CHARS = 20_000
MAX_TAGS = 20
FORMATS = ("json", "markdown")


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
    """Written from outside content: never recalled into a prompt (see :mod:`kasloop.memory.long_term`)."""

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
