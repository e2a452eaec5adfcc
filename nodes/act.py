"""act: run the allowed and approved calls, each between an intent row and a result row.

Before a call its intent is committed to the ledger under an idempotency key
(thread, model turn, call id, attempt); after it, its result. On a re-run
(resume after a crash or an approval) a recorded result is reused, never
re-executed; an intent without a result is re-run only for idempotent tools,
otherwise reported as ``outcome_unknown``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.runtime import Runtime

from kasloop.checkpoints.ledger import idempotency_key
from kasloop.nodes.deps import NodeDeps, step_of
from kasloop.nodes.messages import tool_ok
from kasloop.state import AgentState, PendingCall, RunContext, empty_usage
from kasloop.tools.base import ToolContext, ToolResult, run_tool

__all__ = ["OUTCOME_UNKNOWN", "make_act"]

DONE_CALLS_KEPT = 20

OUTCOME_UNKNOWN = (
    "Error: the previous attempt of `{tool}` was interrupted after it started and before its result was "
    "recorded; it may or may not have taken effect. It was not repeated automatically."
)


def make_act(deps: NodeDeps) -> Any:
    async def execute(call: PendingCall, ctx: RunContext) -> tuple[ToolResult, bool]:
        """Run one call through the ledger. Returns the result and whether the tool actually ran."""
        tool = deps.tools[call["tool"]]
        key = idempotency_key(ctx.thread_id, call.get("turn", 0), call["id"], call.get("attempt", 0))
        entry = await deps.ledger.claim(
            key, thread_id=ctx.thread_id, call_id=call["id"], tool=tool.name, arg_hash=call["arg_hash"], idempotent=tool.idempotent
        )
        if entry is not None and entry.result is not None:
            return ToolResult.from_json(entry.result), False
        if entry is not None and not tool.idempotent:
            result = ToolResult(ok=False, output=OUTCOME_UNKNOWN.format(tool=tool.name), error_kind="outcome_unknown")
            await deps.ledger.record_result(key, result.to_json())
            return result, False
        # The far side (Idempotency-Key, Message-ID) gets one key for every attempt of this call, so it
        # can spot a retry; the ledger keys each attempt separately.
        far_key = idempotency_key(ctx.thread_id, call.get("turn", 0), call["id"])
        tool_ctx = ToolContext(
            workspace=deps.config.workspace, thread_id=ctx.thread_id, idempotency_key=far_key, extra=deps.config.tool_settings,
            resources=deps.resources,
        )
        result = await run_tool(tool, call["args"], tool_ctx)
        await deps.ledger.record_result(key, result.to_json())
        return result, True

    async def act(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = deps.context(runtime)
        step = step_of(state)
        usage = dict(state.get("usage") or empty_usage())
        messages: list[ToolMessage] = []
        failed: list[PendingCall] = []
        pending = list(state.get("pending", []))
        done_calls = list(state.get("done_calls", []))
        for index, call in enumerate(pending):
            if ctx.max_tool_calls is not None and usage["tool_calls"] >= ctx.max_tool_calls:
                await deps.events.append(ctx.thread_id, step, "budget", limit="max_tool_calls", value=usage["tool_calls"])
                return {
                    "messages": messages,
                    "done_calls": done_calls,
                    "pending": failed + pending[index:],
                    "usage": usage,
                    "status": "paused_budget",
                    "output": f"Paused: the next tool call would exceed max_tool_calls of {ctx.max_tool_calls} "
                    f"(tool_calls={usage['tool_calls']}); raise budgets.max_tool_calls in kasloop.toml.",
                }
            result, ran = await execute(call, ctx)
            if ran:
                usage["tool_calls"] += 1
            await deps.events.append(
                ctx.thread_id, step, "tool", tool=call["tool"], call_id=call["id"], arg_hash=call["arg_hash"],
                ok=result.ok, error_kind=result.error_kind, reused=not ran, output=result.output[:300],
            )
            if result.ok:
                messages.append(tool_ok(call["id"], call["tool"], result.output))
                done_calls = [*done_calls, call["arg_hash"]][-DONE_CALLS_KEPT:]
            else:
                failed.append({**call, "error": {"kind": result.error_kind or "permanent", "output": result.output}})
        update: dict[str, Any] = {"messages": messages, "pending": failed, "usage": usage, "done_calls": done_calls}
        if failed:
            first = failed[0]
            update["last_error"] = {
                "kind": first["error"]["kind"], "message": first["error"]["output"], "tool": first["tool"],
                "call_id": first["id"], "source": "tool",
            }
        else:
            update["last_error"] = None
            update["attempts"] = 0
        return update

    return act
