"""self_diagnose: decide what a failure means and which way the loop goes next.

The ladder, in order: retry transient failures with exponential backoff and
jitter (bounded by ``tool_retries``); otherwise give the model the error and
a diagnosis so it can change its plan; after ``MAX_CONSECUTIVE_FAILURES``
failures in a row, or when a side effect's outcome is unknown, escalate: a
human at levels 2 and 3, a stop with status ``escalated`` at level 4.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from kasloop.nodes.deps import NodeDeps, step_of
from kasloop.nodes.messages import failed_call_message
from kasloop.state import AgentState, RunContext

__all__ = ["MAX_CONSECUTIVE_FAILURES", "make_self_diagnose", "route_after_diagnosis"]

MAX_CONSECUTIVE_FAILURES = 3
_RETRYABLE = {"transient", "timeout"}


def _backoff(base: float, attempt: int) -> float:
    return base * (2**attempt) * (0.5 + random.random() / 2)


def _idempotent(deps: NodeDeps, name: str) -> bool:
    tool = deps.tools.get(name)
    return tool is not None and tool.idempotent


def make_self_diagnose(deps: NodeDeps) -> Any:
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

        escalate = attempts > MAX_CONSECUTIVE_FAILURES or (kind == "outcome_unknown" and ctx.autonomy < 4)
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

        # Fixable: the model gets the error and plans again.
        diagnosis = f"{error.get('tool') or 'the model'} failed ({kind}): {error['message'][:500]}"
        update: dict[str, Any] = {"attempts": attempts, "diagnosis": diagnosis, "last_error": None, "pending": []}
        if source == "tool":
            update["messages"] = [
                failed_call_message(c, kind=kind, message=error["message"])
                for c in failed
            ]
        else:
            update["messages"] = [HumanMessage(f"Your last reply could not be used: {error['message']}. Reply with a valid tool call or a plain-text answer.")]
        await log("replan")
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
