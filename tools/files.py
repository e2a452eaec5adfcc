"""The ``files`` family: read, write, append, list and delete inside the workspace.

Every path is resolved (symlinks included) and must stay inside the
workspace root; writes are atomic (temp file in the same folder, fsync,
rename, fsync of the folder), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from kasloop.tools.base import Tool, ToolContext, ToolFailure

__all__ = ["FILES_TOOLS", "atomic_write", "resolve_in_workspace"]

MAX_FILE_BYTES = 1_000_000
MAX_LIST_ENTRIES = 500


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


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that readers see the old file or the new one, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _check_size(content: str) -> bytes:
    data = content.encode()
    if len(data) > MAX_FILE_BYTES:
        raise ToolFailure("bad_args", f"content is {len(data)} bytes; the limit is {MAX_FILE_BYTES}")
    return data


class PathArgs(BaseModel):
    path: str = Field(description="Path relative to the workspace root.")


class WriteArgs(BaseModel):
    path: str = Field(description="Path relative to the workspace root.")
    content: str = Field(description="Text to write.")


class ListArgs(BaseModel):
    path: str = Field(default=".", description="Folder relative to the workspace root; `.` is the root.")


async def _read(args: PathArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if not target.is_file():
        raise ToolFailure("bad_args", f"`{args.path}` is not a file in the workspace; see what exists with files_list (path `.` is the root)")
    data = await asyncio.to_thread(target.read_bytes)
    if b"\x00" in data[:1024]:
        return f"[binary file, {len(data)} bytes; not shown]"
    return data.decode(errors="replace")


async def _write(args: WriteArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if target.is_dir():
        raise ToolFailure("bad_args", f"`{args.path}` is a folder; give a file path")
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


async def _list(args: ListArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if not target.is_dir():
        raise ToolFailure("bad_args", f"`{args.path}` is not a folder in the workspace; the workspace root itself is `.`")
    entries = sorted(target.iterdir(), key=lambda p: p.name)
    lines = [f"{p.name}/" if p.is_dir() else f"{p.name} ({p.lstat().st_size} bytes)" for p in entries[:MAX_LIST_ENTRIES]]
    if len(entries) > MAX_LIST_ENTRIES:
        lines.append(f"[... {len(entries) - MAX_LIST_ENTRIES} more entries]")
    return "\n".join(lines) if lines else "(empty folder)"


async def _delete(args: PathArgs, ctx: ToolContext) -> str:
    target = resolve_in_workspace(ctx.workspace, args.path)
    if target == ctx.workspace.resolve():
        raise ToolFailure("denied", "refusing to delete the workspace root")
    # A symlink is deleted itself, never the file it points to: the human approved this path.
    normalised = os.path.normpath(args.path)
    entry = resolve_in_workspace(ctx.workspace, os.path.dirname(normalised) or ".") / os.path.basename(normalised)
    if entry.is_symlink():
        await asyncio.to_thread(entry.unlink)
        return f"Deleted the link {args.path}."
    if not target.is_file():
        raise ToolFailure("bad_args", f"`{args.path}` is not a file in the workspace")
    await asyncio.to_thread(target.unlink)
    return f"Deleted {args.path}."


FILES_TOOLS: tuple[Tool, ...] = (
    Tool(name="files_read", description="Read a text file from the workspace.", args_model=PathArgs, func=_read, risk="read", idempotent=True, family="files"),
    Tool(name="files_write", description="Create or replace a file in the workspace.", args_model=WriteArgs, func=_write, risk="low", idempotent=True, family="files"),
    Tool(name="files_append", description="Append text to a file in the workspace.", args_model=WriteArgs, func=_append, risk="low", idempotent=False, family="files"),
    Tool(name="files_list", description="List the files in a folder of the workspace (default: the root).", args_model=ListArgs, func=_list, risk="read", idempotent=True, family="files"),
    Tool(name="files_delete", description="Delete a file from the workspace.", args_model=PathArgs, func=_delete, risk="high", idempotent=True, family="files"),
)
