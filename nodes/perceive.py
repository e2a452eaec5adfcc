"""perceive: start a cycle — count the step, check the step budget, keep working memory bounded."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, RemoveMessage, ToolMessage
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
        cut = window_cut(messages, deps.config.max_messages)
        if cut:
            update["messages"] = [RemoveMessage(id=m.id) for m in messages[:cut] if m.id]
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
