"""Where a thread stands after a command, and the CLI exit code each status maps to (DESIGN.md's contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kasloop.state import Usage, empty_usage

__all__ = ["EXIT_CODES", "RunResult"]

EXIT_CODES = {"done": 0, "waiting_approval": 10, "paused_budget": 11, "escalated": 12, "failed": 12}
"""A thread status -> the exit code of ``kasloop run/resume/approve``; any other status exits 1."""


@dataclass
class RunResult:
    """Where a thread stands after ``run``/``resume``/``approve``."""

    thread: str
    status: str
    output: str = ""
    approvals: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=empty_usage)

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this status (0 done, 10 approval, 11 budget, 12 escalated)."""
        return EXIT_CODES.get(self.status, 1)

    def to_json(self) -> dict[str, Any]:
        return {"thread": self.thread, "status": self.status, "output": self.output, "approvals": self.approvals, "usage": dict(self.usage)}
