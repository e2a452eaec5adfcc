"""The agent loop as a LangGraph ``StateGraph``: perceive → decide → act, with recovery and approvals.

```
START → perceive ─┬─ next decision → decide
                  ├─ budget spent: ask (L2, L3) → human_approval
                  └─ budget spent (L4) → END
decide ─┬─ no tool call, goal met (or budget spent, L4) → END
        ├─ every call refused, or a step left → decide
        ├─ needs approval (a call, or budget spent at L2, L3) → human_approval
        └─ allowed → act
human_approval ─┬─ approve/edit → act    (and the calls a budget pause held back)
                ├─ reject/respond → decide
                ├─ budget raised → perceive
                └─ stopped / budget kept → END
act ─┬─ ok → perceive
     ├─ budget spent: ask (L2, L3) → human_approval;  budget spent (L4) → END
     └─ error → self_diagnose ─┬─ transient → act (backoff)
                               ├─ fixable → decide (with diagnosis)
                               └─ stuck → human_approval (L2, L3) or END (L4)
```
Every edge is a pure function of the state: no model decides a route.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from kasloop.guardrails.budget import check_prices
from kasloop.checkpoints.memory import MemoryEventLog, MemoryInbox, MemoryLedger
from kasloop.checkpoints.spend import MemorySpend
from kasloop.config.schema import AgentConfig
from kasloop.models.chat import ModelChain, chain_with, resolve_model_specs
from kasloop.nodes import make_act, make_decide, make_human_approval, make_perceive, make_self_diagnose
from kasloop.nodes.deps import EventSink, InboxLike, LedgerLike, NodeDeps, RedactingEvents, SpendLike
from kasloop.nodes.human_approval import route_after_approval
from kasloop.nodes.self_diagnose import route_after_diagnosis
from kasloop.safety.protected import protected_paths_for
from kasloop.safety.secrets import Redactor, protect_logs
from kasloop.config.loading import load_config, resolve_home
from kasloop.state import AgentState, RunContext
from kasloop.tools.base import Tool, ToolResources
from kasloop.tools.langchain_tools import as_tools
from kasloop.tools.registry import check_tool_settings, select_tools

__all__ = ["build_graph", "context_for", "route_after_act", "route_after_decide", "route_after_perceive"]


# Each router returns an edge label; the maps below turn labels into nodes (and label the diagram).
# One label per target: LangGraph draws one edge per (node, target) and keeps the first label in sort
# order, so two labels for the same target would hide one of them (decide's "goal met" edge to END
# was drawn as "budget spent" in Studio, the README and the notebooks).
BUDGET_ASK = "budget spent: ask"
"""A breach at levels 2 and 3: ``human_approval`` asks a person to raise the limit (``waiting_approval`` with a ``budget_breach``)."""
PERCEIVE_EDGES = {"next decision": "decide", BUDGET_ASK: "human_approval", "budget spent": END}
DECIDE_END = "goal met / budget spent"
"""decide's edge to END: the model answered without a tool call (done), or the next model call would overspend (level 4)."""
DECIDE_EDGES = {
    "allowed": "act",
    "refused or step left": "decide",
    "needs approval": "human_approval",  # a proposed call, or the next model call's budget (levels 2, 3)
    "model error": "self_diagnose",
    DECIDE_END: END,
}
APPROVAL_EDGES = {"approve / edit": "act", "reject / respond": "decide", "budget raised": "perceive", "stopped / budget kept": END}
ACT_EDGES = {"ok": "perceive", "error": "self_diagnose", BUDGET_ASK: "human_approval", "budget spent": END}
DIAGNOSE_EDGES = {"transient: retry": "act", "fixable": "decide", "stuck (L2, L3)": "human_approval", "stuck (L4)": END}


def _budget_route(state: AgentState) -> str | None:
    """A node stopped before a call its budget forbids: ask a person (levels 2, 3) or end (level 4)."""
    if state.get("status") == "paused_budget":
        return "budget spent"
    if state.get("status") == "waiting_approval" and state.get("budget_breach"):
        return BUDGET_ASK
    return None


def route_after_perceive(state: AgentState) -> str:
    return _budget_route(state) or "next decision"


def route_after_decide(state: AgentState) -> str:
    budget = _budget_route(state)
    if budget is not None:  # decide's edges to END and to human_approval carry these too
        return DECIDE_END if budget == "budget spent" else "needs approval"
    if state.get("last_error"):
        return "model error"
    if state.get("status") == "done":
        return DECIDE_END
    pending = state.get("pending", [])
    if not pending:
        # Every call was refused, or a guided model answered with steps left: it reads why and decides again.
        return "refused or step left"
    if any(call.get("gate") == "ask" for call in pending):
        return "needs approval"
    return "allowed"


def route_after_act(state: AgentState) -> str:
    return _budget_route(state) or ("error" if state.get("last_error") else "ok")


def context_for(config: AgentConfig, thread_id: str, tools: Iterable[str]) -> RunContext:
    """The read-only run context of a thread, from its stored policy."""
    return RunContext(
        thread_id=thread_id,
        autonomy=config.autonomy,
        tools=tuple(tools),
        rules=tuple(config.rules),
        risk_overrides=dict(config.risk_overrides),
        **config.budgets.model_dump(),
    )


def build_graph(
    config: AgentConfig | None = None,
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    model: BaseChatModel | None = None,
    tools: Iterable[Tool | BaseTool] = (),
    ledger: LedgerLike | None = None,
    events: EventSink | None = None,
    inbox: InboxLike | None = None,
    resources: ToolResources | None = None,
    spend: SpendLike | None = None,
    name: str = "kasloop-agent",
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the agent loop for ``config``.

    Args:
        config: what the agent may do; defaults to ``AgentConfig()``.
        checkpointer: where state is saved; pass kasloop's SQLite saver for durable threads.
        model: a chat model object (any LangChain ``BaseChatModel``) in the place of the config's first
            model; the config's other specs, if any, are its fallbacks.
        tools: extra tools the config may select by name or family: kasloop ``Tool`` objects or LangChain tools.
        ledger, events, inbox, spend: kasloop's database tables; in-process ones are used when omitted.
        resources: what tools share across calls (database, state folder, one browser);
            the caller closes it with ``await resources.aclose()``. A private one when omitted.
        name: the graph's name (traces, Studio).

    Returns:
        The compiled graph. Invoke it with ``context=RunContext(...)`` to set the
        thread's policy; without one it runs with the config's policy.
    """
    config = config or AgentConfig()
    selected = select_tools(config.tools, as_tools(tools), config.tool_traits)
    check_tool_settings(config.tool_settings, config.workspace)
    specs = resolve_model_specs(config) if model is None else chain_with(model, config.model_specs)
    check_prices(config, specs)
    redactor = Redactor.for_config(config)
    protect_logs(redactor)
    deps = NodeDeps(
        config=config,
        models=ModelChain(specs, config, first=model),
        tools=selected,
        ledger=ledger or MemoryLedger(),
        events=RedactingEvents(events or MemoryEventLog(), redactor),
        inbox=inbox or MemoryInbox(),
        spend=spend or MemorySpend(),
        default_context=context_for(config, "default", selected),
        resources=resources or standalone_resources(config),
        redactor=redactor,
    )
    builder = StateGraph(AgentState, context_schema=RunContext)
    builder.add_node("perceive", make_perceive(deps))
    builder.add_node("decide", make_decide(deps))
    builder.add_node("act", make_act(deps))
    builder.add_node("self_diagnose", make_self_diagnose(deps))
    builder.add_node("human_approval", make_human_approval(deps))
    builder.add_edge(START, "perceive")
    builder.add_conditional_edges("perceive", route_after_perceive, PERCEIVE_EDGES)
    builder.add_conditional_edges("decide", route_after_decide, DECIDE_EDGES)
    builder.add_conditional_edges("human_approval", route_after_approval, APPROVAL_EDGES)
    builder.add_conditional_edges("act", route_after_act, ACT_EDGES)
    builder.add_conditional_edges("self_diagnose", route_after_diagnosis, DIAGNOSE_EDGES)
    return builder.compile(checkpointer=checkpointer, name=name)


def standalone_resources(config: AgentConfig) -> ToolResources:
    """Tool resources for a graph built without an ``Agent`` (Studio, ``langgraph dev``, your own code):
    kasloop's own files are protected all the same, with the home ``KASLOOP_HOME`` or ``./.kasloop``."""
    protected = protected_paths_for(home=resolve_home(), tool_settings=config.tool_settings, extra=config.protected_paths)
    return ToolResources(protected=protected)


def __getattr__(name: str) -> Any:
    """``graph``: the loop built from ``kasloop.toml`` / ``KASLOOP_*``, for LangGraph Studio.

    Built on first access so importing this module never needs a model.
    """
    if name == "graph":
        built = build_graph(load_config())
        globals()["graph"] = built
        return built
    raise AttributeError(name)
