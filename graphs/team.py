"""A team: a manager agent that plans and delegates to least-privilege specialist agents.

The manager is the ordinary agent loop with one more tool, ``delegate``
(``specialist``, ``task``). Each specialist is the same loop built by
:func:`~kasloop.graphs.agent.build_graph` from the manager's config with only
its own tools and an autonomy level no higher than the manager's. A
delegation runs the specialist as a LangGraph subgraph inside the manager's
``act`` node, so its checkpoints live in the manager's thread (under its own
checkpoint namespace), and:

* an approval the specialist needs interrupts the whole team: the request
  reaches the top (``kasloop approvals`` shows it with its ``path``, e.g.
  ``research-3f9a2c1b``), and resuming the team thread resumes exactly that
  specialist, which finishes its task and hands the result back;
* what the specialist spent (tool calls, tokens, USD) is added to the
  manager's usage, and the specialist only ever gets the budget the manager
  has left, so a team cannot overspend the manager's limits;
* outside content a specialist read (web pages, mail) makes its result
  untrusted for the manager, and a manager holding untrusted content hands
  its taint on with the task: at level 3 the next side effect needs approval.

Every decision inside a specialist is logged under the thread id
``<team thread>/<specialist>-<call>``; ``kasloop history THREAD`` shows them.

Drawn (``get_graph()``: Studio, notebooks), the team is the manager's loop plus
one node per specialist: ``act`` → specialist (``delegate``) → ``act``
(``result``); with ``xray`` each specialist's own loop is drawn in its place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.graph import Graph
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field, create_model

from kasloop.checkpoints.memory import MemoryEventLog, MemoryInbox, MemoryLedger
from kasloop.checkpoints.spend import MemorySpend
from kasloop.guardrails.budget import Breach
from kasloop.config.schema import AgentConfig, Specialist
from kasloop.graphs.agent import build_graph, standalone_resources
from kasloop.graphs.collaboration import blackboard_tools, build_collaboration_graph
from kasloop.graphs.members import build_members, specialist_config, specialist_context
from kasloop.nodes.deps import EventSink, InboxLike, LedgerLike, SpendLike
from kasloop.nodes.messages import untrusted_sources
from kasloop.state import RunContext, Usage, empty_usage, new_task
from kasloop.tools.base import Tool, ToolContext, ToolResources, ToolResult
from kasloop.tools.langchain_tools import as_tools
from kasloop.tools.mcp import mcp_servers_named
from kasloop.tools.registry import select_tools, with_traits

__all__ = [
    "DELEGATE_TIMEOUT",
    "TeamGraph",
    "build_for",
    "build_team_graph",
    "delegate_tool",
    "specialist_config",
    "specialist_context",
    "team_tools",
    "tool_names_for",
]

DELEGATE_TIMEOUT = 3600.0
"""Seconds one delegated task may take (the specialist's own step budget usually ends it first)."""

def delegate_tool(members: dict[str, Specialist], graphs: dict[str, Any], tools: dict[str, tuple[str, ...]], configs: dict[str, AgentConfig]) -> Tool:
    """The manager's ``delegate`` tool over these specialists (their compiled graphs, tool names and configs)."""
    names = tuple(members)
    args_model: type[BaseModel] = create_model(
        "DelegateArgs",
        specialist=(Literal[names], Field(description="Who does it: " + "; ".join(f"{n}: {m.description}" for n, m in members.items()))),  # type: ignore[valid-type]
        task=(str, Field(min_length=1, description="The task, with everything the specialist needs to know (it sees nothing else).")),
    )

    async def delegate(args: Any, ctx: ToolContext) -> ToolResult:
        name: str = args.specialist
        manager = ctx.run if isinstance(ctx.run, RunContext) else RunContext(thread_id=ctx.thread_id)
        used = dict(ctx.state.get("usage") or empty_usage())
        # One sub-thread per delegation, stable across re-runs of the manager's act (after an approval or a crash).
        call = hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:8]
        sub_thread = f"{manager.thread_id}/{name}-{call}"
        sub_ctx = specialist_context(manager, used, configs[name], sub_thread, tools[name])  # type: ignore[arg-type]
        turns = int((ctx.state.get("team_turns") or {}).get(name, 0))
        start = {
            **new_task(args.task), "messages": [HumanMessage(args.task)], "goals": [{"id": "g1", "text": args.task, "status": "open"}],
            "model_turns": turns, "inherited_taint": ["the manager's task"] if ctx.state.get("tainted") else [],
        }
        values = await graphs[name].ainvoke(start, context=sub_ctx)
        status = values.get("status", "running")
        output = str(values.get("output", ""))
        spent = values.get("usage") or empty_usage()
        meta: dict[str, Any] = {
            "specialist": name, "thread": sub_thread, "status": status, "model_turns": values.get("model_turns", turns),
            "agent_usage": dict(spent), "untrusted": bool(_read_untrusted(values)),
        }
        breach = values.get("budget_breach") or {}
        if status == "paused_budget" and breach.get("limit") not in (None, "max_steps"):
            # What was left of the manager's budget ran out: the team pauses, in the manager's numbers.
            managers = _managers_breach(breach, manager, used, spent)  # type: ignore[arg-type]
            meta["budget_breach"], meta["budget_message"] = managers.to_json(), managers.message()
        if status == "done":
            return ToolResult(ok=True, output=f"{name} finished: {output}", metadata=meta)
        why = {"paused_budget": "its budget ran out", "escalated": "it got stuck", "failed": "it was stopped"}.get(status, status)
        return ToolResult(ok=False, output=f"Error: {name} could not finish ({why}): {output}", error_kind="permanent", metadata=meta)

    return Tool(
        name="delegate",
        description="Give one task to a specialist of your team and get its result back. Specialists: "
        + "; ".join(f"{n} ({m.description})" for n, m in members.items()),
        args_model=args_model,
        func=delegate,
        risk="read",  # the specialist gates its own calls: delegating is not a side effect of its own
        idempotent=True,  # re-running a delegation resumes the same specialist from its checkpoint
        timeout=DELEGATE_TIMEOUT,
        output_limit=4000,
        family="team",
        untrusted=False,  # per result: metadata "untrusted" says when the specialist read outside content
    )


_USED = {
    "max_tool_calls": lambda u: u["tool_calls"],
    "max_tokens": lambda u: u["input_tokens"] + u["output_tokens"],
    "max_usd": lambda u: u["usd"],
    "max_seconds": lambda u: u["seconds"],
}


def _managers_breach(breach: dict[str, Any], manager: RunContext, used: Usage, spent: Usage) -> Breach:
    """A specialist's budget breach restated against the manager's limit and the team's total use."""
    limit = breach["limit"]
    if limit not in _USED:  # the day limits are the same numbers for everyone
        return Breach(limit=limit, value=breach["value"], used=breach["used"], next_cost=breach.get("next_cost", 0.0), before=breach.get("before", "model call"))
    total = _USED[limit](used) + _USED[limit](spent) + (1 if limit == "max_tool_calls" else 0)  # + the delegation itself
    return Breach(limit=limit, value=getattr(manager, limit), used=total, next_cost=breach.get("next_cost", 0.0), before=breach.get("before", "model call"))


def _read_untrusted(values: dict[str, Any]) -> bool:
    return bool(values.get("tainted")) or bool(untrusted_sources(values.get("messages", [])))


class TeamGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A team's compiled graph: the manager's loop, drawn with the specialists it delegates to.

    Why a subclass: a delegation runs a specialist's loop inside the manager's ``act`` node (the
    ``delegate`` tool), and LangGraph draws only nodes and edges, not what a tool calls, so the team
    was drawn exactly like a single agent. Only the drawing differs from the manager's graph: the
    nodes, edges, state and checkpoints are the manager's, so a team runs exactly as before.
    ``specialists`` is kept through ``copy()`` (what ``langgraph dev`` does to every graph it serves).
    """

    DELEGATE = "delegate"
    """Label of the edge from ``act`` to a specialist: the manager's model called ``delegate``."""
    RESULT = "result"
    """Label of the edge from a specialist back to ``act``: its answer is the delegate call's result."""

    def __init__(self, *, specialists: Mapping[str, CompiledStateGraph[Any, Any, Any, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specialists: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = dict(specialists or {})

    @classmethod
    def of(cls, manager: CompiledStateGraph[Any, Any, Any, Any], specialists: Mapping[str, CompiledStateGraph[Any, Any, Any, Any]]) -> TeamGraph:
        """The manager's compiled graph as a team graph: the same objects (nodes, channels, saver), not a rebuild."""
        attrs = {k: v for k, v in vars(manager).items() if k != "__orig_class__"}
        team = cls(**attrs, specialists=specialists)
        vars(team).update(attrs)  # what the constructor does not take back (LangGraph's private mappers)
        return team

    def _specialist_nodes(self, taken: Iterable[str]) -> dict[str, str]:
        """The drawn node id of each specialist: its name, unless a manager node has it or it holds the
        ``:`` that LangGraph drawings use for subgraph prefixes."""
        used = set(taken)
        ids: dict[str, str] = {}
        for name in self.specialists:
            node = name.replace(":", "_")
            while node in used:
                node += "_specialist"
            used.add(node)
            ids[name] = node
        return ids

    def _with_specialists(self, drawn: Graph, inner: Mapping[str, Graph] | None) -> Graph:
        """Add the specialists to the manager's drawing: one node each, or (``inner``, for xray) its own loop."""
        if "act" not in drawn.nodes:  # nothing to hang them on (a manager graph someone changed)
            return drawn
        for name, node in self._specialist_nodes(drawn.nodes).items():
            if inner is None:
                drawn.add_node(self.specialists[name], node)
                entry, exit_ = node, node
            else:
                drawn.extend(inner[name], prefix=node)
                entry, exit_ = f"{node}:{START}", f"{node}:{END}"
            drawn.add_edge(drawn.nodes["act"], drawn.nodes[entry], self.DELEGATE, conditional=True)
            drawn.add_edge(drawn.nodes[exit_], drawn.nodes["act"], self.RESULT)
        return drawn

    def get_graph(self, config: RunnableConfig | None = None, *, xray: int | bool = False) -> Graph:
        """The manager's loop with its specialists (each one's own loop too with ``xray``)."""
        drawn = super().get_graph(config, xray=xray)
        if not xray:
            return self._with_specialists(drawn, None)
        deeper = xray if isinstance(xray, bool) else xray - 1
        return self._with_specialists(drawn, {n: g.get_graph(config, xray=deeper) for n, g in self.specialists.items()})

    async def aget_graph(self, config: RunnableConfig | None = None, *, xray: int | bool = False) -> Graph:
        """As :meth:`get_graph` (what the LangGraph server calls for Studio)."""
        drawn = await super().aget_graph(config, xray=xray)
        if not xray:
            return self._with_specialists(drawn, None)
        deeper = xray if isinstance(xray, bool) else xray - 1
        return self._with_specialists(drawn, {n: await g.aget_graph(config, xray=deeper) for n, g in self.specialists.items()})


def build_team_graph(
    config: AgentConfig,
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    model: BaseChatModel | None = None,
    specialist_models: dict[str, BaseChatModel] | None = None,
    tools: Iterable[Tool | BaseTool] = (),
    ledger: LedgerLike | None = None,
    events: EventSink | None = None,
    inbox: InboxLike | None = None,
    resources: ToolResources | None = None,
    spend: SpendLike | None = None,
) -> TeamGraph:
    """Compile a team: the manager loop of ``config`` (``config.run_team`` names the team) plus its specialists.

    Args:
        config: the manager's config; ``team_members()`` are the specialists.
        checkpointer: the team thread's saver (the specialists' checkpoints go in it too).
        model: the manager's chat model instead of its spec.
        specialist_models: chat models for specialists by name, instead of their specs.
        tools, ledger, events, inbox, resources, spend: as for ``build_graph``, shared by every member.
    """
    members = config.team_members()
    resources = resources or standalone_resources(config)
    # Members share one of each (in-process ones when the caller has no database).
    ledger = ledger or MemoryLedger()
    events = events or MemoryEventLog()
    inbox = inbox or MemoryInbox()
    spend = spend or MemorySpend()
    tools = as_tools(tools)
    graphs, configs, names = build_members(
        members, lambda name, member: specialist_config(config, name, member), models=specialist_models, tools=tools,
        ledger=ledger, events=events, inbox=inbox, resources=resources, spend=spend,
    )
    delegate = delegate_tool(members, graphs, names, configs)
    manager = config.model_copy(update={"tools": [*config.tools, "delegate"]})
    loop = build_graph(
        manager, checkpointer=checkpointer, model=model, tools=(*tools, delegate), ledger=ledger, events=events,
        inbox=inbox, resources=resources, spend=spend, name="kasloop-team",
    )
    return TeamGraph.of(loop, graphs)


def build_for(config: AgentConfig, *, model: BaseChatModel | None = None, **kwargs: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph a config describes: a team (``run_team``), a collaboration (``run_collaboration``) or a single agent.

    ``model``: a chat model object (``Agent(model=...)``) for the top agent, and for every specialist or peer
    that names no model of its own (they inherit the manager's model, as they inherit its spec).
    """
    if config.run_team is not None:
        inherit = {n: model for n, m in config.team_members().items() if m.model is None} if model is not None else None
        return build_team_graph(config, model=model, specialist_models=inherit, **kwargs)
    if config.run_collaboration is not None:
        chosen = config.collaboration[config.run_collaboration]
        peers = {n: model for n, p in chosen.peers.items() if p.model is None} if model is not None else None
        return build_collaboration_graph(config, chosen.peers, turn_limit=chosen.turn_limit, models=peers, **kwargs)
    return build_graph(config, model=model, **kwargs)


def tool_names_for(config: AgentConfig, extra: Iterable[Tool] = ()) -> tuple[str, ...]:
    """The tools the top agent of ``config`` may call (a team's manager also has ``delegate``)."""
    names = tuple(select_tools(config.tools, extra, config.tool_traits))
    return (*names, "delegate") if config.run_team is not None else names


def team_tools(config: AgentConfig, extra: Iterable[Tool] = ()) -> dict[str, Tool]:
    """Every tool of the team's members or the collaboration's peers by name (to check an edited call one proposed).

    MCP servers' names are left out until their tools are in ``extra`` (they are listed once a server is reached)."""
    extra = with_traits(extra, config.tool_traits)
    given = {t.name for t in extra} | {t.family for t in extra if t.family}
    found: dict[str, Tool] = {}
    for member in config.team_members().values():
        found.update(select_tools(_known(config, member.tools, given), extra))
    if config.run_collaboration is not None:
        board = (*extra, *blackboard_tools())
        for peer in config.collaboration_peers().values():
            found.update(select_tools(_known(config, peer.tools, given), board))
    return found


def _known(config: AgentConfig, names: Iterable[str], given: set[str]) -> list[str]:
    return [n for n in names if n in given or not mcp_servers_named(config, [n])]
