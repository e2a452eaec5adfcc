"""``kasloop report THREAD``: one self-contained HTML file telling what a thread did and what it cost.

Why a file and not a web app: a report is attached to a ticket, mailed, or
opened days later on another machine, so it has no external resources (CSS
inline, no script at all) and a Content-Security-Policy that forbids loading
anything, so a page built from model and tool text cannot run code or phone
home even if escaping ever failed. Escaping is by construction: markup is only
built with ``tag()``, which escapes every string it is given, and only
``tag()`` output (``Raw``) passes through unescaped.

The report reads what ``Agent.status`` and ``Agent.history`` return: events
of kind ``goal`` start a goal section; the events after it are grouped into
cycles by ``step`` (events logged with step 0 between cycles, such as
``told`` or ``approval_announced``, join the cycle they happened in).
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kasloop.support.atomic_files import atomic_write
from kasloop.errors import UsageError
from kasloop.guardrails.secrets import Redactor, known_secrets

if TYPE_CHECKING:
    from kasloop.agent import Agent

__all__ = ["default_report_path", "goal_summaries", "render_report", "write_report"]

Event = dict[str, Any]

_META = ("id", "ts", "step", "kind")
_PROBLEM_KINDS = ("error", "budget", "loop", "approval_refused", "channel_error", "announce_failed", "notify_failed")
_APPROVAL_KINDS = ("approval_requested", "approval_decision", "approval_refused", "approval_announced", "announce_failed", "human_approval")


# -- markup that escapes by construction ------------------------------------------------------------


class Raw(str):
    """Markup built by ``tag`` (already escaped); any other ``str`` is text and gets escaped."""


def _children(items: Iterable[Any]) -> Iterable[str]:
    for item in items:
        if item is None or item is False:
            continue
        if isinstance(item, Raw):
            yield item
        elif isinstance(item, list | tuple):
            yield from _children(item)
        else:
            yield html.escape(str(item), quote=True)


def tag(name: str, /, *children: Any, **attrs: Any) -> Raw:
    """``<name attrs>children</name>``; ``cls`` is ``class``, ``_`` in names becomes ``-``, None drops an attribute."""
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = "class" if key == "cls" else key.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{html.escape(str(value), quote=True)}"')
    opening = "<" + " ".join(parts) + ">"
    if name in ("meta", "br", "hr", "col"):
        return Raw(opening)
    return Raw(opening + "".join(_children(children)) + f"</{name}>")


def _join(items: Iterable[Any]) -> Raw:
    return Raw("".join(_children(items)))


# -- formatting ---------------------------------------------------------------------------------------


def _clock(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _when(ts: float | None) -> str:
    """Date and time without the zone (the header states it), for tables read across days."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def _date(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ts)) if ts else "—"


def _int(value: Any) -> str:
    return f"{int(value or 0):,}"


def _usd(value: Any) -> str:
    amount = float(value or 0.0)
    return "$0" if amount == 0 else f"${amount:,.6f}".rstrip("0").rstrip(".")


def _seconds(value: Any) -> str:
    s = float(value or 0.0)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _data(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in _META}


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _badge(text: str, kind: str) -> Raw:
    return tag("span", text, cls=f"badge b-{kind}")


_STATUS_TONE = {"done": "ok", "running": "info", "waiting_approval": "warn", "sleeping": "info", "paused_budget": "warn"}


def _status_badge(status: str) -> Raw:
    return _badge(status, _STATUS_TONE.get(status, "bad"))


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


# -- event rendering ----------------------------------------------------------------------------------


def _pre(text: Any, cls: str = "out") -> Raw:
    return tag("pre", _compact(text), cls=cls)


def _event_body(event: Event) -> Raw:
    kind, d = event["kind"], _data(event)
    if kind == "decide":
        calls = d.get("calls") or []
        items = [
            tag("li", tag("code", c.get("tool", "?")), " ", _badge(c.get("gate", "?"), {"allow": "ok", "ask": "warn"}.get(c.get("gate", ""), "bad")),
                " ", tag("span", c.get("reason", ""), cls="dim"))
            for c in calls
        ]
        cost = f"{_int(d.get('input_tokens'))} in + {_int(d.get('output_tokens'))} out tokens · {_usd(d.get('usd'))}"
        return _join([
            _pre(d["content"], "say") if d.get("content") else None,
            tag("ul", items, cls="calls") if items else tag("div", "No tool call: the model considers the goal met.", cls="dim"),
            tag("div", cost, cls="dim"),
        ])
    if kind == "tool":
        state = _badge("ok", "ok") if d.get("ok") else _badge(f"error: {d.get('error_kind') or 'failed'}", "bad")
        reused = _badge("reused recorded result", "info") if d.get("reused") else None
        return _join([tag("div", tag("code", d.get("tool", "?")), " ", state, " ", reused), _pre(d.get("output", ""))])
    if kind == "self_diagnose":
        return _join([
            tag("div", "action ", tag("b", d.get("action", "?")), f" after {d.get('error_kind', '?')} ({d.get('source', '?')}), attempt {d.get('attempts', '?')}"),
            _pre(d.get("message", "")),
            tag("div", "diagnosis: ", _pre(d["diagnosis"], "say")) if d.get("diagnosis") else None,
        ])
    if kind == "approval_requested":
        return tag("div", "approval ", tag("code", d.get("approval_id", "?")), " requested for ", tag("code", d.get("tool", "?")), ": ", d.get("reason", ""))
    if kind == "approval_decision":
        edited = " (edited arguments)" if d.get("new_arg_hash") else ""
        said = f": {d['reason']}" if d.get("reason") else f": {d['text']}" if d.get("text") else ""
        return tag("div", "approval ", tag("code", d.get("approval_id", "?")), ": ", tag("b", d.get("decision", "?")),
                   f"{edited} by {d.get('by', '?')} via {d.get('channel', '?')}{said}")
    if kind == "approval_refused":
        return tag("div", "approval decision refused for ", tag("code", d.get("approval_id", "?")), f" ({d.get('by') or '?'} via {d.get('channel') or '?'}): {d.get('reason', '')}")
    if kind == "human_approval":
        decided = [f"{k}: {v.get('decision')} by {v.get('by')}" for k, v in (d.get("decisions") or {}).items()]
        return tag("div", "resumed with approval decisions: ", "; ".join(decided))
    if kind == "error":
        return _join([tag("div", f"{d.get('source', '?')} error", " (transient)" if d.get("transient") else ""), _pre(d.get("message", ""))])
    if kind == "budget":
        return tag("div", f"budget {d.get('limit', '?')} = {d.get('value', '?')} reached: used {d.get('used', '?')}, next cost {d.get('next_cost', '?')}")
    if kind == "perceive":
        return tag("div", d.get("observation", ""), cls="dim")
    rest = [tag("li", tag("b", k), ": ", _compact(v)) for k, v in d.items()]
    return tag("ul", rest, cls="kv") if rest else Raw("")


def _event_tone(event: Event) -> str:
    kind = event["kind"]
    if (kind == "tool" and not event.get("ok")) or kind in _PROBLEM_KINDS:
        return "bad"
    if kind.startswith("approval") or kind == "human_approval":
        return "warn"
    if kind == "self_diagnose":
        return "diag"
    return ""


def _event_row(event: Event) -> Raw:
    return tag(
        "li",
        tag("span", _clock(event.get("ts")), cls="ts"),
        tag("span", event["kind"].replace("_", " "), cls="kind"),
        tag("div", _event_body(event), cls="body"),
        cls=f"ev ev-{event['kind']} {_event_tone(event)}".strip(), id=f"e{event.get('id', '')}",
    )


# -- sections -----------------------------------------------------------------------------------------


def _header(row: dict[str, Any], events: Sequence[Event]) -> Raw:
    u = row.get("usage") or {}
    first = events[0]["ts"] if events else None
    facts = [
        ("Goal", row.get("goal", "")), ("Status", _status_badge(str(row.get("status", "?")))), ("Autonomy", row.get("autonomy")),
        ("Model", _compact(row.get("model"))), ("Started", _date(first)), ("Updated", _date(row.get("updated_at"))),
        ("Output", _pre(row["output"], "say") if row.get("output") else "—"),
    ]
    usage = [
        ("steps", _int(u.get("steps"))), ("tool calls", _int(u.get("tool_calls"))), ("model calls", _int(u.get("model_calls"))),
        ("input tokens", _int(u.get("input_tokens"))), ("output tokens", _int(u.get("output_tokens"))),
        ("cost", _usd(u.get("usd"))), ("time", _seconds(u.get("seconds"))), ("pending approvals", _int(len(row.get("approvals") or []))),
    ]
    return tag(
        "header",
        tag("h1", "kasloop report: ", tag("code", row.get("thread", "?"))),
        tag("dl", [[tag("dt", k), tag("dd", v)] for k, v in facts], cls="facts"),
        tag("div", [tag("div", tag("div", v, cls="n"), tag("div", k, cls="l"), cls="tile") for k, v in usage], cls="tiles"),
        tag("nav", [tag("a", label, href=f"#{target}") for target, label in (
            ("goals", "Goals"), ("timeline", "Timeline"), ("approvals", "Approvals"), ("errors", "Errors"), ("cost", "Cost per cycle"))]),
    )


def _goal_outcome(goal: Goal, last: bool, status: str) -> str:
    ended = [e for e in goal.events() if e["kind"] == "decide" and not e.get("calls")]
    return "done" if ended else status if last else "—"


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


def _goals(summaries: list[dict[str, Any]]) -> Raw:
    rows = [
        tag(
            "tr",
            tag("td", g["index"]), tag("td", tag("a", g["goal"], href=f"#goal-{g['index']}")), tag("td", g["outcome"]),
            tag("td", _int(g["cycles"])), tag("td", f"{g['tool_calls']} ({g['failed']} failed)"), tag("td", _int(g["approvals"])),
            tag("td", _int(g["errors"])), tag("td", _int(g["model_calls"])), tag("td", _int(g["input_tokens"] + g["output_tokens"])),
            tag("td", _usd(g["usd"])), tag("td", _seconds(g["seconds"]) if g["seconds"] is not None else "—"),
        )
        for g in summaries
    ]
    head = tag("tr", [tag("th", h) for h in ("#", "goal", "outcome", "cycles", "tool calls", "approvals", "errors", "model calls", "tokens", "cost", "duration")])
    return tag("section", tag("h2", "Goals"), tag("table", tag("thead", head), tag("tbody", rows)), id="goals")


def _timeline(goals: list[Goal]) -> Raw:
    parts = []
    for goal in goals:
        cycles = []
        for cycle in goal.cycles:
            cost = cycle.cost()
            summary = f"{cost.model_calls} model call(s) · {_int(cost.input_tokens + cost.output_tokens)} tokens · {_usd(cost.usd)}"
            cycles.append(tag(
                "article",
                tag("h4", cycle.label, " ", tag("span", f"{_when(cycle.events[0].get('ts'))} · {summary}", cls="dim")),
                tag("ol", [_event_row(e) for e in cycle.events], cls="events"),
                cls="cycle", id=cycle.anchor,
            ))
        started = f" · {_date(goal.event['ts'])}" if goal.event else ""
        parts.append(tag("section", tag("h3", f"Goal {goal.index}: ", tag("q", goal.text), tag("span", started, cls="dim")),
                         cycles or tag("p", "No cycle ran yet.", cls="dim"), cls="goal", id=f"goal-{goal.index}"))
    return tag("section", tag("h2", "Timeline"), parts or tag("p", "No events.", cls="dim"), id="timeline")


def _approvals(row: dict[str, Any], goals: list[Goal]) -> Raw:
    records: dict[str, dict[str, Any]] = {}
    where: dict[str, Cycle] = {}
    for goal in goals:
        for cycle in goal.cycles:
            for e in cycle.events:
                approval_id = e.get("approval_id")
                if e["kind"] not in _APPROVAL_KINDS or not approval_id:
                    continue
                rec = records.setdefault(approval_id, {"decisions": [], "refused": [], "channels": []})
                where.setdefault(approval_id, cycle)
                if e["kind"] == "approval_requested":
                    rec.update(requested=e)
                elif e["kind"] == "approval_decision":
                    rec["decisions"].append(e)
                elif e["kind"] == "approval_refused":
                    rec["refused"].append(e)
                elif e["kind"] == "approval_announced":
                    rec["channels"].append(str(e.get("channel", "?")))
    pending = {p["approval_id"]: p for p in row.get("approvals") or []}
    for approval_id, p in pending.items():
        records.setdefault(approval_id, {"decisions": [], "refused": [], "channels": []})
    rows = []
    for approval_id, rec in records.items():
        req = rec.get("requested") or {}
        p = pending.get(approval_id)
        if rec["decisions"]:
            d = rec["decisions"][-1]
            edited = " (edited)" if d.get("new_arg_hash") else ""
            outcome = _join([_badge(f"{d.get('decision', '?')}{edited}", "ok" if d.get("decision") in ("approve", "edit") else "bad"),
                             f" by {d.get('by', '?')} via {d.get('channel', '?')} at {_when(d.get('ts'))}"])
        elif p is not None:
            outcome = _join([_badge("pending", "warn"), f" expires {_date(p.get('expires_at'))}"])
        else:
            outcome = _join([_badge("no decision recorded", "info")])
        refused = [f"refused {r.get('by') or '?'} via {r.get('channel') or '?'}: {r.get('reason', '')}" for r in rec["refused"]]
        cycle = where.get(approval_id)
        rows.append(tag(
            "tr",
            tag("td", tag("code", approval_id)), tag("td", _when(req.get("ts") or (p or {}).get("created_at"))),
            tag("td", tag("a", cycle.label, href=f"#{cycle.anchor}") if cycle else "—"),
            tag("td", tag("code", req.get("tool") or (p or {}).get("tool", "?")), tag("div", _compact(p["args"]), cls="dim") if p and p.get("args") else None),
            tag("td", req.get("reason") or (p or {}).get("reason", "")),
            tag("td", outcome, [tag("div", r, cls="dim") for r in refused]),
            tag("td", ", ".join(rec["channels"]) or "—"),
        ))
    head = tag("tr", [tag("th", h) for h in ("approval", "requested", "cycle", "tool", "reason", "decision", "announced on")])
    body = tag("table", tag("thead", head), tag("tbody", rows)) if rows else tag("p", "No approval was requested.", cls="dim")
    return tag("section", tag("h2", "Approvals"), body, id="approvals")


def _problems(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if (e["kind"] == "tool" and not e.get("ok")) or e["kind"] in _PROBLEM_KINDS or e["kind"] == "self_diagnose"]


def _problem_text(e: Event) -> tuple[str, str]:
    kind = e["kind"]
    if kind == "tool":
        return f"{e.get('tool', '?')} failed ({e.get('error_kind') or 'error'})", str(e.get("output", ""))
    if kind == "self_diagnose":
        return f"recovery: {e.get('action', '?')} after {e.get('error_kind', '?')}", str(e.get("diagnosis") or e.get("message", ""))
    if kind == "error":
        return f"{e.get('source', '?')} error", str(e.get("message", ""))
    if kind == "budget":
        return f"budget {e.get('limit', '?')} reached", f"used {e.get('used')} of {e.get('value')}, next cost {e.get('next_cost')}"
    if kind == "approval_refused":
        return "approval decision refused", f"{e.get('approval_id', '?')}: {e.get('reason', '')}"
    return kind.replace("_", " "), _compact({k: v for k, v in _data(e).items()})


def _errors(goals: list[Goal]) -> Raw:
    items = []
    for goal in goals:
        for cycle in goal.cycles:
            for e in _problems(cycle.events):
                title, text = _problem_text(e)
                items.append(tag(
                    "li",
                    tag("div", tag("a", f"Goal {goal.index}, {cycle.label.lower()}", href=f"#e{e.get('id', '')}"), " · ", _when(e.get("ts")), " · ",
                        tag("b", title)),
                    _pre(text),
                    cls="diag" if e["kind"] == "self_diagnose" else "bad",
                ))
    body = tag("ol", items, cls="errors") if items else tag("p", "No errors.", cls="dim")
    return tag("section", tag("h2", "Errors"), body, id="errors")


def _costs(row: dict[str, Any], goals: list[Goal]) -> Raw:
    rows, total = [], Cost()
    for goal in goals:
        for cycle in goal.cycles:
            cost = cycle.cost()
            if not cost.model_calls and not cost.usd:
                continue
            total += cost
            rows.append(tag("tr", tag("td", goal.index), tag("td", tag("a", cycle.label, href=f"#{cycle.anchor}")), tag("td", _int(cost.model_calls)),
                            tag("td", _int(cost.input_tokens)), tag("td", _int(cost.output_tokens)), tag("td", _usd(cost.usd))))
    u = row.get("usage") or {}
    extra = Cost(
        model_calls=int(u.get("model_calls") or 0) - total.model_calls, input_tokens=int(u.get("input_tokens") or 0) - total.input_tokens,
        output_tokens=int(u.get("output_tokens") or 0) - total.output_tokens, usd=round(float(u.get("usd") or 0.0) - total.usd, 9),
    )
    foot = [tag("tr", tag("th", "all cycles", colspan=2), tag("th", _int(total.model_calls)), tag("th", _int(total.input_tokens)),
                tag("th", _int(total.output_tokens)), tag("th", _usd(total.usd)))]
    if extra.model_calls > 0 or extra.input_tokens > 0 or extra.usd > 1e-9:
        foot.append(tag("tr", tag("td", "other model calls (diagnoses, summaries: counted in usage, not in the event log)", colspan=2),
                        tag("td", _int(extra.model_calls)), tag("td", _int(extra.input_tokens)), tag("td", _int(extra.output_tokens)), tag("td", _usd(extra.usd))))
    foot.append(tag("tr", tag("th", "thread usage", colspan=2), tag("th", _int(u.get("model_calls"))), tag("th", _int(u.get("input_tokens"))),
                    tag("th", _int(u.get("output_tokens"))), tag("th", _usd(u.get("usd")))))
    head = tag("tr", [tag("th", h) for h in ("goal", "cycle", "model calls", "input tokens", "output tokens", "cost")])
    return tag("section", tag("h2", "Cost per cycle"), tag("table", tag("thead", head), tag("tbody", rows), tag("tfoot", foot)), id="cost")


_CSS = """
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da;--diag:#8250df;--mute:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;margin:0 auto;max-width:1100px;padding:24px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;border-bottom:1px solid var(--line);padding-bottom:4px;margin-top:32px}
h3{font-size:16px;margin:20px 0 8px}h4{font-size:14px;margin:0 0 6px}code{font:12px ui-monospace,monospace;background:var(--bg);padding:1px 4px;border-radius:4px}
pre{font:12px/1.4 ui-monospace,monospace;white-space:pre-wrap;word-break:break-word;margin:4px 0;padding:6px 8px;border-radius:6px;background:var(--bg)}
pre.say{background:#fff8c5}.dim{color:var(--mute)}a{color:var(--info)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0 0 16px}dt{font-weight:600}dd{margin:0}
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:12px}.tile{border:1px solid var(--line);border-radius:8px;padding:6px 12px;min-width:110px}
.tile .n{font-size:18px;font-weight:600}.tile .l{color:var(--mute);font-size:12px}nav a{margin-right:14px}
.badge{display:inline-block;font-size:12px;font-weight:600;padding:0 8px;border-radius:10px;color:#fff}
.b-ok{background:var(--ok)}.b-warn{background:var(--warn)}.b-bad{background:var(--bad)}.b-info{background:var(--info)}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th,tfoot th{background:var(--bg)}
.cycle{border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin:10px 0}
ol.events{list-style:none;margin:0;padding:0}.ev{display:grid;grid-template-columns:95px 130px 1fr;gap:8px;padding:4px 0 4px 8px;border-left:3px solid var(--line)}
.ev+.ev{border-top:1px dashed var(--line)}.ev .ts{color:var(--mute);font:12px ui-monospace,monospace}.ev .kind{font-weight:600}
.ev.bad,ol.errors li.bad{border-left-color:var(--bad)}.ev.warn{border-left-color:var(--warn)}.ev.diag,ol.errors li.diag{border-left-color:var(--diag)}
ul.calls,ul.kv{margin:4px 0;padding-left:18px}ol.errors li{border-left:3px solid var(--line);padding-left:8px;margin:8px 0}
footer{margin-top:32px;color:var(--mute);font-size:12px}
@media print{.cycle{break-inside:avoid}}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render_report(status_row: dict[str, Any], events: Sequence[Event], *, redactor: Redactor | None = None) -> str:
    """The HTML report for one thread: ``status_row`` from ``Agent.status(thread)``, ``events`` from ``Agent.history(thread)``.

    With ``redactor``, every string of both is redacted first (``write_report`` passes the agent's secrets and
    every other secret this process knows: a report never shows one, even from a database written before
    redaction covered every input).
    """
    if redactor:
        status_row, events = redactor.deep(status_row), redactor.deep(list(events))
    goals = group(events, str(status_row.get("goal", "")))
    thread = str(status_row.get("thread", "?"))
    document = tag(
        "html",
        tag("head", tag("meta", charset="utf-8"), tag("meta", http_equiv="Content-Security-Policy", content=_CSP),
            tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
            tag("title", f"kasloop report: {thread}"), tag("style", Raw(_CSS))),
        tag("body",
            _header(status_row, events), _goals(goal_summaries(str(status_row.get("status", "")), events, str(status_row.get("goal", "")))),
            _timeline(goals),
            _approvals(status_row, goals), _errors(goals), _costs(status_row, goals),
            tag("footer", f"Generated by kasloop on {_date(time.time())} from {len(events)} events.")),
        lang="en",
    )
    return "<!DOCTYPE html>\n" + document + "\n"


# -- writing ------------------------------------------------------------------------------------------


def _file_name(thread: str) -> str:
    """``THREAD.html``; characters a file name cannot safely hold (``/``, spaces...) become ``_``."""
    return (re.sub(r"[^A-Za-z0-9._-]", "_", thread).lstrip(".") or "thread") + ".html"


def default_report_path(home: Path, thread: str) -> Path:
    """``HOME/reports/THREAD.html``."""
    return home / "reports" / _file_name(thread)


def _write_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename (the files jail's writer): a reader never sees half a report.

    The file keeps ``mkstemp``'s owner-only mode: a report quotes tool outputs, so sharing it is the owner's choice.
    """
    atomic_write(path, text.encode("utf-8"))


async def write_report(agent: Agent, thread: str, path: Path | str | None = None) -> Path:
    """Render ``thread``'s report to ``path`` (default ``HOME/reports/THREAD.html``); returns the path.

    An existing folder as ``path`` gets ``THREAD.html`` inside it.

    Raises:
        ThreadNotFound: no such thread.
        UsageError: the file cannot be written there.
    """
    [row] = await agent.status(thread)
    events = await agent.history(thread)
    target = Path(path).expanduser() if path is not None else default_report_path(agent.home, thread)
    if target.is_dir():
        target = target / _file_name(thread)
    redactor = Redactor.for_config(agent.config).merged(known_secrets())
    # A long thread's report takes a moment to build.
    text = await asyncio.to_thread(functools.partial(render_report, row, events, redactor=redactor))
    try:
        await asyncio.to_thread(_write_atomic, target, text)
    except OSError as exc:
        raise UsageError(f"Cannot write the report to `{target}`: {exc.strerror or exc}; choose another path (CLI: --out).") from None
    return target
