"""Where a thread stands after a command, as typed objects, and the CLI exit code each status maps to.

``RunResult`` and ``RunUsage`` (with :class:`~kasloop.guardrails.approvals.Approval`, the requests it
holds) are frozen pydantic models whose ``model_dump(mode="json")`` is exactly the JSON ``kasloop run
--json`` and ``kasloop approvals --json`` print (DESIGN.md's contract); they read by key too
(:class:`~kasloop.support.records.FrozenRecord`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kasloop.guardrails.approvals import Approval
from kasloop.support.records import FrozenRecord

__all__ = ["EXIT_CODES", "Approval", "RunResult", "RunUsage"]

EXIT_CODES = {"done": 0, "waiting_approval": 10, "paused_budget": 11, "escalated": 12, "failed": 12}
"""A thread status -> the exit code of ``kasloop run/resume/approve``; any other status exits 1."""


class RunUsage(FrozenRecord):
    """What a task has used so far (the numbers its budgets count)."""

    steps: int = 0
    tool_calls: int = 0
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0


class RunResult(FrozenRecord):
    """Where a thread stands after ``run``/``resume``/``approve``.

    ``output`` is the final answer's text (the validated JSON, for a task with an output schema); ``data``
    is that answer as a JSON value and ``value`` as the pydantic object, when ``output=`` asked for one.
    """

    thread: str
    status: str
    output: str = ""
    approvals: list[Approval] = Field(default_factory=list)
    usage: RunUsage = Field(default_factory=RunUsage)
    data: Any = None
    """The validated structured answer (a task run with ``output=`` / ``--output-schema``, once done)."""
    value: Any = Field(default=None, exclude=True)
    """``data`` as an instance of the pydantic class given as ``output=`` (not in the JSON)."""
    structured: bool = Field(default=False, exclude=True)
    """The task has an output schema: the JSON then carries ``data``."""

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this status (0 done, 10 approval, 11 budget, 12 escalated)."""
        return EXIT_CODES.get(self.status, 1)

    def to_json(self) -> dict[str, Any]:
        """``{"thread", "status", "output", "approvals", "usage"}``, and ``"data"`` for a structured task."""
        return self.model_dump(mode="json", exclude=None if self.structured else {"data"})
