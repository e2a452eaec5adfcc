"""act: run the allowed and approved calls, each between an intent row and a result row.

Before a call its intent is committed to the ledger under an idempotency key
(thread, model turn, the call id kasloop gave it, attempt); after it, its
result. A row found under the key for other arguments (another ``arg_hash``)
is never reused: the call is answered with a ``conflict`` error the model
reads, and nothing runs. On a re-run
(resume after a crash or an approval) a recorded result is reused, never
re-executed; an intent without a result is re-run only for idempotent tools,
otherwise the tool is asked to reconcile (did the interrupted call take
effect?) if it can, and the call is reported as ``outcome_unknown`` when it
cannot tell.
"""

from __future__ import annotations

import asyncio
import time
from types import MappingProxyType
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.runtime import Runtime

from kasloop.guardrails.budget import budget_pause, tool_call_breach
from kasloop.checkpoints.ledger import idempotency_key
from kasloop.errors import KasloopError
from kasloop.memory.items import DEFAULT_NAMESPACE
from kasloop.memory.long_term import memory_trust, shared_memory
from kasloop.nodes.deps import NodeDeps, step_of
from kasloop.nodes.messages import tool_ok, untrusted_sources
from kasloop.nodes.observations import call_hash_of, observes, poll_delay, remember_observation
from kasloop.nodes.tool_trace import stream_writer, tool_span
from kasloop.state import AgentState, PendingCall, RunContext, empty_usage
from kasloop.steps import advanced, waits
from kasloop.tools.base import Tool, ToolContext, ToolResult, run_tool
from kasloop.tools.files import seen_after

__all__ = ["LEDGER_CONFLICT", "OUTCOME_UNKNOWN", "RECONCILED", "make_act", "reconcile"]

DONE_CALLS_KEPT = 20

OUTCOME_UNKNOWN = (
    "Error: the previous attempt of `{tool}` was interrupted after it started and before its result was "
    "recorded; it may or may not have taken effect. It was not repeated automatically."
)
RECONCILED = (
    "`{tool}` was interrupted after it started, and checking showed it did take effect; it was not repeated."
)
LEDGER_CONFLICT = (
    "Error: kasloop's ledger already holds a call `{key}` with other arguments (recorded `{recorded}`, this one "
    "`{proposed}`); this call was not run and the recorded result was not reused. Propose the call again."
)


async def reconcile(tool: Tool, args: dict[str, Any], ctx: ToolContext) -> bool | None:
    """Ask ``tool`` whether the interrupted call keyed ``ctx.idempotency_key`` took effect; None when it cannot tell.

    A failing or slow check is "cannot tell": the call is then never re-run silently.
    """
    if tool.reconcile is None:
        return None
    try:
        parsed = tool.args_model.model_validate(args)
        found = await asyncio.wait_for(tool.reconcile(parsed, ctx), timeout=tool.timeout)
    except Exception:  # noqa: BLE001 - any doubt means "outcome unknown"
        return None
    return found if isinstance(found, bool) else None


def add_agent_usage(usage: dict[str, Any], spent: Any) -> None:
    """Count what an agent a tool ran (a team's specialist) spent, so this thread's budgets cover it.

    Its wall time is already in this call's seconds, and its cycles are its own, not this thread's steps.
    """
    if not isinstance(spent, dict):
        return
    for key in ("tool_calls", "model_calls", "input_tokens", "output_tokens"):
        usage[key] += int(spent.get(key, 0))
    usage["usd"] = round(usage["usd"] + float(spent.get("usd", 0.0)), 9)


def make_act(deps: NodeDeps) -> Any:
    async def execute(call: PendingCall, ctx: RunContext, step: int, state: AgentState, *, outside: bool) -> tuple[ToolResult, bool]:
        """Run one call through the ledger. Returns the result and whether the tool actually ran.

        ``outside``: the thread has outside content in context; what the call adds to long-term memory is
        then marked untrusted, and a call that read an untrusted memory item returns outside content.
        """
        tool = deps.tools[call["tool"]]
        key = idempotency_key(ctx.thread_id, call.get("turn", 0), call["id"], call.get("attempt", 0))
        entry = await deps.ledger.claim(
            key, thread_id=ctx.thread_id, call_id=call["id"], tool=tool.name, arg_hash=call["arg_hash"], idempotent=tool.idempotent
        )
        if entry is not None and not entry.matches(tool.name, call["arg_hash"]):
            # Same key, other arguments: reusing the row would report a call that never ran as done.
            text = LEDGER_CONFLICT.format(key=call["id"], recorded=f"{entry.tool} {entry.arg_hash[:12]}", proposed=f"{tool.name} {call['arg_hash'][:12]}")
            await deps.events.append(
                ctx.thread_id, step, "error", source="ledger", message=text, tool=tool.name, call_id=call["id"], arg_hash=call["arg_hash"],
                recorded=entry.arg_hash,
            )
            return ToolResult(ok=False, output=text, error_kind="conflict", metadata={"ledger_conflict": True}), False  # type: ignore[arg-type]
        if entry is not None and entry.result is not None:
            return ToolResult.from_json(entry.result), False
        # The far side (Idempotency-Key, Message-ID) gets one key for every attempt of this call, so it
        # can spot a retry; the ledger keys each attempt separately.
        far_key = idempotency_key(ctx.thread_id, call.get("turn", 0), call["id"])
        tool_ctx = ToolContext(
            workspace=deps.config.workspace, thread_id=ctx.thread_id, idempotency_key=far_key, extra=deps.config.tool_settings,
            resources=deps.resources, state=MappingProxyType(state), run=ctx, retry=entry is not None or call.get("attempt", 0) > 0,
        )
        if entry is not None and not tool.idempotent:
            found = await reconcile(tool, call["args"], tool_ctx)
            if tool.reconcile is not None:
                await deps.events.append(ctx.thread_id, step, "reconcile", tool=tool.name, call_id=call["id"], took_effect=found)
            if found is not False:
                result = (
                    ToolResult(ok=True, output=RECONCILED.format(tool=tool.name), metadata={"reconciled": True})
                    if found
                    else ToolResult(ok=False, output=OUTCOME_UNKNOWN.format(tool=tool.name), error_kind="outcome_unknown")
                )
                await deps.ledger.record_result(key, result.to_json())
                return result, False
        async with tool_span(tool, call["args"], deps.redactor) as span:  # the run's tracers see a tool span, as for a LangChain tool
            with memory_trust(outside) as trust:
                result = await run_tool(tool, call["args"], tool_ctx)
            metadata = {**result.metadata, "untrusted": True} if trust.read_untrusted else result.metadata
            if deps.redactor:
                result = ToolResult(ok=result.ok, output=deps.redactor.text(result.output), error_kind=result.error_kind, metadata=deps.redactor.deep(metadata))
            elif metadata is not result.metadata:
                result = ToolResult(ok=result.ok, output=result.output, error_kind=result.error_kind, metadata=metadata)
            await span.finish(result)
        if not result.metadata.get("budget_breach"):
            # A tool that ran an agent which hit this thread's budget has no result yet: once the budget is
            # raised, the call runs again (it is idempotent: a delegation).
            await deps.ledger.record_result(key, result.to_json(), now=not tool.idempotent)
        return result, True

    def returns_untrusted(name: str) -> bool:
        tool = deps.tools.get(name)
        return tool is None or tool.returns_untrusted

    async def learn(failure: dict[str, str], worked: PendingCall, ctx: RunContext, step: int, *, outside: bool) -> None:
        """Write what got the task past a failure to long-term memory (only with a kasloop database).

        A learning that quotes or may follow outside content (the failure was an untrusted tool's, or
        outside content is in the thread: ``outside``) is stored marked untrusted, and perceive never
        recalls it into a prompt.
        """
        if deps.resources.database is None:
            return
        args = ", ".join(f"{k}={str(v)[:40]}" for k, v in list(worked["args"].items())[:3])
        text = deps.redactor.text(f"{failure['tool']} failed ({failure['kind']}: {failure['message']}); {worked['tool']}({args}) worked instead.")
        untrusted = outside or failure.get("untrusted") == "true" or returns_untrusted(failure["tool"])
        namespace = str((deps.config.tool_settings.get("memory") or {}).get("namespace", DEFAULT_NAMESPACE))
        try:
            memory = await shared_memory(deps.resources, namespace)
            item = await memory.add(text, kind="learning", tags=["recovery"], source=f"thread {ctx.thread_id}", untrusted=untrusted)
        except KasloopError as exc:
            await deps.events.append(ctx.thread_id, step, "error", source="memory", message=exc.message)
            return
        await deps.events.append(ctx.thread_id, step, "learned", key=item.key, text=text[:300], untrusted=item.untrusted)

    async def act(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = deps.context(runtime)
        step = step_of(state)
        usage = dict(state.get("usage") or empty_usage())
        messages: list[ToolMessage] = []
        failed: list[PendingCall] = []
        had_outside = bool(state.get("tainted")) or bool(untrusted_sources(state.get("messages", []))) or bool(state.get("inherited_taint"))
        read_outside = False
        pending = list(state.get("pending", []))
        done_calls = list(state.get("done_calls", []))
        observations = dict(state.get("observations") or {})
        files_seen = list(state.get("files_seen") or [])
        first_new: PendingCall | None = None
        new_successes = 0
        new_changes = 0
        team_turns = dict(state.get("team_turns") or {})
        stream = stream_writer()
        for index, call in enumerate(pending):
            breach = tool_call_breach(ctx, usage)
            if breach is not None:
                # The calls not run stay pending: `resume` (once the budget is raised) continues right here.
                await deps.events.append(ctx.thread_id, step, "budget", **breach.to_json())
                return {
                    "messages": messages, "done_calls": done_calls, "observations": observations, "pending": failed + pending[index:], "usage": usage,
                    **budget_pause(ctx, breach.to_json(), breach.message()),
                }
            polling = observes(deps.tools.get(call["tool"]))
            delay = poll_delay(deps.config, observations, call["arg_hash"]) if polling else 0.0
            if delay:  # the same poll came back unchanged: wait longer each time (not counted as the tool's time)
                await deps.events.append(ctx.thread_id, step, "poll_wait", tool=call["tool"], call_id=call["id"], seconds=delay)
                await asyncio.sleep(delay)
            started = time.monotonic()
            stream({"kasloop_event": "tool_started", "tool": call["tool"], "call_id": call["id"]})
            result, ran = await execute(call, ctx, step, state, outside=had_outside or read_outside)
            stream({
                "kasloop_event": "tool_finished", "tool": call["tool"], "call_id": call["id"], "ok": result.ok,
                "error_kind": result.error_kind, "output": result.output[:500],
            })
            usage["seconds"] = round(usage["seconds"] + time.monotonic() - started, 6)
            if ran:
                usage["tool_calls"] += 1
                add_agent_usage(usage, result.metadata.get("agent_usage"))
            if "specialist" in result.metadata:
                team_turns[result.metadata["specialist"]] = int(result.metadata.get("model_turns", 0))
            agent_breach = result.metadata.get("budget_breach")
            if agent_breach:
                # The specialist spent what was left of this thread's budget: the team pauses, and the
                # delegation stays pending so `resume` (after the budget is raised) runs it again.
                await deps.events.append(ctx.thread_id, step, "budget", **agent_breach)
                return {
                    "messages": messages, "done_calls": done_calls, "observations": observations, "pending": failed + pending[index:], "usage": usage,
                    **budget_pause(ctx, agent_breach, str(result.metadata.get("budget_message", result.output))), "team_turns": team_turns,
                }
            done_key, since = call["arg_hash"], None
            if polling and result.ok:
                observations, done_key, since = remember_observation(
                    observations, call["arg_hash"], result.output, result.metadata.get("observed"), final=bool(result.metadata.get("final")),
                )
            await deps.events.append(
                ctx.thread_id, step, "tool", tool=call["tool"], call_id=call["id"], arg_hash=call["arg_hash"],
                ok=result.ok, error_kind=result.error_kind, reused=not ran and not result.metadata.get("ledger_conflict"),
                output=result.output[:300], **({"since_same_call": since} if since else {}),
            )
            # Outside content taints whatever the status: an error page carries the same injected text as a page.
            untrusted = deps.tools[call["tool"]].returns_untrusted or result.metadata.get("untrusted") is True
            read_outside = read_outside or untrusted
            if result.ok:
                messages.append(tool_ok(call["id"], call["tool"], result.output, untrusted=untrusted, since_same_call=since))
                if done_key not in done_calls:  # progress: a new call, or a poll with a new result
                    first_new = first_new or call
                # A step is done by a call new to it; a step that waits ("... until it has exited") by a final poll result.
                waiting = polling and waits(state.get("plan"))
                if (result.metadata.get("final") is True) if waiting else call["arg_hash"] not in {call_hash_of(d) for d in done_calls}:
                    new_successes += 1
                    new_changes += deps.tools[call["tool"]].risk != "read"
                done_calls = [*done_calls, done_key][-DONE_CALLS_KEPT:]
                files_seen = seen_after(files_seen, call["tool"], call["args"], deps.config.workspace)
            else:
                failed.append({**call, "error": {"kind": result.error_kind or "permanent", "output": result.output, "untrusted": untrusted}})
        update_recovering: dict[str, Any] = {}
        recovered = state.get("recovering")
        if recovered and first_new is not None:
            await learn(recovered, first_new, ctx, step, outside=had_outside or read_outside)
            update_recovering["recovering"] = None
        # Progress = a call that succeeded and was not done before in this task; decide stops K cycles without it.
        stalled = 0 if first_new is not None else state.get("stalled", 0) + 1
        update: dict[str, Any] = {
            "messages": messages, "pending": failed, "usage": usage, "done_calls": done_calls, "stalled": stalled, "budget_breach": None, **update_recovering,
        }
        if files_seen != list(state.get("files_seen") or []):
            update["files_seen"] = files_seen
        if observations != (state.get("observations") or {}):
            update["observations"] = observations
        if new_successes and state.get("plan"):
            # A step is done when a new call succeeded in it. A one-step goal counts only changes (reading first is how
            # it starts), unless its answer is structured: then what was read is what the answer is made of.
            changes = None if state.get("output_schema") is not None else new_changes
            update["plan"] = advanced(state["plan"], new_successes, changes)
        if team_turns:
            update["team_turns"] = team_turns
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
