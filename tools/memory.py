"""The ``memory`` family: ``remember`` and ``recall`` over the agent's long-term memory.

Both act on the kasloop database's memory (``kasloop.memory``), shared by all
threads of that database, so a learning written in one cycle is found
hundreds of cycles (or threads) later. ``remember`` is ``low`` risk (it only
adds to kasloop's own memory, and ``kasloop memory delete`` undoes it) and
idempotent: remembering the same text again updates one item. ``recall``
reads. Without a kasloop database (``langgraph dev``) memory lives in the
process, for the life of the agent's tool resources.

Settings (``[tool_settings.memory]``): ``namespace`` (default ``memory``) for
several agents sharing one database.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kasloop.errors import UsageError
from kasloop.memory.items import DEFAULT_NAMESPACE, MAX_TEXT_CHARS, NAMESPACE_PATTERN
from kasloop.memory.long_term import LongTermMemory, shared_memory
from kasloop.tools.base import Tool, ToolContext, ToolFailure

__all__ = ["MEMORY_TOOLS", "MemorySettings"]

MAX_RECALL = 10


class MemorySettings(BaseModel):
    """``ToolContext.extra["memory"]``: which memory of the database this agent uses."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(default=DEFAULT_NAMESPACE, pattern=NAMESPACE_PATTERN, description="Memory name; agents sharing a database use different ones.")

    @classmethod
    def from_context(cls, ctx: ToolContext) -> MemorySettings:
        try:
            return cls.model_validate(ctx.extra.get("memory") or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ToolFailure("permanent", f"tool_settings.memory.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


class RememberArgs(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="What to remember, as one self-contained sentence or paragraph.")
    kind: Literal["learning", "note", "goal"] = Field(default="learning", description="learning (a lesson for later), note, or goal.")


class RecallArgs(BaseModel):
    query: str = Field(min_length=1, description="Words to look for in what was remembered.")
    limit: int = Field(default=5, ge=1, le=MAX_RECALL, description=f"How many items, at most {MAX_RECALL}.")


async def _memory(ctx: ToolContext) -> LongTermMemory:
    return await shared_memory(ctx.resources, MemorySettings.from_context(ctx).namespace)


async def _remember(args: RememberArgs, ctx: ToolContext) -> str:
    memory = await _memory(ctx)
    try:
        item = await memory.add(args.text, kind=args.kind, source=f"thread {ctx.thread_id}")
    except UsageError as exc:
        raise ToolFailure("bad_args", exc.message) from None
    again = " (already known; updated)" if item.updated_at != item.created_at else ""
    return f"Remembered {item.line()}{again}"


async def _recall(args: RecallArgs, ctx: ToolContext) -> str:
    memory = await _memory(ctx)
    items = await memory.search(args.query, limit=args.limit)
    if not items:
        return f"Nothing remembered matches `{args.query}`."
    return "\n".join(item.line() for item in items)


MEMORY_TOOLS: tuple[Tool, ...] = (
    Tool(
        name="remember", family="memory",
        description="Save a learning, note or goal to long-term memory, kept across runs and threads.",
        args_model=RememberArgs, func=_remember, risk="low", idempotent=True,
    ),
    Tool(
        name="recall", family="memory",
        description="Search long-term memory by keywords; returns the most relevant items, one per line.",
        args_model=RecallArgs, func=_recall, risk="read", idempotent=True,
    ),
)
