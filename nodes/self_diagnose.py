"""self_diagnose: decide what a failure means and which way the loop goes next.

The ladder, in order: retry transient failures with exponential backoff and
jitter (bounded by ``tool_retries``); then the fallback chain (the next model
in ``model`` when the model keeps failing); otherwise give the model the error
and a diagnosis so it can change its plan; after ``MAX_CONSECUTIVE_FAILURES``
failures in a row, or when a side effect's outcome is unknown, escalate: a
human at levels 2 and 3, a stop with status ``escalated`` at level 4.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from pydantic import ValidationError

from kasloop.support.backoff import backoff_delay
from kasloop.errors import ModelError
from kasloop.nodes.deps import NodeDeps, step_of
from kasloop.models.structured import BAD_OUTPUT
from kasloop.nodes.diagnosis import diagnose, diagnosis_request
from kasloop.nodes.working_memory import prompt_tokens
from kasloop.nodes.messages import failed_call_message, untrusted_sources
from kasloop.guardrails.policy import arg_hash, gate_call, matching_rule_action
from kasloop.state import AgentState, PendingCall, RunContext, Usage, empty_usage

__all__ = ["MAX_CONSECUTIVE_FAILURES", "make_self_diagnose", "route_after_diagnosis"]

MAX_CONSECUTIVE_FAILURES = 3
_RETRYABLE = {"transient", "timeout"}
_ALTERNATE_FOR = {"transient", "timeout", "permanent"}
"""Failures another tool may get around; a policy denial or bad arguments never switch tools."""


def _backoff(base: float, attempt: int) -> float:
    """``retry_backoff`` doubled per attempt, then between half and all of it at random (no cap: ``tool_retries`` bounds it)."""
    return backoff_delay(attempt, base=base, jitter=(0.5, 1.0))


def _idempotent(deps: NodeDeps, name: str) -> bool:
    tool = deps.tools.get(name)
    return tool is not None and tool.idempotent


def _failure(call: PendingCall, kind: str, message: str) -> dict[str, str]:
    """What failed, kept until a call succeeds: act then records "X failed with Y; Z worked" as a learning
    (marked untrusted when the failure's text is outside content, e.g. an error page)."""
    text = " ".join(message.split()).removeprefix("Error: ")
    failure = {"tool": call["tool"], "kind": kind, "message": text if len(text) <= 120 else text[:119] + "…"}
    if (call.get("error") or {}).get("untrusted"):
        failure["untrusted"] = "true"
    return failure


def _tainted(deps: NodeDeps, state: AgentState, failed: list[PendingCall]) -> bool:
    """Outside content is in context: in working memory, inherited, or in the failures being handled now."""
    if not deps.config.ask_after_untrusted:
        return False
    return (
        bool(untrusted_sources(state.get("messages", [])))
        or bool(state.get("inherited_taint"))
        or any((c.get("error") or {}).get("untrusted") for c in failed)
    )


def alternate_call(deps: NodeDeps, ctx: RunContext, state: AgentState, call: PendingCall) -> PendingCall | None:
    """The failed ``call`` redone with the first declared alternate this thread may run without asking."""
    tool = deps.tools.get(call["tool"])
    offered = deps.offered_tools(ctx)
    tainted = _tainted(deps, state, list(state.get("pending", [])))
    for name in tool.alternates if tool is not None else ():
        alternate = offered.get(name)
        if alternate is None:
            continue
        args = {k: v for k, v in call["args"].items() if k in alternate.args_model.model_fields}
        try:
            alternate.args_model.model_validate(args)
        except ValidationError:
            continue
        risk = ctx.risk_overrides.get(name, alternate.risk)
        rule = matching_rule_action(list(ctx.rules), alternate, args, workspace=deps.config.workspace)
        gate, reason = gate_call(autonomy=ctx.autonomy, risk=risk, rule_action=rule, tainted=tainted)
        if gate != "allow":
            continue  # a fallback never asks a human or dodges a rule: the model re-plans instead
        redo = {k: v for k, v in call.items() if k != "error"}
        return PendingCall(**{  # type: ignore[typeddict-item]
            **redo, "tool": name, "args": args, "risk": risk, "gate": gate, "reason": f"fallback for {call['tool']}: {reason}",
            "arg_hash": arg_hash(name, args), "attempt": call.get("attempt", 0) + 1,
        })
    return None


def make_self_diagnose(deps: NodeDeps) -> Any:
    async def ask_for_plan(
        state: AgentState, ctx: RunContext, usage: Usage, call: PendingCall | None, kind: str, message: str, costs: dict[str, Any]
    ) -> str | None:
        """Rung 3: the model's cause and changed plan for this failure (None if it cannot, or a budget says no).

        What the call cost goes into ``costs`` (for the event log) as well as into ``usage``."""
        goal = " / ".join(g["text"] for g in state.get("goals", []) if g["status"] == "open")[-500:]
        request = diagnosis_request(goal, call, kind, message, state.get("messages", []))
        if await deps.model_budget({**state, "usage": usage}, ctx, prompt_tokens(request)) is not None:
            return None
        try:
            model = deps.model_for(state)
        except ModelError:
            return None
        started = time.monotonic()
        plan, spent = await diagnose(model, request, turn=state.get("model_turns", 0))
        costs.update(await deps.spent(state, ctx, usage, spent.get("input_tokens", 0), spent.get("output_tokens", 0), time.monotonic() - started))
        return plan

    async def self_diagnose(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = deps.context(runtime)
        step = step_of(state)
        error = state.get("last_error") or {"kind": "permanent", "message": "unknown failure", "source": "tool"}
        attempts = state.get("attempts", 0) + 1
        failed = list(state.get("pending", []))
        source = error.get("source", "tool")
        kind = error["kind"]

        def log(action: str, **extra: Any) -> Any:
            return deps.events.append(ctx.thread_id, step, "self_diagnose", action=action, error_kind=kind, source=source, attempts=attempts, message=error["message"][:300], **extra)

        index = state.get("model_index", 0)
        can_fall_back = source == "model" and index + 1 < len(deps.models)

        async def fall_back() -> dict[str, Any]:
            # The next model gets a fresh count; a new task starts again from the first model.
            await log("fallback", from_model=deps.models.spec(index), to_model=deps.models.spec(index + 1))
            return {"model_index": index + 1, "attempts": 0, "last_error": None}

        escalate = attempts > MAX_CONSECUTIVE_FAILURES or (kind == "outcome_unknown" and ctx.autonomy < 4)
        if escalate and can_fall_back:
            return await fall_back()
        if escalate:
            await log("escalate")
            if ctx.autonomy == 4:
                return {"attempts": attempts, "status": "escalated", "output": f"Stopped after {attempts} failures in a row; last: {error['message']}"}
            return {"attempts": attempts, "status": "waiting_approval", "diagnosis": f"stuck: {error['message']}"}

        if kind in _RETRYABLE:
            # Only idempotent calls are retried unasked: a timed-out POST or shell command may have
            # taken effect, so the model (or a human) decides about those.
            retryable = all(c.get("attempt", 0) < deps.config.tool_retries and _idempotent(deps, c["tool"]) for c in failed)
            if source == "tool" and failed and retryable:
                delay = _backoff(deps.config.retry_backoff, failed[0].get("attempt", 0))
                await log("retry", delay=round(delay, 3))
                await asyncio.sleep(delay)
                return {"attempts": attempts - 1, "pending": [{**c, "attempt": c.get("attempt", 0) + 1} for c in failed]}
            if source == "model" and attempts <= deps.config.tool_retries:
                delay = _backoff(deps.config.retry_backoff, attempts - 1)
                await log("retry_model", delay=round(delay, 3))
                await asyncio.sleep(delay)
                return {"attempts": attempts, "last_error": None}
            if can_fall_back:
                return await fall_back()

        if source == "tool" and kind in _ALTERNATE_FOR and len(failed) == 1:
            redo = alternate_call(deps, ctx, state, failed[0])
            if redo is not None:
                await log("fallback", from_tool=failed[0]["tool"], to_tool=redo["tool"])
                return {"attempts": attempts, "pending": [redo], "recovering": _failure(failed[0], kind, error["message"])}

        # Fixable: the model gets the error (and its own cause-and-plan for it) and plans again.
        diagnosis = f"{error.get('tool') or 'the model'} failed ({kind}): {error['message'][:500]}"
        update: dict[str, Any] = {"attempts": attempts, "diagnosis": diagnosis, "last_error": None, "pending": []}
        costs: dict[str, Any] = {}
        if deps.config.diagnose_with_model and kind not in ("stuck", BAD_OUTPUT):  # what is wrong with an answer is known exactly
            usage = Usage(**(state.get("usage") or empty_usage()))
            plan = await ask_for_plan(state, ctx, usage, failed[0] if failed else None, kind, error["message"], costs)
            if plan:
                update["diagnosis"] = f"{diagnosis[:300]} — diagnosis: {plan}"
                update["usage"] = usage
        if source == "tool" and failed and kind != "stuck":
            update["recovering"] = _failure(failed[0], kind, error["message"])
        if source == "tool":
            update["messages"] = [
                failed_call_message(c, kind=kind, message=error["message"])
                for c in failed
            ]
        elif kind in ("stuck", BAD_OUTPUT):
            update["messages"] = [HumanMessage(f"Note from kasloop: {error['message']}")]
        else:
            update["messages"] = [HumanMessage(f"Your last reply could not be used: {error['message']}. Reply with a valid tool call or a plain-text answer.")]
        await log("replan", diagnosis=update["diagnosis"][:500], **costs)
        return update

    return self_diagnose


def route_after_diagnosis(state: AgentState) -> str:
    """escalated → end; stuck → a human; calls left to retry → act; otherwise → decide."""
    status = state.get("status")
    if status == "escalated":
        return "stuck (L4)"
    if status == "waiting_approval":
        return "stuck (L2, L3)"
    if state.get("pending"):
        return "transient: retry"
    return "fixable"
