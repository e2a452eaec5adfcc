"""Streaming a drive: the events a running thread emits, handed to an async (or sync) iterator.

:func:`stream_run` starts a command (a run, a resume) with an ``emit`` callback, yields what it emits
as it happens, and ends with what stopped the run and :class:`~kasloop.runtime.events.Done`.
:class:`TextRedactor` redacts model text that arrives in pieces: a secret split across two chunks is
still caught, because the last characters are held back until the next chunk (or the end) shows
whether they begin a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk

from kasloop.runtime.events import (
    ApprovalNeeded,
    BudgetPaused,
    CallProposed,
    Done,
    Emit,
    NodeFinished,
    NodeStarted,
    TextChunk,
    ToolFinished,
    ToolStarted,
)
from kasloop.runtime.result import RunResult
from kasloop.safety.secrets import Redactor

__all__ = ["DriveEvents", "TextRedactor", "final_events", "stream_run", "stream_sync"]

_END = object()


def final_events(result: RunResult) -> list[Any]:
    """What stopped the run (an approval, a budget), then ``Done``."""
    events: list[Any] = []
    if result.status == "waiting_approval":
        events.append(ApprovalNeeded(thread=result.thread, approvals=result.approvals))
    elif result.status == "paused_budget":
        events.append(BudgetPaused(thread=result.thread, output=result.output, approvals=result.approvals))
    events.append(Done(thread=result.thread, status=result.status, exit_code=result.exit_code, result=result.to_json()))
    return events


async def stream_run(start: Callable[[Emit], Awaitable[RunResult]]) -> AsyncIterator[Any]:
    """Run ``start(emit)`` and yield each event it emits as it comes, then the final events.

    Errors of the command (a ``ConfigError``, a busy thread) are raised here after the events before them.
    Closing the stream early stops the run after the node that is running (as SIGTERM stops the daemon:
    its writes are saved, the next node never starts, and ``resume`` goes on from there).
    """
    events: asyncio.Queue[Any] = asyncio.Queue()
    emit = _Emitter(events)
    task = asyncio.create_task(start(emit))
    task.add_done_callback(lambda _: events.put_nowait(_END))
    try:
        while (event := await events.get()) is not _END:
            yield event
        result = task.result()
        for event in final_events(result):
            yield event
    finally:
        if not task.done():
            emit.stopped = True  # read by the drive between two nodes
            with contextlib.suppress(Exception):
                await task


class _Emitter:
    """The ``emit`` a streamed drive gets: it queues events, and says when the reader stopped reading."""

    def __init__(self, events: asyncio.Queue[Any]) -> None:
        self.events = events
        self.stopped = False

    async def __call__(self, event: Any) -> None:
        await self.events.put(event)


def stream_sync(make: Callable[[], AsyncIterator[Any]]) -> Iterator[Any]:
    """The sync twin of an async event stream: it runs on an event loop of its own thread, events handed over
    as they come (works in a notebook or any code that already runs a loop)."""
    handed: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def pump() -> None:
        async def consume() -> None:
            async with contextlib.aclosing(make()) as events:  # type: ignore[type-var]
                async for event in events:
                    handed.put(event)
                    if stop.is_set():
                        break

        try:
            asyncio.run(consume())
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer's thread
            handed.put(("error", exc))
        finally:
            handed.put(_END)

    thread = threading.Thread(target=pump, name="kasloop-stream", daemon=True)
    thread.start()
    try:
        while (item := handed.get()) is not _END:
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "error":
                raise item[1]
            yield item
    finally:
        stop.set()  # a reader that stopped early: the run stops after its running node
        thread.join()


class TextRedactor:
    """Redacts text that arrives in chunks, holding back as many characters as the longest secret."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.hold = redactor.longest if redactor else 0
        self._raw = ""
        self._sent = 0

    def feed(self, text: str) -> str:
        """The redacted text that is safe to show now."""
        self._raw += text
        if not self.hold:
            return self._take(self._raw)
        shown = self.redactor.text(self._raw)
        return self._take(shown[: max(self._sent, len(shown) - self.hold)])

    def flush(self) -> str:
        """The rest, at the end of a reply."""
        rest = self._take(self.redactor.text(self._raw) if self.hold else self._raw)
        self._raw, self._sent = "", 0
        return rest

    def _take(self, shown: str) -> str:
        new = shown[self._sent:]
        self._sent = len(shown)
        return new


class DriveEvents:
    """Turns what LangGraph streams during a drive (``tasks``, ``updates``, ``messages``, ``custom``) into typed events.

    Model text counts only from ``decide`` (side calls, the summary and the diagnosis, are not the agent
    talking); a model that streams gives chunks, one that does not gives its whole reply once.
    """

    def __init__(self, emit: Emit, thread: str, redactor: Redactor, *, text: bool = True) -> None:
        self.modes = ["updates", "tasks", "custom", *(["messages"] if text else [])]
        """LangGraph's stream modes to ask for: ``messages`` only when model text is wanted (it makes chat
        models stream their replies)."""
        self.emit = emit
        self.thread = thread
        self.redactor = redactor
        self.text = TextRedactor(redactor)
        self._heard = False
        """Whether this decide turn's reply was heard already (chunks, or the whole message)."""

    async def _send(self, event: Any) -> None:
        sent = self.emit(event)
        if sent is not None:
            await sent

    async def handle(self, mode: str, chunk: Any) -> None:
        if mode == "tasks":
            if "result" not in chunk and not chunk["name"].startswith("__"):
                self._heard = False if chunk["name"] == "decide" else self._heard
                await self._send(NodeStarted(thread=self.thread, node=chunk["name"]))
        elif mode == "messages":
            await self._message(*chunk)
        elif mode == "custom":
            await self._custom(chunk)
        elif mode == "updates":
            for node, update in chunk.items():
                if node.startswith("__"):  # `__interrupt__`: the node paused, it did not finish
                    continue
                await self._finished(node, update if isinstance(update, dict) else {})

    async def _message(self, message: Any, meta: dict[str, Any]) -> None:
        if meta.get("langgraph_node") != "decide" or not isinstance(message, AIMessage):
            return
        if not isinstance(message, AIMessageChunk) and self._heard:
            return  # the reply whose chunks were streamed, or the node's own copy of it
        self._heard = True
        text = _text_of(message.content)
        shown = self.text.feed(text) if text else ""
        if shown:
            await self._send(TextChunk(thread=self.thread, text=shown))

    async def _custom(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            return
        kind = chunk.get("kasloop_event")
        if kind == "tool_started":
            await self._send(ToolStarted(thread=self.thread, tool=chunk["tool"], call_id=chunk["call_id"]))
        elif kind == "tool_finished":
            await self._send(ToolFinished(
                thread=self.thread, tool=chunk["tool"], call_id=chunk["call_id"], ok=chunk["ok"], error_kind=chunk.get("error_kind"),
                output=self.redactor.text(str(chunk.get("output", "")))[:500],
            ))

    async def _finished(self, node: str, update: dict[str, Any]) -> None:
        if node == "decide":
            rest = self.text.flush()
            if rest:
                await self._send(TextChunk(thread=self.thread, text=rest))
            for call in update.get("pending") or []:
                await self._send(CallProposed(
                    thread=self.thread, tool=call["tool"], args=self.redactor.deep(dict(call["args"])), gate=call.get("gate", ""),
                    reason=call.get("reason", ""), risk=call.get("risk", ""), approval_id=call.get("approval_id", ""),
                ))
        usage = update.get("usage")
        await self._send(NodeFinished(thread=self.thread, node=node, step=usage["steps"] if usage else None))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") in ("text", "text_delta"))
    return ""
