"""The ``files`` family: read, write, append, list, search, move and delete inside the workspace.

Every path is resolved (symlinks included) and must stay inside the
workspace root; writes are atomic (temp file in the same folder, fsync,
rename, fsync of the folder), so a crash never leaves a half-written file.
``files_delete`` and ``files_move`` act on a symlink itself, never on what
it points to. ``files_search`` walks without following symlinked folders
and reads only regular files inside the workspace, at most
:data:`MAX_FILE_BYTES` each and :data:`MAX_SEARCH_FILES` in all.

kasloop's own state (its home with the database, the config in use, secret
files: ``ctx.resources.protected``) is never a target: ``run_tool`` refuses
any path argument that names it (every argument here is declared a path with
``arg_meta``), and ``files_list``/``files_search`` leave it out of what they
show, so listing the default workspace ``.`` works and shows neither
``.kasloop/`` nor ``kasloop.toml``. A file name that is not valid UTF-8 is
shown with its bad bytes escaped (``\\xNN``), never passed on as raw
surrogates.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kasloop.support.atomic_files import atomic_write
from kasloop.safety.protected import ProtectedPaths
from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult, arg_meta, protected_refusal, text_safe

__all__ = ["FILES_TOOLS", "FilesSettings", "seen_after", "atomic_write", "resolve_in_workspace", "shown_name"]

MAX_FILE_BYTES = 1_000_000
MAX_LIST_ENTRIES = 500
MAX_SEARCH_FILES = 5_000
MAX_SEARCH_MATCHES = 200
SEARCH_STOPPED = f"[... stopped after {MAX_SEARCH_FILES} files or {MAX_SEARCH_MATCHES} matches; narrow the search]"


def resolve_in_workspace(workspace: Path, path: str) -> Path:
    """Resolve ``path`` against the workspace; refuse anything that lands outside it.

    ``..`` segments, absolute paths elsewhere and symlinks (anywhere on the
    path) pointing out of the root are all refused with ``denied``.
    """
    root = workspace.resolve()
    if "\x00" in path:
        raise ToolFailure("bad_args", "path contains a NUL byte")
    candidate = Path(path)
    target = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if target != root and root not in target.parents:
        raise ToolFailure(
            "denied",
            f"path `{path}` is outside the workspace; use a path relative to the workspace root",
        )
    return target


def _check_size(content: str) -> bytes:
    data = content.encode()
    if len(data) > MAX_FILE_BYTES:
        raise ToolFailure("bad_args", f"content is {len(data)} bytes; the limit is {MAX_FILE_BYTES}")
    return data


class ReadArgs(BaseModel):
    path: str = Field(description="Path relative to the workspace root.", json_schema_extra=arg_meta("path", acts_as="files_read"))


class DeleteArgs(BaseModel):
    path: str = Field(description="Path relative to the workspace root.", json_schema_extra=arg_meta("path", acts_as="files_delete", tree=True))


class WriteArgs(BaseModel):
    path: str = Field(description="Path relative to the workspace root.", json_schema_extra=arg_meta("path", acts_as="files_write"))
    content: str = Field(description="Text to write.")


class ListArgs(BaseModel):
    path: str = Field(default=".", description="Folder relative to the workspace root; `.` is the root.", json_schema_extra=arg_meta("path"))


async def _read(args: ReadArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if not target.is_file():
        raise ToolFailure("bad_args", f"`{args.path}` is not a file in the workspace; see what exists with files_list (path `.` is the root)")
    data = await asyncio.to_thread(target.read_bytes)
    if b"\x00" in data[:1024]:
        return f"[binary file, {len(data)} bytes; not shown]"
    return data.decode(errors="replace")


class FilesSettings(BaseModel):
    """``[tool_settings.files]``."""

    model_config = ConfigDict(extra="forbid")

    overwrite_unread: bool = False
    """Let ``files_write`` replace a file the agent has not read (or written) in this task."""


OVERWRITE_UNREAD = (
    "`{path}` already exists and you have not read it: files_write would replace all of it. "
    "Read it first with files_read (then write the whole new content), or add to it with files_append."
)


FILES_SEEN_KEPT = 200
"""Files the agent read or wrote in a task that are remembered for the overwrite check (newest kept)."""
_SEEING_TOOLS = frozenset({"files_read", "files_write", "files_append"})


def seen_after(seen: list[str], tool: str, args: Mapping[str, Any], workspace: Path) -> list[str]:
    """``seen`` (the task's ``files_seen``) after a successful call: a file read or written is known, so
    files_write may replace it later in the task, however long ago (working memory may have dropped the call)."""
    path = args.get("path")
    if tool not in _SEEING_TOOLS or not isinstance(path, str):
        return seen
    try:
        target = str(resolve_in_workspace(workspace, path))
    except ToolFailure:
        return seen
    return [*(p for p in seen if p != target), target][-FILES_SEEN_KEPT:]


def _check_overwrite(target: Path, path: str, ctx: ToolContext) -> None:
    """Inside an agent run, replacing an existing file the agent has not read (or written) in this task is
    refused (measured: a small model asked to add a line to a file wrote just that line over it, and
    reported done). What the task read and wrote is its state's ``files_seen``."""
    if ctx.run is None or ctx.retry or not target.is_file():
        return  # no agent run (a direct call), a retry (its first attempt may have written it), or a new file
    settings = FilesSettings.model_validate(ctx.extra.get("files") or {})
    if settings.overwrite_unread or str(target) in (ctx.state.get("files_seen") or ()):
        return
    raise ToolFailure("bad_args", OVERWRITE_UNREAD.format(path=path))


async def _write(args: WriteArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if target.is_dir():
        raise ToolFailure("bad_args", f"`{args.path}` is a folder; give a file path")
    _check_overwrite(target, args.path, ctx)
    data = _check_size(args.content)
    await asyncio.to_thread(atomic_write, target, data)
    return f"Wrote {len(data)} bytes to {args.path}."


async def _append(args: WriteArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if target.is_dir():
        raise ToolFailure("bad_args", f"`{args.path}` is a folder; give a file path")
    data = _check_size(args.content)

    def append() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    await asyncio.to_thread(append)
    return f"Appended {len(data)} bytes to {args.path}."


def shown_name(name: str) -> str:
    """A file name as the model sees it: bytes that are not UTF-8 written as ``\\xNN`` (storable as JSON)."""
    return text_safe(name)


def _visible(entries: list[Path], protected: ProtectedPaths) -> list[Path]:
    """``entries`` without kasloop's own state (home, database, config, secret files)."""
    if not protected:
        return entries
    inodes = protected.inodes() if any(_linked(p) for p in entries) else {}
    return [p for p in entries if protected.violation(p, inodes=inodes) is None]


def _linked(path: Path) -> bool:
    try:
        return path.stat().st_nlink > 1 and path.is_file()
    except OSError:
        return False


def _list_entries(target: Path, protected: ProtectedPaths) -> list[Path]:
    return sorted(_visible(list(target.iterdir()), protected), key=lambda p: os.fsencode(p.name))


async def _list(args: ListArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if not target.is_dir():
        raise ToolFailure("bad_args", f"`{args.path}` is not a folder in the workspace; the workspace root itself is `.`")
    entries = await asyncio.to_thread(_list_entries, target, ctx.resources.protected)
    lines = [
        f"{shown_name(p.name)}/" if p.is_dir() else f"{shown_name(p.name)} ({p.lstat().st_size} bytes)" for p in entries[:MAX_LIST_ENTRIES]
    ]
    if len(entries) > MAX_LIST_ENTRIES:
        lines.append(f"[... {len(entries) - MAX_LIST_ENTRIES} more entries]")
    return "\n".join(lines) if lines else "(empty folder)"


def _entry(workspace: Path, path: str) -> Path:
    """The directory entry ``path`` names (a symlink stays a symlink), inside the workspace.

    Its folder is resolved and jailed; its last part is kept as is, so an
    operation on a link acts on the link, never on the file it points to.
    """
    resolve_in_workspace(workspace, path)
    normalised = os.path.normpath(path)
    name = os.path.basename(normalised)
    if name in ("", ".", ".."):
        raise ToolFailure("denied", f"`{path}` is the workspace root or outside it; name a file inside the workspace")
    return resolve_in_workspace(workspace, os.path.dirname(normalised) or ".") / name


async def _delete(args: DeleteArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if target == ctx.workspace.resolve():
        raise ToolFailure("denied", "refusing to delete the workspace root")
    # A symlink is deleted itself, never the file it points to: the human approved this path.
    entry = _entry(ctx.workspace, args.path)
    if entry.is_symlink():
        await asyncio.to_thread(entry.unlink)
        return f"Deleted the link {args.path}."
    if not target.is_file():
        raise ToolFailure("bad_args", f"`{args.path}` is not a file in the workspace")
    await asyncio.to_thread(target.unlink)
    return f"Deleted {args.path}."


class MoveArgs(BaseModel):
    source: str = Field(
        description="File or folder to move, relative to the workspace root.", json_schema_extra=arg_meta("path", acts_as="files_delete", tree=True)
    )
    destination: str = Field(
        description="New path, or an existing folder to move it into.", json_schema_extra=arg_meta("path", acts_as="files_write")
    )
    overwrite: bool = Field(default=False, description="Replace an existing destination file.")


async def _move(args: MoveArgs, ctx: ToolContext) -> str | ToolResult:
    source = _entry(ctx.workspace, args.source)
    if not source.is_symlink() and not source.exists():
        raise ToolFailure("bad_args", f"`{args.source}` does not exist in the workspace; see what exists with files_list")
    destination = resolve_in_workspace(ctx.workspace, args.destination)
    if destination.is_dir() and not destination.is_symlink():
        destination = destination / source.name
    else:
        destination = _entry(ctx.workspace, args.destination)
    if destination == source:
        return f"{args.source} is already at {args.destination}."
    landing = destination.relative_to(ctx.workspace.resolve()).as_posix()
    if ctx.resources.protected.violation(destination) is not None:  # `sub/kasloop.toml` moved into `.` lands on the config
        return protected_refusal(landing, "argument `destination`")
    if source.is_dir() and not source.is_symlink() and (destination == source or source in destination.parents):
        raise ToolFailure("bad_args", f"cannot move the folder `{args.source}` into itself")
    if destination.exists() or destination.is_symlink():
        if not args.overwrite or destination.is_dir():
            raise ToolFailure("bad_args", f"`{args.destination}` already exists; pass overwrite=true to replace a file, or choose another name")
    destination.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(os.replace, source, destination)
    return f"Moved {args.source} to {landing}."


class SearchArgs(BaseModel):
    pattern: str = Field(default="*", description="File name glob, e.g. `*.md`; `**/` is implied.", json_schema_extra=arg_meta("text"))
    text: str = Field(
        default="", description="Only files containing this text (case-insensitive); lines are shown.", json_schema_extra=arg_meta("text")
    )
    path: str = Field(default=".", description="Folder to search, relative to the workspace root.", json_schema_extra=arg_meta("path"))


def _search(root: Path, start: Path, pattern: str, text: str, protected: ProtectedPaths | None = None) -> list[str]:
    """Walk ``start`` without following symlinks; return matching paths or ``path:line: text`` hits.

    Protected paths (kasloop's own state) are neither entered nor read nor shown.
    """
    protected = protected or ProtectedPaths()
    inodes: dict[tuple[int, int], Path] | None = None
    needle = text.lower() or None
    hits: list[str] = []
    scanned = 0
    for folder, dirs, files in os.walk(start, followlinks=False):
        if protected:
            dirs[:] = [d for d in dirs if protected.violation(Path(folder) / d) is None]
        dirs.sort()
        for name in sorted(files):
            file = Path(folder) / name
            rel = shown_name(file.relative_to(root).as_posix())
            if not (fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern)) or file.is_symlink():
                continue
            if protected:
                if inodes is None and _linked(file):
                    inodes = protected.inodes()
                if protected.violation(file, inodes=inodes or {}) is not None:
                    continue
            scanned += 1
            if scanned > MAX_SEARCH_FILES or len(hits) >= MAX_SEARCH_MATCHES:
                return [*hits[:MAX_SEARCH_MATCHES], SEARCH_STOPPED]
            if needle is None:
                hits.append(rel)
                continue
            if file.stat().st_size > MAX_FILE_BYTES:
                continue
            data = file.read_bytes()
            if b"\x00" in data[:1024]:
                continue
            for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
                if needle in line.lower():
                    hits.append(f"{rel}:{number}: {text_safe(line.strip()[:200])}")
                    if len(hits) > MAX_SEARCH_MATCHES:
                        return [*hits[:MAX_SEARCH_MATCHES], SEARCH_STOPPED]
    return hits


async def _search_files(args: SearchArgs, ctx: ToolContext) -> str:
    root = ctx.workspace.resolve()
    start = resolve_in_workspace(ctx.workspace, args.path)
    if not start.is_dir():
        raise ToolFailure("bad_args", f"`{args.path}` is not a folder in the workspace; the workspace root itself is `.`")
    hits = await asyncio.to_thread(_search, root, start, args.pattern, args.text, ctx.resources.protected)
    if hits:
        return "\n".join(hits)
    if not args.text and not any(c in args.pattern for c in "*?["):
        # Measured on the 0.5B model: "find the file that contains banana" became pattern="banana".
        return f"(no matches: no file is named `{args.pattern}`; `pattern` matches file names, to find files containing a text pass it as `text`)"
    return "(no matches)"


FILES_TOOLS: tuple[Tool, ...] = (
    Tool(name="files_read", description="Read a text file from the workspace.", args_model=ReadArgs, func=_read, risk="read", idempotent=True, family="files"),
    Tool(name="files_write", description="Create or replace a file in the workspace.", args_model=WriteArgs, func=_write, risk="low", idempotent=True, family="files"),
    Tool(name="files_append", description="Append text to a file in the workspace.", args_model=WriteArgs, func=_append, risk="low", idempotent=False, family="files"),
    Tool(name="files_list", description="List the files in a folder of the workspace (default: the root).", args_model=ListArgs, func=_list, risk="read", idempotent=True, family="files"),
    Tool(name="files_search", description="Find files by name glob and/or containing a text.", args_model=SearchArgs, func=_search_files, risk="read", idempotent=True, family="files"),
    Tool(name="files_move", description="Move or rename a file or folder in the workspace.", args_model=MoveArgs, func=_move, risk="low", idempotent=False, family="files"),
    Tool(name="files_delete", description="Delete a file from the workspace.", args_model=DeleteArgs, func=_delete, risk="high", idempotent=True, family="files"),
)
