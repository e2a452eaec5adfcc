"""``kasloop report THREAD``: one self-contained HTML file telling what a thread did and what it cost.

Why a file and not a web app: a report is attached to a ticket, mailed, or
opened days later on another machine, so it has no external resources (CSS
inline, no script at all) and a Content-Security-Policy that forbids loading
anything, so a page built from model and tool text cannot run code or phone
home even if escaping ever failed. Escaping is by construction: markup is only
built with ``tag()``, which escapes every string it is given, and only
``tag()`` output (``Raw``) passes through unescaped (both in
:mod:`kasloop.reporting.html`, with the CSS and the CSP).

The report reads what ``Agent.status`` and ``Agent.history`` return: events
of kind ``goal`` start a goal section; the events after it are grouped into
cycles by ``step`` (events logged with step 0 between cycles, such as
``told`` or ``approval_announced``, join the cycle they happened in). The
grouping and what each goal and cycle cost are :mod:`kasloop.reporting.timeline`;
this module builds the page from them and writes it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kasloop.support.atomic_files import atomic_write
from kasloop.errors import UsageError
from kasloop.safety.secrets import Redactor, known_secrets
from kasloop.reporting.html import _CSP, _CSS, Raw, _badge, _clock, _compact, _date, _int, _join, _pre, _seconds, _usd, _when, tag
from kasloop.reporting.timeline import _APPROVAL_KINDS, _PROBLEM_KINDS, Cost, Cycle, Event, Goal, _data, _problems, goal_summaries, group

if TYPE_CHECKING:
    from kasloop.agent import Agent

__all__ = ["default_report_path", "render_report", "write_report"]


# -- event rendering ----------------------------------------------------------------------------------


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


_STATUS_TONE = {"done": "ok", "running": "info", "waiting_approval": "warn", "sleeping": "info", "paused_budget": "warn"}


def _status_badge(status: str) -> Raw:
    return _badge(status, _STATUS_TONE.get(status, "bad"))


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
