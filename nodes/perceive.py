"""perceive: start a cycle — count the step, check the step budget, read the inbox, keep working memory bounded.

Inbox messages (``kasloop tell``, Telegram, email, webhooks) arrive here, in
order, as human instructions, and each becomes an open goal so the decide
prompt keeps it in view. Which ones were taken is part of the state
(``inbox_seen``), so each is delivered exactly once across crashes.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, ToolMessage
from langgraph.runtime import Runtime

from kasloop.nodes.deps import NodeDeps
from kasloop.state import AgentState, RunContext, empty_usage

__all__ = ["make_perceive", "window_cut"]


def window_cut(messages: list[BaseMessage], keep: int) -> int:
    """Index of the first message to keep so at most ``keep`` remain and no tool call loses its result.

    The kept tail never starts with a ``ToolMessage`` (its call would be gone),
    so the cut moves later until it lands on a message that opens a turn.
    """
    if len(messages) <= keep:
        return 0
    cut = len(messages) - keep
    while cut < len(messages) and isinstance(messages[cut], ToolMessage):
        cut += 1
    return cut


def _last_non_tool(messages: list[BaseMessage]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if not isinstance(messages[index], ToolMessage):
            return index
    return -1


def make_perceive(deps: NodeDeps) -> Any:
    async def perceive(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = deps.context(runtime)
        usage = dict(state.get("usage") or empty_usage())
        if ctx.max_steps is not None and usage["steps"] >= ctx.max_steps:
            await deps.events.append(ctx.thread_id, usage["steps"], "budget", limit="max_steps", value=usage["steps"])
            return {"status": "paused_budget", "output": f"Paused: the next step would exceed max_steps of {ctx.max_steps} (steps={usage['steps']}); raise --max-steps or budgets.max_steps in kasloop.toml."}
        usage["steps"] += 1
        messages = state.get("messages", [])
        update: dict[str, Any] = {"usage": usage, "status": "running", "tainted": False}
        arrived = await deps.inbox.take(ctx.thread_id, state.get("inbox_seen", 0)) if deps.inbox is not None else []
        news = [HumanMessage(item.text, id=f"inbox-{item.id}") for item in arrived]
        if arrived:
            goals = list(state.get("goals", []))
            goals += [{"id": f"g{len(goals) + n + 1}", "text": item.text, "status": "open"} for n, item in enumerate(arrived)]
            update |= {"messages": news, "goals": goals, "inbox_seen": arrived[-1].id}
            messages = [*messages, *news]
            for item in arrived:
                await deps.events.append(ctx.thread_id, usage["steps"], "inbox", message_id=item.id, source=item.source, text=item.text[:300])
        cut = window_cut(messages, deps.config.max_messages)
        if cut:
            # Only messages already in the state are removed; new instructions are always kept.
            removed = [RemoveMessage(id=m.id) for m in messages[:cut] if m.id and m not in news]
            update["messages"] = [*removed, *news]
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            results = len(messages) - _last_non_tool(messages) - 1
            update["observation"] = f"step {usage['steps']}: {results} tool result(s) since the last decision"
        elif isinstance(last, AIMessage):
            update["observation"] = f"step {usage['steps']}: continuing"
        else:
            update["observation"] = f"step {usage['steps']}: new instructions"
        await deps.events.append(ctx.thread_id, usage["steps"], "perceive", observation=update["observation"], evicted=cut)
        return update

    return perceive
