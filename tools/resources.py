"""What the tools of one agent share across calls: :class:`ToolResources`.

A tool call is short; a browser, the process store and the tools' state folder are not. This module holds the
one object that keeps them for an agent and closes them at shutdown. It is apart from the tool contract
(:mod:`kasloop.tools.contract`) because it has a lifecycle of its own (created and closed by the runtime,
not by a tool), and :class:`~kasloop.tools.contract.ToolContext` only carries it.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kasloop.safety.protected import ProtectedPaths

__all__ = ["ToolResources"]

_log = logging.getLogger("kasloop.tools")
T = TypeVar("T")


class ToolResources:
    """What the tools of one agent share across calls, and close together at shutdown.

    A tool call is short, but some things a tool needs are not: one browser per
    agent is reused by every browser call, and the process family must find the
    processes it started in an earlier run. So an agent owns one
    ``ToolResources``: a state folder (``home``), the kasloop database when
    there is one, and named long-lived objects created on first use by
    :meth:`shared` and closed, newest first, by :meth:`aclose`.

    Args:
        home: folder for tool state (process logs); a fresh temporary folder when omitted.
        database: the open kasloop ``Database`` (``None`` for a graph without one).
        protected: paths no tool may touch (``kasloop.safety.protected``); default: ``home`` itself.
    """

    def __init__(self, *, home: Path | None = None, database: Any = None, protected: ProtectedPaths | None = None) -> None:
        self._home = home
        self.database = database
        self.protected = protected if protected is not None else ProtectedPaths(() if home is None else (home,))
        """kasloop's own files (home, database, config, secret files): no tool may touch them."""
        self._objects: dict[str, Any] = {}
        self._closers: list[tuple[str, Callable[[Any], Awaitable[None]]]] = []
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def home(self) -> Path:
        if self._home is None:
            self._home = Path(tempfile.mkdtemp(prefix="kasloop-tools-"))
        self._home.mkdir(parents=True, exist_ok=True)
        return self._home

    async def shared(
        self, key: str, factory: Callable[[], Awaitable[T]], close: Callable[[T], Awaitable[None]] | None = None
    ) -> T:
        """The object stored under ``key``, created by ``factory`` on first use (once, even under concurrency)."""
        if key in self._objects:
            return self._objects[key]  # type: ignore[no-any-return]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._objects:
                obj = await factory()
                self._objects[key] = obj
                if close is not None:
                    self._closers.append((key, close))
        return self._objects[key]  # type: ignore[no-any-return]

    async def discard(self, key: str) -> None:
        """Close and forget one shared object (a crashed browser), so the next call creates a new one."""
        obj = self._objects.pop(key, None)
        for index, (name, close) in enumerate(self._closers):
            if name == key:
                del self._closers[index]
                if obj is not None:
                    await _close_quietly(name, close, obj)
                break

    async def aclose(self) -> None:
        """Close every shared object, newest first; a failing close is logged, not raised."""
        while self._closers:
            key, close = self._closers.pop()
            obj = self._objects.pop(key, None)
            if obj is not None:
                await _close_quietly(key, close, obj)
        self._objects.clear()


async def _close_quietly(key: str, close: Callable[[Any], Awaitable[None]], obj: Any) -> None:
    try:
        await close(obj)
    except Exception as exc:  # noqa: BLE001 - shutdown must close everything else too
        _log.warning("closing tool resource %s failed: %s", key, exc)
