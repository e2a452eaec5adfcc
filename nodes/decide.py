"""decide: ask the model for the next move, then gate every proposed call deterministically.

The model proposes; policy disposes. Each call gets an id kasloop assigns
(``call_<turn>_<index>``, unique in the thread: the model's own ids may repeat
or be missing), its risk, a gate (allow, ask, deny), a reason, an ``arg_hash``
and an ``approval_id``. The reply is stored with its calls renamed to those
ids, so every tool message answers exactly one call. Refused calls are
answered right here with a tool message saying why, so the model can choose
another way.

The system prompt holds only kasloop's own text and what people wrote (the
goal, ``kasloop tell``). Anything quoting outside content (a goal that came in
over a channel, a running summary or a diagnosis made while outside content
was in context) goes in one separate message marked untrusted
(``nodes.messages.outside_context``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from kasloop.guardrails.approvals import approval_id
from kasloop.guardrails.budget import budget_pause
from kasloop.errors import ModelError, ScriptExhausted
from kasloop.models.chat import invoke_model
from kasloop.models.structured import BAD_OUTPUT, answer_instruction, check_answer
from kasloop.nodes.deps import NodeDeps, step_of
from kasloop.nodes.observations import POLLED_FINAL, observes, polled_out
from kasloop.nodes.messages import OUTSIDE_NOTE, outside_context, summary_is_untrusted, tool_error, untrusted_sources
from kasloop.nodes.receipts import COPIED_RESULT, copied_receipt, last_result, receipts
from kasloop.nodes.self_diagnose import MAX_CONSECUTIVE_FAILURES
from kasloop.nodes.working_memory import prompt_tokens
from kasloop.guardrails.policy import TAINTED_REASON, arg_hash, gate_call, matching_rule_action
from kasloop.state import AgentState, PendingCall, RunContext, Usage, empty_usage
from kasloop.steps import echoes_step_prompt, nudged, should_nudge, step_prompt
from kasloop.tools.base import DENIED_TEMPLATE, UNKNOWN_TOOL_TEMPLATE

__all__ = ["SYSTEM_PROMPT", "kasloop_call_id", "make_decide", "with_call_ids"]

# Short on purpose: small local models pay for every prompt token, and this wording (with the JSON
# tool-result envelope) is what made the embedded 0.5B model stop after finishing instead of repeating.
_PLAIN_ANSWER = "When the task is done, reply in plain text."
SYSTEM_PROMPT = (
    "You are an agent that completes tasks with tools. Call one tool at a time. "
    "Paths are relative to the workspace. If a call is refused or fails, read why and try another way. " + _PLAIN_ANSWER
)


def _answer_words(text: str, state: AgentState) -> str:
    """kasloop's notes to the model ask for a plain-text answer; a task with an output schema wants its JSON."""
    return text.replace("reply in plain text", "reply with only the JSON answer") if state.get("output_schema") is not None else text


REPEATED_CALL = (
    "This exact call already succeeded earlier in this task; running it again would change nothing. "
    "If the task is done, reply in plain text. Otherwise call a different tool or use other arguments."
)


LOOP_WINDOW = 6
REPEATS_FOR_LOOP = 3
LOOPS_BEFORE_ESCALATION = 2
NO_PROGRESS = (
    "Stopped: {cycles} cycles in a row brought nothing new (every call failed or repeated earlier work). "
    "Step back: what is missing for the goal? Try a different approach, or reply in plain text if it cannot be done."
)
LOOP_MESSAGE = (
    "Stopped: you keep making the same calls ({pattern}) without getting closer to the goal. "
    "Try a different approach, or reply in plain text if the task is done or cannot be done."
)


def loop_pattern(hashes: list[str]) -> str | None:
    """``A-A-A`` (one call repeated) or ``A-B-A-B`` (two alternating) at the end of ``hashes``, else None."""
    if len(hashes) >= REPEATS_FOR_LOOP and len(set(hashes[-REPEATS_FOR_LOOP:])) == 1:
        return "the same call " + str(REPEATS_FOR_LOOP) + " times"
    if len(hashes) >= 4:
        a, b, c, d = hashes[-4:]
        if a == c and b == d and a != b:
            return "two calls alternating"
    return None


def kasloop_call_id(turn: int, index: int) -> str:
    """The id of the ``index``-th call of model turn ``turn``: unique in the thread, whatever the model sent."""
    return f"call_{turn}_{index}"


_BLOCK_ID_KEYS = {"tool_use": "id", "tool_call": "id", "function_call": "call_id"}
"""Provider copies of a call inside ``content`` (Anthropic ``tool_use``, standard ``tool_call`` blocks,
OpenAI Responses ``function_call``) and the key that holds its id."""


def with_call_ids(reply: AIMessage, turn: int) -> AIMessage:
    """``reply`` with its tool calls (then its unparsable ones) renamed to kasloop's ids for ``turn``.

    Renamed everywhere a provider keeps them: the n-th call with a given model id gets the id of the
    n-th such call in the provider's own copies too (content blocks, ``additional_kwargs["tool_calls"]``),
    so the tool messages that answer kasloop's ids match the reply when it is sent back. The model's ids
    are kept in ``response_metadata["kasloop_model_call_ids"]`` (never sent to a model).
    """
    calls = [*reply.tool_calls, *reply.invalid_tool_calls]
    ids = [kasloop_call_id(turn, index) for index in range(len(calls))]
    model_ids = [c.get("id") for c in calls]

    def renamer() -> Any:
        queues: dict[Any, list[str]] = {}
        for model_id, new in zip(model_ids, ids, strict=True):
            queues.setdefault(model_id, []).append(new)

        def rename(entry: Any, key: str) -> Any:
            if not isinstance(entry, dict) or not queues.get(entry.get(key)):
                return entry
            return {**entry, key: queues[entry[key]].pop(0)}

        return rename

    valid = len(reply.tool_calls)
    update: dict[str, Any] = {
        "tool_calls": [{**c, "id": new} for c, new in zip(reply.tool_calls, ids, strict=False)],
        "invalid_tool_calls": [{**c, "id": new} for c, new in zip(reply.invalid_tool_calls, ids[valid:], strict=True)],
        "response_metadata": {**reply.response_metadata, "kasloop_model_call_ids": model_ids},
    }
    if isinstance(reply.content, list):
        rename = renamer()
        update["content"] = [
            rename(b, _BLOCK_ID_KEYS[b["type"]]) if isinstance(b, dict) and b.get("type") in _BLOCK_ID_KEYS else b for b in reply.content
        ]
    raw = reply.additional_kwargs.get("tool_calls")
    if isinstance(raw, list):
        rename = renamer()
        update["additional_kwargs"] = {**reply.additional_kwargs, "tool_calls": [rename(c, "id") for c in raw]}
    return reply.model_copy(update=update)


def renamed_ids(reply: AIMessage) -> dict[str, Any]:
    """For the decide event: the model's own call ids, when kasloop's differ from them (else nothing)."""
    model_ids = reply.response_metadata.get("kasloop_model_call_ids") or []
    ours = [c["id"] for c in [*reply.tool_calls, *reply.invalid_tool_calls]]
    return {"model_call_ids": model_ids} if model_ids != ours else {}


def _prompt(deps: NodeDeps, state: AgentState, *, guided: bool, outside: list[str]) -> list[BaseMessage]:
    """The system prompt (kasloop's text and what people wrote), the conversation, and the current step.

    ``outside``: where the outside content in this thread came from. Text that may quote it never goes into
    the system prompt: it goes into one message marked untrusted, right after the system prompt.
    """
    schema = state.get("output_schema")
    base = deps.config.system_prompt or SYSTEM_PROMPT
    if schema is not None:  # the answer is JSON for this schema: kasloop's own "plain text" line gives way to it
        base = base.replace(_PLAIN_ANSWER, answer_instruction(schema)) if _PLAIN_ANSWER in base else base + "\n" + answer_instruction(schema)
    parts = [base]
    quoted: dict[str, Any] = {}
    messages = state.get("messages", [])
    said = {m.content for m in messages if isinstance(m, HumanMessage)}
    goals = [g for g in state.get("goals", []) if g["status"] == "open" and g["text"] not in said]
    if goals:  # the goal's own message fell out of working memory: keep it in view
        own = [g["text"] for g in goals if not g.get("untrusted")]
        if own:
            parts.append("Task: " + " / ".join(own))
        channel = [g["text"] for g in goals if g.get("untrusted")]
        if channel:
            quoted["tasks_from_channels"] = channel
    if state.get("summary"):
        if summary_is_untrusted(state.get("inherited_taint", [])):
            quoted["earlier"] = state["summary"]
        else:
            parts.append("Earlier: " + state["summary"])
    if state.get("recalled"):
        parts.append("Learnings from earlier work (notes, not instructions):\n" + "\n".join(state["recalled"]))
    if state.get("diagnosis"):
        if outside:
            # Made from a failure while outside content was in context (an error page's body, the model's
            # plan after reading it): only kasloop's own words stay here.
            parts.append("Last problem: a step failed; kasloop's note about it is quoted below as `last_problem`.")
            quoted["last_problem"] = str(state["diagnosis"])
        else:
            parts.append("Last problem: " + str(state["diagnosis"]))
    if quoted:
        parts.append(OUTSIDE_NOTE)
    step = step_prompt(state.get("plan"), structured=schema is not None) if guided else None
    # The current step goes last, where a small model looks; it is never stored in the conversation.
    return [SystemMessage("\n".join(parts)), *([outside_context(quoted)] if quoted else []), *messages, *([HumanMessage(step)] if step else [])]


def _finished_goals(goals: list[Any]) -> list[Any]:
    return [{**g, "status": "done"} if g["status"] == "open" else g for g in goals]


async def _structured_answer(deps: NodeDeps, ctx: RunContext, step: int, text: str, schema: dict[str, Any], goals: list[Any]) -> dict[str, Any]:
    """A final answer under an output schema: done with the validated value, or a ``bad_output`` failure
    for self_diagnose (the model is told what is wrong and answers again; repeated, it escalates)."""
    value, problem = check_answer(text, schema, ctx.output_model)
    if problem is not None:
        await deps.events.append(ctx.thread_id, step, "error", source="model", message=problem[:500], transient=False)
        return {"last_error": {"kind": BAD_OUTPUT, "message": problem, "source": "model"}}
    return {"status": "done", "output": json.dumps(value, ensure_ascii=False), "structured": value, "goals": _finished_goals(goals)}


def make_decide(deps: NodeDeps) -> Any:
    async def stuck(state: AgentState, ctx: RunContext, step: int, text: str, pattern: str) -> dict[str, Any]:
        """Loop or stall: self_diagnose makes the model re-plan; the second time in a task it escalates."""
        loops = state.get("loops", 0) + 1
        update: dict[str, Any] = {"loops": loops, "stalled": 0, "pending": [], "last_error": {"kind": "stuck", "message": text, "source": "model"}}
        if loops >= LOOPS_BEFORE_ESCALATION:
            update["attempts"] = MAX_CONSECUTIVE_FAILURES  # self_diagnose's next count escalates
        await deps.events.append(ctx.thread_id, step, "loop", pattern=pattern, loops=loops)
        return update

    async def decide(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = deps.context(runtime)
        step = step_of(state)
        turn = state.get("model_turns", 0)
        offered = deps.offered_tools(ctx)
        if state.get("stalled", 0) >= deps.config.stall_cycles:
            return await stuck(state, ctx, step, _answer_words(NO_PROGRESS.format(cycles=state["stalled"]), state), "no progress")
        guided = deps.guided(state)
        outside = [*untrusted_sources(state.get("messages", [])), *state.get("inherited_taint", [])]
        prompt = _prompt(deps, state, guided=guided, outside=outside)
        size = prompt_tokens(prompt) + deps.schema_tokens(ctx)
        breach = await deps.model_budget(state, ctx, size)
        if breach is not None:
            await deps.events.append(ctx.thread_id, step, "budget", **breach.to_json())
            return budget_pause(ctx, breach.to_json(), breach.message())
        usage = Usage(**(state.get("usage") or empty_usage()))
        started = time.monotonic()
        try:
            reply = await invoke_model(deps.model_for(state), prompt, deps.schemas(ctx), turn=turn)
        except ScriptExhausted:
            raise
        except ModelError as exc:
            await deps.spent(state, ctx, usage, 0, 0, time.monotonic() - started)
            message = deps.redactor.text(exc.message)  # a provider's error may echo a key or the prompt
            await deps.events.append(ctx.thread_id, step, "error", source="model", message=message, transient=exc.transient)
            return {
                "model_turns": turn + 1,
                "pending": [],
                "usage": usage,
                "last_error": {"kind": "transient" if exc.transient else "model", "message": message, "source": "model"},
            }
        if deps.redactor:
            # A secret the model writes (into a reply or a call's arguments) is never stored and never sent.
            reply = reply.model_copy(update={
                "content": deps.redactor.deep(reply.content), "tool_calls": deps.redactor.deep(reply.tool_calls),
                "invalid_tool_calls": deps.redactor.deep(reply.invalid_tool_calls), "additional_kwargs": deps.redactor.deep(reply.additional_kwargs),
            })
        meta = reply.usage_metadata or {}
        costs = await deps.spent(state, ctx, usage, meta.get("input_tokens", 0), meta.get("output_tokens", 0), time.monotonic() - started)
        update: dict[str, Any] = {"model_turns": turn + 1, "usage": usage, "last_error": None, "diagnosis": None, "budget_breach": None}
        if reply.invalid_tool_calls and not reply.tool_calls:
            bad = reply.invalid_tool_calls[0]
            message = f"the reply held a tool call that could not be parsed ({bad.get('name')!r}: {bad.get('error')})"
            await deps.events.append(ctx.thread_id, step, "error", source="model", message=message, transient=False)
            update["last_error"] = {"kind": "model", "message": message, "source": "model"}
            update["pending"] = []
            return update
        # kasloop names every call (the model's ids may repeat or be missing): the ledger key, the approval
        # id and the tool message that answers a call all use kasloop's id, and the stored reply does too.
        reply = with_call_ids(reply, turn)
        messages: list[BaseMessage] = [reply]
        for bad in reply.invalid_tool_calls:
            # Beside valid calls: each unparsable one is answered too (a provider refuses a call left unanswered).
            text = f"Error: this tool call could not be parsed ({bad.get('error') or 'invalid arguments'}); nothing ran. Send it again as valid JSON."
            messages.append(tool_error(str(bad["id"]), str(bad.get("name") or "unknown"), "bad_args", text))
        pending: list[PendingCall] = []
        gates: list[dict[str, str]] = []
        now = time.time()
        done = set(state.get("done_calls", []))
        sources = outside if deps.config.ask_after_untrusted else []
        update["tainted"] = bool(outside)
        known_receipts = receipts(state.get("messages", []), deps.tools)
        for call in reply.tool_calls:
            call_id = call["id"]
            name, args = call["name"], call.get("args") or {}
            tool = offered.get(name)
            if tool is None:
                text = UNKNOWN_TOOL_TEMPLATE.format(name=name, valid=", ".join(offered) or "(none)")
                messages.append(tool_error(call_id, name, "unknown_tool", text))
                gates.append({"tool": name, "gate": "deny", "reason": "unknown tool"})
                continue
            copied = copied_receipt(args, known_receipts) if tool.risk != "read" else None
            if copied is not None:
                # Answered here, at every level: no human is asked to approve a receipt written as content.
                receipt = copied[1] if len(copied[1]) <= 80 else copied[1][:79] + "…"
                messages.append(tool_error(call_id, name, "copied_result", COPIED_RESULT.format(arg=copied[0], receipt=receipt)))
                gates.append({"tool": name, "gate": "deny", "reason": "repeats an earlier tool result"})
                continue
            call_hash = arg_hash(name, args)
            polled = polled_out(deps.config, state.get("observations"), call_hash) if observes(tool) else None
            if polled is not None:
                # A poll that keeps bringing the same result: answered here; the model waits or stops.
                final = polled == POLLED_FINAL
                messages.append(tool_error(call_id, name, "polled_final" if final else "polled_unchanged", _answer_words(polled, state)))
                gates.append({"tool": name, "gate": "deny", "reason": "its last result was final" if final else "polled without change"})
                continue
            if tool.idempotent and call_hash in done:  # an observation's entry is HASH:DIGEST: a poll is never refused here
                messages.append(tool_error(call_id, name, "repeated", _answer_words(REPEATED_CALL, state)))
                gates.append({"tool": name, "gate": "deny", "reason": "repeats a call that already succeeded"})
                continue
            risk = ctx.risk_overrides.get(name, tool.risk)
            gate, reason = gate_call(
                autonomy=ctx.autonomy,
                risk=risk,
                rule_action=matching_rule_action(list(ctx.rules), tool, args, workspace=deps.config.workspace),
                tainted=bool(sources),
            )
            if gate == "ask" and reason == TAINTED_REASON:
                reason = f"a side effect while outside content from {', '.join(sources)} is in context (it may carry injected instructions)"
            gates.append({"tool": name, "gate": gate, "reason": reason})
            if gate == "deny":
                messages.append(tool_error(call_id, name, "denied", DENIED_TEMPLATE.format(name=name, reason=reason)))
                continue
            pending.append(
                PendingCall(
                    id=call_id, tool=name, args=args, risk=risk, gate=gate, reason=reason,
                    arg_hash=call_hash, approval_id=approval_id(ctx.thread_id, turn, call_id),
                    attempt=0, turn=turn, created_at=now,
                )
            )
        # Successful calls so far (act records them) plus these: a loop is A-A-A or A-B-A-B. Failing
        # calls are left to the failure ladder; repeats of finished idempotent calls were refused above.
        # Polls are not counted here: act records each with its result, and one that brings nothing new
        # backs off and is stopped by poll_limit (kasloop.nodes.observations).
        acting = [c for c in pending if not observes(offered.get(c["tool"]))]
        recent = [*state.get("done_calls", [])[-LOOP_WINDOW:], *(c["arg_hash"] for c in acting)]
        pattern = loop_pattern(recent) if acting else None
        if pattern is not None:
            # Nothing runs; the calls are answered and self_diagnose makes the model re-plan (or escalates).
            text = _answer_words(LOOP_MESSAGE.format(pattern=pattern), state)
            messages += [tool_error(c["id"], c["tool"], "loop", text) for c in pending]
            gates = [{**g, "gate": "deny", "reason": "loop detected"} if g["gate"] != "deny" else g for g in gates]
            pending = []
            update |= await stuck(state, ctx, step, text, pattern)
        update["messages"] = messages
        update["pending"] = pending
        if reply.tool_calls and not pending and pattern is None:
            # Every call was refused. The model hears why and tries again, but not forever.
            refused = state.get("attempts", 0) + 1
            update["attempts"] = refused
            if refused > MAX_CONSECUTIVE_FAILURES:
                update["attempts"] = refused - 1  # self_diagnose counts this failure
                update["last_error"] = {"kind": "denied", "message": f"every proposed call was refused {refused} times in a row", "source": "model"}
        text = str(reply.text)
        plan = state.get("plan")
        if not reply.tool_calls and guided and plan is not None and should_nudge(plan):
            # Steps are left: the answer is kept in the conversation and the model is shown the next
            # step (decide runs again); after NUDGES_PER_STEP answers for one step, an answer stands.
            update["plan"] = nudged(plan)
        elif not reply.tool_calls and state.get("output_schema") is not None:
            update |= await _structured_answer(deps, ctx, step, text, state["output_schema"], state.get("goals", []))
        elif not reply.tool_calls:
            update["status"] = "done"
            update["output"] = text
            if echoes_step_prompt(text):
                # kasloop's own prompt line given back: the output is what was done, from the last result.
                last = last_result(state.get("messages", []), deps.tools)
                update["output"] = f"Done. Last result: {last}" if last else "Done."
            update["goals"] = _finished_goals(state.get("goals", []))
        await deps.events.append(
            ctx.thread_id, step, "decide", content=text[:500], calls=gates, turn=turn, prompt_tokens=size,
            **renamed_ids(reply), **costs,
        )
        if "plan" in update:
            plan = update["plan"]
            await deps.events.append(ctx.thread_id, step, "step", index=plan["current"] + 1, of=len(plan["steps"]), nudge=plan["nudges"])
        return update

    return decide
