"""Typed events of a streamed run (``Agent.astream``): what the CLI's live view and your own UI are built on.

A run streams, in order, each node starting and finishing, the model's text as it arrives, each call
the model proposes with the gate's verdict and reason, each tool call starting and finishing, and at
the end what stopped it: an approval (``ApprovalNeeded``, its requests in it), a budget
(``BudgetPaused``), then always ``Done`` with the run's result. A stream that ends at an approval is
continued by deciding and streaming the resume (``Agent.astream_resume``).

Every event is a frozen pydantic model with a ``kind`` (the discriminator) and the ``thread``, so
``event.model_dump(mode="json")`` is its JSON shape. Arguments and outputs are redacted like the
event log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kasloop.guardrails.approvals import Approval

__all__ = [
    "ApprovalNeeded",
    "BudgetPaused",
    "CallProposed",
    "Done",
    "Emit",
    "NodeFinished",
    "NodeStarted",
    "StreamEvent",
    "TextChunk",
    "ToolFinished",
    "ToolStarted",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    thread: str


class NodeStarted(_Event):
    """A node of the graph (perceive, decide, act, self_diagnose, human_approval, ...) starts."""

    kind: Literal["node_started"] = "node_started"
    node: str


class NodeFinished(_Event):
    """A node finished; ``step`` is the thread's step count after it."""

    kind: Literal["node_finished"] = "node_finished"
    node: str
    step: int | None = None


class TextChunk(_Event):
    """Model text as it arrives (a whole reply at once from a model that does not stream)."""

    kind: Literal["text"] = "text"
    text: str


class CallProposed(_Event):
    """A call the model proposed, with the gate's verdict: ``allow`` (it runs), ``ask`` (a human decides)."""

    kind: Literal["call_proposed"] = "call_proposed"
    tool: str
    args: dict[str, Any]
    gate: str
    reason: str
    risk: str
    approval_id: str


class ToolStarted(_Event):
    kind: Literal["tool_started"] = "tool_started"
    tool: str
    call_id: str


class ToolFinished(_Event):
    """A tool call ended: ``ok``, or ``error_kind``; ``output`` is what the model sees, cut to 500 characters."""

    kind: Literal["tool_finished"] = "tool_finished"
    tool: str
    call_id: str
    ok: bool
    error_kind: str | None = None
    output: str


class ApprovalNeeded(_Event):
    """The run stopped for a human: the pending requests, in the shape ``kasloop approvals --json`` shows."""

    kind: Literal["approval_needed"] = "approval_needed"
    approvals: list[Approval]


class BudgetPaused(_Event):
    """A budget stopped the run (at levels 2 and 3 with a request to raise it in ``approvals``)."""

    kind: Literal["budget_paused"] = "budget_paused"
    output: str
    approvals: list[Approval]


class Done(_Event):
    """The last event of every stream: the run's result (``RunResult.to_json()``: status, output, exit code, ...)."""

    kind: Literal["done"] = "done"
    status: str
    exit_code: int
    result: dict[str, Any]


StreamEvent = Annotated[
    NodeStarted | NodeFinished | TextChunk | CallProposed | ToolStarted | ToolFinished | ApprovalNeeded | BudgetPaused | Done,
    Field(discriminator="kind"),
]
"""Any event of a streamed run."""

Emit = Callable[[Any], Awaitable[None] | None]
"""Where a drive sends its events (``Agent.astream`` queues them)."""
