"""Tool spans for LangChain tracers: every tool call kasloop runs is told to the run's callback handlers.

LangChain's own tools fire ``on_tool_start`` / ``on_tool_end`` / ``on_tool_error`` when they run; kasloop's
``act`` node runs its tools itself (through the ledger, the gate and ``run_tool``), so it fires them here,
with the run's callbacks (``Agent(callbacks=[...])``, LangSmith's tracer, ``config["callbacks"]``), as a child
of the ``act`` node's run. A tracer sees what the model sees: the arguments and the output after
redaction; a failed call (``ok=False``) is an ``on_tool_error`` with the failure's kind and text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.callbacks.manager import AsyncCallbackManager, AsyncCallbackManagerForToolRun
from langgraph.config import get_config, get_stream_writer

from kasloop.safety.secrets import Redactor
from kasloop.tools.base import Tool, ToolFailure, ToolResult

__all__ = ["ToolSpan", "stream_writer", "tool_span"]


class ToolSpan:
    """The open span of one tool call: :meth:`finish` closes it with the call's result."""

    def __init__(self, run: AsyncCallbackManagerForToolRun | None, name: str) -> None:
        self._run = run
        self._name = name

    async def finish(self, result: ToolResult) -> None:
        if self._run is None:
            return
        if result.ok:
            await self._run.on_tool_end(result.output, name=self._name)
        else:
            await self._run.on_tool_error(ToolFailure(result.error_kind or "permanent", result.output), name=self._name)


def stream_writer() -> Callable[[Any], None]:
    """LangGraph's writer for ``custom`` stream events (``Agent.astream`` hears tool calls start and finish
    through it); a no-op outside a graph run or when nobody streams."""
    try:
        return get_stream_writer()
    except RuntimeError:  # not inside a LangGraph run (a test calling a node directly)
        return lambda _: None


def _callbacks() -> AsyncCallbackManager | None:
    """The callback manager of the node run in progress (None outside a graph run, or with no handler)."""
    try:
        config = get_config()
    except RuntimeError:  # not inside a LangGraph run (a test calling a node directly)
        return None
    if not config.get("callbacks"):
        return None
    return AsyncCallbackManager.configure(
        inheritable_callbacks=config.get("callbacks"), inheritable_tags=config.get("tags"), inheritable_metadata=config.get("metadata"),
    )


@asynccontextmanager
async def tool_span(tool: Tool, args: Mapping[str, Any], redactor: Redactor | None = None) -> AsyncIterator[ToolSpan]:
    """Open a tool span for ``tool`` called with ``args``; an exception escaping the block is reported as the
    tool's error and raised on. ``args`` are redacted with ``redactor`` only when a tracer listens (no
    work on a run without callbacks); the output passed to :meth:`ToolSpan.finish` is redacted by the caller."""
    manager = _callbacks()
    run = None
    if manager is not None:
        args = redactor.deep(dict(args)) if redactor else args
        run = await manager.on_tool_start(
            {"name": tool.name, "description": tool.description}, json.dumps(dict(args), ensure_ascii=False, default=str),
            name=tool.name, inputs=dict(args),
        )
    try:
        yield ToolSpan(run, tool.name)
    except BaseException as exc:
        if run is not None:
            await run.on_tool_error(exc, name=tool.name)
        raise
