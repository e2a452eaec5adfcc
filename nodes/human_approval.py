"""human_approval: pause the thread until a human decides, then apply each decision.

It is asked three things: calls the policy gates (``tool_call``), a task
that is stuck (``escalation``) and a budget that ran out at levels 2 and 3
(``budget``: raise the limit, or leave the thread paused). The node calls
LangGraph's ``interrupt()`` with every request of this step
together (several calls proposed at once are decided together, one decision
each). A resumed node re-runs from its start, so nothing before
``interrupt()`` has side effects: request ids and payloads are derived from
the state alone, and kasloop's runner (not this node) writes them to the
approvals table.

Resume with ``Command(resume={approval_id: decision, ...})`` (or a single
decision applied to every request). Each decision is bound to its request by
:func:`kasloop.guardrails.approvals.bind_decision`, the same check ``Agent.decide`` made
before recording it: a decision whose ``arg_hash`` is not the request's is
refused (it was made for different arguments), and edited arguments must
pass the tool's schema. So a resume that never went through kasloop's
approvals table (LangGraph Studio) is held to the same rules, and the node
applies the hash the check bound instead of computing its own. A refused
resume does not stick: the node pauses again with the same requests and a
``refused`` field saying why (``error``: the refusal's type, e.g. ``ApprovalStale``), and the
next resume answers that pause.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from kasloop.guardrails.approvals import DECISIONS, ApprovalRequest, approval_id, bind_decision
from kasloop.guardrails.budget import budget_request
from kasloop.errors import ApprovalError
from kasloop.nodes.deps import NodeDeps, step_of
from kasloop.nodes.messages import failed_call_message, tool_error, tool_ok
from kasloop.state import AgentState, PendingCall, RunContext
from kasloop.tools.base import Tool

__all__ = ["ApprovalRequest", "build_requests", "make_human_approval", "route_after_approval"]


def _escalation_id(ctx: RunContext, state: AgentState) -> str:
    return approval_id(ctx.thread_id, step_of(state), state.get("model_turns", 0), state.get("attempts", 0), "escalation")


def build_requests(deps: NodeDeps, ctx: RunContext, state: AgentState) -> list[ApprovalRequest]:
    """The requests this pause is about, derived from the state alone (stable across re-runs)."""
    ttl = deps.config.approval_ttl
    breach = state.get("budget_breach")
    if breach and state.get("status") == "waiting_approval":  # perceive, decide or act stopped at a limit (levels 2, 3)
        return [budget_request(ctx.thread_id, breach, ttl)]
    asks = [c for c in state.get("pending", []) if c.get("gate") == "ask" and "decision" not in c]
    if asks:
        return [
            ApprovalRequest(
                approval_id=c["approval_id"], thread=ctx.thread_id, kind="tool_call", call_id=c["id"], tool=c["tool"],
                args=c["args"], risk=c["risk"], reason=c["reason"], arg_hash=c["arg_hash"],
                created_at=c["created_at"], expires_at=c["created_at"] + ttl,
            )
            for c in asks
        ]
    failed = state.get("pending", [])
    first = failed[0] if failed else None
    created = time.time()  # only the id must be stable across re-runs; the runner keeps the first payload
    tried = f"{state.get('attempts', 0)} attempts"
    return [
        ApprovalRequest(
            approval_id=_escalation_id(ctx, state), thread=ctx.thread_id, kind="escalation",
            call_id=first["id"] if first else "", tool=first["tool"] if first else "(model)",
            args=first["args"] if first else {}, risk="high",
            reason=f"{state.get('diagnosis') or 'stuck'} (tried: {tried}). Approve to retry, respond with guidance, or reject to stop.",
            arg_hash=first["arg_hash"] if first else "", created_at=created, expires_at=created + ttl,
        )
    ]


def _normalise(resume: Any, requests: list[ApprovalRequest], tools: Mapping[str, Tool]) -> dict[str, dict[str, Any]]:
    """Each request's decision from the resume value, bound by the one check (``ApprovalError`` if one is missing or refused)."""
    if isinstance(resume, dict) and "decision" in resume:
        resume = {r["approval_id"]: resume for r in requests}
    if not isinstance(resume, dict):
        raise ApprovalError(f"Resume value must map approval ids to decisions, got {type(resume).__name__}.")
    decisions: dict[str, dict[str, Any]] = {}
    for request in requests:
        decision = resume.get(request["approval_id"])
        if not isinstance(decision, Mapping):
            raise ApprovalError(
                f"No valid decision for approval `{request['approval_id']}`; give one of {', '.join(DECISIONS)}."
            )
        bound = bind_decision(request, decision, tools.get(request["tool"]))
        decisions[request["approval_id"]] = {**bound.stored, "by": decision.get("by"), "channel": decision.get("channel")}
    return decisions


def _apply_to_calls(state: AgentState, decisions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kept: list[PendingCall] = []
    messages: list[BaseMessage] = []
    for call in state.get("pending", []):
        decision = decisions.get(call["approval_id"])
        if decision is None:
            kept.append(call)
            continue
        kind = decision["decision"]
        if kind in ("approve", "edit"):  # the bound decision carries the arguments that run and their hash
            args = decision["args"] if kind == "edit" else call["args"]
            kept.append({**call, "args": args, "arg_hash": decision["arg_hash"], "decision": kind, "gate": "allow"})
        elif kind == "reject":
            reason = decision.get("reason") or "no reason given"
            messages.append(tool_error(call["id"], call["tool"], "rejected", f"Rejected by a human: {reason}. Do not retry this call as it was; choose another way."))
        else:
            messages.append(tool_ok(call["id"], call["tool"], f"A human answered instead of running `{call['tool']}`: {decision.get('text', '')}"))
    return {"pending": kept, "messages": messages, "status": "running"}


def _apply_to_escalation(state: AgentState, decision: dict[str, Any]) -> dict[str, Any]:
    failed = state.get("pending", [])
    kind = decision["decision"]
    base: dict[str, Any] = {"attempts": 0, "diagnosis": None, "last_error": None}
    if kind in ("approve", "edit"):
        retry = [{**c, "attempt": c.get("attempt", 0) + 1} for c in failed]
        if kind == "edit" and retry:  # the request named the first failed call: the edit is its new arguments
            retry[0] = {**retry[0], "args": decision["args"], "arg_hash": decision["arg_hash"]}
        return {**base, "status": "running", "pending": retry}
    if kind == "respond":
        text = decision.get("text", "")
        if failed:
            msgs: list[BaseMessage] = [
                failed_call_message(c, kind="failed", message="failed", note=f"Guidance from a human: {text}")
                for c in failed
            ]
        else:
            msgs = [HumanMessage(f"Guidance from a human: {text}")]
        return {**base, "status": "running", "pending": [], "messages": msgs}
    reason = decision.get("reason") or "stopped by a human"
    msgs = [tool_error(c["id"], c["tool"], "stopped", f"Stopped by a human: {reason}") for c in failed]
    return {**base, "status": "failed", "pending": [], "messages": msgs, "output": f"Stopped by a human: {reason}"}


def _apply_to_budget(decision: dict[str, Any]) -> dict[str, Any]:
    """Rejected: the run ends, still paused. Approved: the thread goes on where it stopped (``budget_breach``
    stays set for the router, until perceive or act clears it).

    The limit itself is not the graph's to raise: kasloop writes the granted value into the thread's stored
    policy, with the decision, before it resumes. A resume straight into the graph (LangGraph Studio) raises
    nothing, so the node that stopped finds the same limit and asks again: approving never spends past it.
    """
    if decision["decision"] == "reject":
        return {"status": "paused_budget"}
    return {"status": "running"}


def make_human_approval(deps: NodeDeps) -> Any:
    async def human_approval(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = deps.context(runtime)
        requests = build_requests(deps, ctx, state)
        pause: dict[str, Any] = {"kind": requests[0]["kind"], "thread": ctx.thread_id, "requests": requests}
        resume = interrupt(pause)
        while True:
            try:
                decisions = _normalise(resume, requests, deps.tools)
                break
            except ApprovalError as exc:
                # A refused resume (LangGraph Studio, your own Command) is not the thread's last word: the
                # node pauses again, saying why, and the next resume value answers this new interrupt.
                resume = interrupt({**pause, "refused": exc.message, "error": type(exc).__name__})
        await deps.events.append(
            ctx.thread_id, step_of(state), "human_approval",
            decisions={k: {"decision": v["decision"], "by": v.get("by"), "channel": v.get("channel")} for k, v in decisions.items()},
        )
        if requests[0]["kind"] == "escalation":
            return _apply_to_escalation(state, decisions[requests[0]["approval_id"]])
        if requests[0]["kind"] == "budget":
            return _apply_to_budget(decisions[requests[0]["approval_id"]])
        return _apply_to_calls(state, decisions)

    return human_approval


def route_after_approval(state: AgentState) -> str:
    """Approved calls run (and the calls a budget pause held back, once it is raised); a raised budget with no
    call left goes on with the next cycle; otherwise the model hears the rejections; a stop or a kept budget ends the run."""
    if state.get("status") in ("failed", "paused_budget"):
        return "stopped / budget kept"
    if state.get("pending"):
        return "approve / edit"
    return "budget raised" if state.get("budget_breach") else "reject / respond"
