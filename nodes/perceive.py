"""perceive: start a cycle — count the step, check the step budget, read the inbox, keep working memory bounded.

Inbox messages (``kasloop tell``, Telegram, email, webhooks) arrive here, in
order, as human instructions, and each becomes an open goal so the decide
prompt keeps it in view. Which ones were taken is part of the state
(``inbox_seen``), so each is delivered exactly once across crashes. A message
from a channel (anything but ``kasloop tell`` and the Python API) is outside
content: it is marked untrusted, taints the thread like a web page, and its
goal is never put in the system prompt.

Working memory (tier 1) is kept bounded here too: see ``nodes/working_memory.py``.
When turns are folded into the running summary while outside content is in
working memory, the summary quotes outside content from then on: perceive adds
``SUMMARY_TAINT`` to ``inherited_taint`` (the thread stays tainted and decide
keeps the summary out of the system prompt).

And long-term memory (tier 3) is consulted: the few learnings most relevant to
the open goals go into the state (``recalled``) for decide's prompt. The
search runs when the goals change and every :data:`RECALL_EVERY` steps (so a
learning remembered meanwhile shows up), not on every cycle. Learnings stored
marked untrusted (made while outside content was in context) are never
recalled into a prompt.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, RemoveMessage, ToolMessage
from langgraph.runtime import Runtime

from kasloop.nodes.deps import NodeDeps
from kasloop.guardrails.budget import budget_pause, step_breach
from kasloop.errors import KasloopError, ModelError
from kasloop.memory.items import DEFAULT_NAMESPACE
from kasloop.memory.long_term import relevant_learnings, shared_memory
from kasloop.nodes.messages import SUMMARY_TAINT, inbox_message, is_untrusted, untrusted_sources
from kasloop.nodes.working_memory import Folded, digest, eviction_cut, fold_into_summary, last_turn_start, summary_request_tokens
from kasloop.state import AgentState, Goal, RunContext, Usage, empty_usage

__all__ = ["DONE_GOALS_KEPT", "RECALL_EVERY", "RECALLED", "make_perceive"]

RECALL_EVERY = 10
"""Steps between searches of long-term memory while the goals stay the same."""
RECALLED = 3
"""Learnings put in front of the model at most."""

DONE_GOALS_KEPT = 20
"""Finished goals kept in the state (open ones are always kept), so the state does not grow with every ``tell``."""


def _bounded_goals(goals: list[Goal]) -> list[Goal]:
    done = [g for g in goals if g["status"] != "open"]
    if len(done) <= DONE_GOALS_KEPT:
        return goals
    dropped = {id(g) for g in done[: len(done) - DONE_GOALS_KEPT]}
    return [g for g in goals if id(g) not in dropped]


def _observation(messages: list[BaseMessage], step: int) -> str:
    last = messages[-1] if messages else None
    if isinstance(last, ToolMessage):
        return f"step {step}: {len(messages) - last_turn_start(messages) - 1} tool result(s) since the last decision"
    if isinstance(last, AIMessage):
        return f"step {step}: continuing"
    return f"step {step}: new instructions"


def make_perceive(deps: NodeDeps) -> Any:
    async def fold(state: AgentState, evicted: list[BaseMessage], usage: Usage, ctx: RunContext) -> dict[str, Any]:
        """Fold evicted turns into the running summary (the model's, or a digest if it cannot or the budget says no)."""
        previous = state.get("summary", "")
        breach = await deps.model_budget({**state, "usage": usage}, ctx, summary_request_tokens(previous, evicted))
        started = time.monotonic()
        try:
            if breach is not None:
                raise ModelError(f"no model summary: {breach.limit} would be exceeded", transient=False)
            folded = await fold_into_summary(deps.model_for(state), previous, evicted, turn=state.get("model_turns", 0))
        except ModelError as exc:
            folded = Folded(digest(previous, evicted), by_model=False, error=exc.message)
        costs: dict[str, Any] = {}
        if folded.by_model:
            costs = await deps.spent(state, ctx, usage, folded.input_tokens, folded.output_tokens, time.monotonic() - started)
        thread_id = ctx.thread_id
        await deps.events.append(
            thread_id, usage["steps"], "summary", evicted=len(evicted), by_model=folded.by_model, chars=len(folded.summary), **costs,
            **({"error": folded.error} if folded.error else {}),
        )
        return {"summary": folded.summary}

    async def recall(state: AgentState, goals: list[Goal], step: int, thread_id: str) -> dict[str, Any]:
        """Look up the learnings relevant to the open goals when they changed or every RECALL_EVERY steps."""
        if deps.resources.database is None:
            return {}  # no kasloop database (a graph served by `langgraph dev`): no long-term memory to read
        query = " ".join(g["text"] for g in goals if g["status"] == "open")[-2000:]
        key = hashlib.sha256(query.encode()).hexdigest()[:16]
        if key == state.get("recall_key") and step % RECALL_EVERY:
            return {}
        namespace = str((deps.config.tool_settings.get("memory") or {}).get("namespace", DEFAULT_NAMESPACE))
        try:
            memory = await shared_memory(deps.resources, namespace)
            items = await relevant_learnings(memory, query, limit=RECALLED) if query.strip() else []
        except KasloopError as exc:  # memory is a help, never a reason to stop the loop
            await deps.events.append(thread_id, step, "error", source="memory", message=exc.message)
            return {"recall_key": key}
        lines = [deps.redactor.text(item.line()) for item in items]
        if lines != state.get("recalled", []):
            await deps.events.append(thread_id, step, "recall", learnings=[item.key for item in items])
        return {"recall_key": key, "recalled": lines}

    async def perceive(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = deps.context(runtime)
        usage = Usage(**(state.get("usage") or empty_usage()))
        breach = step_breach(ctx, usage)
        if breach is not None:
            await deps.events.append(ctx.thread_id, usage["steps"], "budget", **breach.to_json())
            return budget_pause(ctx, breach.to_json(), breach.message())
        usage["steps"] += 1
        messages = state.get("messages", [])
        update: dict[str, Any] = {"status": "running", "budget_breach": None}
        arrived = await deps.inbox.take(ctx.thread_id, state.get("inbox_seen", 0)) if deps.inbox is not None else []
        texts = [deps.redactor.text(item.text) for item in arrived]
        news = [inbox_message(item.id, item.source, text) for item, text in zip(arrived, texts, strict=True)]
        if arrived:
            goals = list(state.get("goals", []))
            goals += [
                {"id": f"g{len(goals) + n + 1}", "text": text, "status": "open", **({"untrusted": True} if is_untrusted(message) else {})}  # type: ignore[misc]
                for n, (text, message) in enumerate(zip(texts, news, strict=True))
            ]
            update |= {"messages": news, "goals": _bounded_goals(goals), "inbox_seen": arrived[-1].id}
            messages = [*messages, *news]
            for item in arrived:
                await deps.events.append(ctx.thread_id, usage["steps"], "inbox", message_id=item.id, source=item.source, text=item.text[:300])
        # New instructions are never evicted in the cycle they arrive.
        old = messages[: len(messages) - len(news)]
        cut = eviction_cut(old, max_messages=deps.config.max_messages, max_tokens=deps.config.context_tokens)
        if cut:
            update |= await fold(state, old[:cut], usage, ctx)
            update["messages"] = [*(RemoveMessage(id=m.id) for m in old[:cut] if m.id), *news]
            inherited = list(state.get("inherited_taint", []))
            if untrusted_sources(old) and SUMMARY_TAINT not in inherited:
                # The summary now holds (or was written beside) outside content; it keeps the thread tainted.
                update["inherited_taint"] = [*inherited, SUMMARY_TAINT]
        update |= await recall(state, update.get("goals", state.get("goals", [])), usage["steps"], ctx.thread_id)
        update["observation"] = _observation(messages, usage["steps"])
        update["usage"] = usage
        await deps.events.append(ctx.thread_id, usage["steps"], "perceive", observation=update["observation"], evicted=cut)
        return update

    return perceive
