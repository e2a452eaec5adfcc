"""A thread's events grouped into goals and cycles, and what each cost: what the report and ``kasloop status`` count.

Why a module of its own: ``kasloop status THREAD`` needs the goal summaries without building an HTML page,
and the grouping is the report's one piece of logic over events, so it is kept apart from the markup
(:mod:`kasloop.reporting.html`) and the page (:mod:`kasloop.reporting.report`).

Events are what ``Agent.history`` returns: events of kind ``goal`` start a goal section; the events after it
are grouped into cycles by ``step`` (events logged with step 0 between cycles, such as ``told`` or
``approval_announced``, join the cycle they happened in).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cost", "Cycle", "Event", "Goal", "goal_summaries", "group"]

Event = dict[str, Any]

_META = ("id", "ts", "step", "kind")
_PROBLEM_KINDS = ("error", "budget", "loop", "approval_refused", "channel_error", "announce_failed", "notify_failed")
_APPROVAL_KINDS = ("approval_requested", "approval_decision", "approval_refused", "approval_announced", "announce_failed", "human_approval")


def _data(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in _META}


# -- grouping -----------------------------------------------------------------------------------------


@dataclass
class Cost:
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0

    def add(self, event: Event) -> None:
        """Any event carrying token counts is a model call (today only ``decide`` events do)."""
        if "input_tokens" in event or "output_tokens" in event:
            self.model_calls += 1
            self.input_tokens += int(event.get("input_tokens") or 0)
            self.output_tokens += int(event.get("output_tokens") or 0)
        self.usd += float(event.get("usd") or 0.0)

    def __iadd__(self, other: Cost) -> Cost:
        self.model_calls += other.model_calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.usd += other.usd
        return self


@dataclass
class Cycle:
    goal: int
    step: int
    events: list[Event] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"g{self.goal}-c{self.step}"

    @property
    def label(self) -> str:
        return f"Cycle {self.step}" if self.step else "Before the first cycle"

    def cost(self) -> Cost:
        total = Cost()
        for event in self.events:
            total.add(event)
        return total


@dataclass
class Goal:
    index: int
    text: str
    event: Event | None
    cycles: list[Cycle] = field(default_factory=list)

    def events(self) -> list[Event]:
        return [e for c in self.cycles for e in c.events]


def group(events: Sequence[Event], fallback_goal: str) -> list[Goal]:
    """Goal sections (a ``goal`` event opens one), each holding its cycles in order."""
    goals: list[Goal] = []
    for event in events:
        if event["kind"] == "goal":
            goals.append(Goal(len(goals) + 1, str(event.get("text", "")), event))
            continue
        if not goals:
            goals.append(Goal(1, fallback_goal, None))
        goal = goals[-1]
        step = int(event.get("step") or 0)
        current = goal.cycles[-1] if goal.cycles else None
        if current is None or (step and step != current.step):
            current = Cycle(goal.index, step)
            goal.cycles.append(current)
        current.events.append(event)
    return goals


def _goal_outcome(goal: Goal, last: bool, status: str) -> str:
    ended = [e for e in goal.events() if e["kind"] == "decide" and not e.get("calls")]
    return "done" if ended else status if last else "—"


def _problems(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if (e["kind"] == "tool" and not e.get("ok")) or e["kind"] in _PROBLEM_KINDS or e["kind"] == "self_diagnose"]


def goal_summaries(status: str, events: Sequence[Event], fallback_goal: str = "") -> list[dict[str, Any]]:
    """Per goal of a thread: outcome, cycles, tool calls, approvals, errors and what its model calls cost.

    ``kasloop status THREAD`` prints these; the report's goals table is made of them.
    """
    goals = group(events, fallback_goal)
    out = []
    for goal in goals:
        goal_events = goal.events()
        cost = Cost()
        for cycle in goal.cycles:
            cost += cycle.cost()
        tools = [e for e in goal_events if e["kind"] == "tool" and not e.get("reused")]
        stamps = [e["ts"] for e in ([goal.event] if goal.event else []) + goal_events if e.get("ts")]
        out.append({
            "index": goal.index, "goal": goal.text, "outcome": _goal_outcome(goal, goal is goals[-1], status),
            "cycles": len([c for c in goal.cycles if c.step]), "tool_calls": len(tools), "failed": len([e for e in tools if not e.get("ok")]),
            "approvals": len([e for e in goal_events if e["kind"] == "approval_requested"]),
            "errors": len([e for e in _problems(goal_events) if e["kind"] != "self_diagnose"]),
            "model_calls": cost.model_calls, "input_tokens": cost.input_tokens, "output_tokens": cost.output_tokens, "usd": cost.usd,
            "seconds": (max(stamps) - min(stamps)) if stamps else None,
        })
    return out
