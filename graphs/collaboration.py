"""Collaboration: peers with equal authority take turns on one problem over a shared blackboard.

Prefer it over a team (:mod:`kasloop.graphs.team`) when there is no single
planner to trust and the value is in peers cross-checking each other (two
reviewers, a solver and a verifier who must agree). Prefer a team when the
work splits into parts that each need only some tools (least privilege) and
one manager can plan and combine them.

Each peer is the ordinary agent loop (:func:`~kasloop.graphs.agent.build_graph`)
with its own tools plus ``blackboard_read`` and ``blackboard_post``. The
blackboard is a LangGraph ``BaseStore`` namespace per collaboration thread
(kasloop's store when there is a database, SQLite or PostgreSQL, an
in-process ``InMemoryStore`` otherwise). Peers speak in round-robin order; a peer's
turn ends with its reply, which is posted on the blackboard as a ``message``
for the others. The run ends ``done`` with the shared answer as soon as every
peer's latest ``proposal`` is the same answer (ignoring case and whitespace),
or ``escalated`` at the turn limit, which is fixed when the graph is compiled
(no model can change it).

A peer runs as a subgraph inside the ``turn`` node, so an approval it needs
interrupts the whole collaboration and resuming the thread resumes that peer;
its decisions are logged under the thread id ``<thread>/<peer>-<turn>`` (``<peer>-<task>.<turn>``
from a thread's second task on).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # not typing's: on Python < 3.12 pydantic builds no JSON schema from it (Studio)

from kasloop.checkpoints.memory import MemoryEventLog, MemoryInbox, MemoryLedger
from kasloop.checkpoints.spend import MemorySpend
from kasloop.checkpoints.store import open_store
from kasloop.config.schema import AgentConfig, Specialist
from kasloop.errors import ConfigError
from kasloop.graphs.agent import context_for, standalone_resources
from kasloop.graphs.members import build_members, specialist_config, specialist_context
from kasloop.nodes.deps import EventSink, InboxLike, LedgerLike, SpendLike
from kasloop.state import RunContext, Usage, empty_usage, new_task
from kasloop.tools.base import Tool, ToolContext, ToolResources, ToolResult
from kasloop.tools.langchain_tools import as_tools

__all__ = [
    "BLACKBOARD_TOOLS",
    "CollaborationState",
    "blackboard_store",
    "blackboard_tools",
    "build_collaboration_graph",
    "normalise",
    "read_blackboard",
]

BLACKBOARD_TOOLS = ("blackboard_read", "blackboard_post")
RECURSION_LIMIT = 10_000
"""LangGraph steps per invoke: far above what ``turn_limit`` and the peers' ``max_steps`` allow."""

PEER_PROMPT = (
    "You are {name}, one of several peers with equal authority working on one shared problem: {description} "
    "Read the blackboard to see what the other peers wrote, check their work, and post notes. When you have an "
    "answer, post it with kind 'proposal' (just the answer). The problem is solved when every peer proposes the "
    "same answer. End your turn with a short plain-text message to the other peers."
)


class CollaborationState(TypedDict, total=False):
    """The collaboration's own state (the peers' loops keep theirs in their subgraphs).

    ``task`` is the problem; when it is missing, the last message is (what ``kasloop.Agent`` sends).
    """

    task: str
    messages: Annotated[list[AnyMessage], add_messages]
    turn: int
    proposals: dict[str, str]
    since: int
    """When this task started (ns): only proposals posted since count, so a thread can take a new task."""
    tasks: int
    """Tasks this thread was given (the first is 1): peers' thread ids of later tasks say which one."""
    peer_turns: dict[str, int]
    """Model turns each peer has taken in this thread: its next turn goes on from there (a scripted
    peer continues its script; approval ids and idempotency keys never repeat)."""
    status: str
    output: str
    usage: Usage


def normalise(answer: str) -> str:
    """Two proposals agree when they are equal ignoring case and runs of whitespace."""
    return " ".join(answer.split()).casefold()


async def blackboard_store(resources: ToolResources) -> BaseStore:
    """The store the blackboard lives in: kasloop's store on its database (SQLite or PostgreSQL), else an in-process one."""

    async def open_board() -> BaseStore:
        if resources.database is not None:
            return await open_store(resources.database)
        return InMemoryStore()

    async def close_board(store: BaseStore) -> None:
        close = getattr(store, "close", None)
        if close is not None and resources.database is not None:
            close()

    return await resources.shared("collaboration.store", open_board, close_board)


def _namespace(thread: str) -> tuple[str, ...]:
    return ("collaboration", thread.replace(".", "_"))


def _split(thread_id: str) -> tuple[str, str]:
    """``<thread>/<peer>-<turn>`` (or ``<peer>-<task>.<turn>``) → (collaboration thread, peer)."""
    top, _, own = thread_id.rpartition("/")
    return top or thread_id, own.rsplit("-", 1)[0] if top else "peer"


async def read_blackboard(store: BaseStore, thread: str) -> list[dict[str, Any]]:
    """Every post of the collaboration thread, oldest first: ``{"author", "kind", "text", "at"}``."""
    items = await store.asearch(_namespace(thread), limit=10_000)
    return sorted((dict(item.value) for item in items), key=lambda v: (v["at"], v.get("seq", 0)))


async def _post(store: BaseStore, thread: str, key: str, author: str, kind: str, text: str) -> None:
    """Add one post; the same ``key`` twice (a re-run after an approval or crash) keeps the first."""
    ns = _namespace(thread)
    if await store.aget(ns, key) is None:
        await store.aput(ns, key, {"author": author, "kind": kind, "text": text, "at": time.time_ns()}, index=False)


def _render(posts: Iterable[Mapping[str, Any]]) -> str:
    lines = [f"- [{p['kind']}] {p['author']}: {p['text']}" for p in posts]
    return "\n".join(lines) if lines else "(the blackboard is empty)"


class _ReadArgs(BaseModel):
    pass


class _PostArgs(BaseModel):
    text: str = Field(min_length=1, max_length=4000, description="What to post; for a proposal, just the answer.")
    kind: Literal["note", "proposal"] = Field(default="note", description="'proposal' for your answer, else 'note'.")


def blackboard_tools() -> tuple[Tool, Tool]:
    """``blackboard_read`` and ``blackboard_post`` over the calling peer's collaboration thread."""

    async def read(args: Any, ctx: ToolContext) -> ToolResult:
        thread, _ = _split(ctx.thread_id)
        posts = await read_blackboard(await blackboard_store(ctx.resources), thread)
        return ToolResult(ok=True, output=_render(posts))

    async def post(args: Any, ctx: ToolContext) -> ToolResult:
        thread, author = _split(ctx.thread_id)
        await _post(await blackboard_store(ctx.resources), thread, ctx.idempotency_key or f"{time.time_ns()}", author, args.kind, args.text)
        return ToolResult(ok=True, output=f"Posted your {args.kind}.")

    common: dict[str, Any] = {"idempotent": True, "timeout": 30.0, "output_limit": 8000, "family": "collaboration", "untrusted": False}
    return (
        Tool(name="blackboard_read", description="Read everything the peers posted on the shared blackboard.",
             args_model=_ReadArgs, func=read, risk="read", **common),
        # Posting only writes the collaboration's own scratch space: no side effect outside the run.
        Tool(name="blackboard_post", description="Post a note or your proposed answer on the shared blackboard.",
             args_model=_PostArgs, func=post, risk="read", **common),
    )


def peer_config(config: AgentConfig, name: str, peer: Specialist) -> AgentConfig:
    """A peer's config: the collaboration's, with the peer's tools and model, the blackboard, and a capped level."""
    return specialist_config(config, name, peer, prompt=PEER_PROMPT, extra_tools=BLACKBOARD_TOOLS)


def _task(state: CollaborationState) -> str:
    if state.get("task"):
        return state["task"]
    humans = [m for m in state.get("messages", []) if isinstance(m, HumanMessage)]
    if not humans:
        raise ConfigError("a collaboration needs a task: invoke it with {'task': '...'}")
    return str(humans[-1].content)


def _agreed(proposals: Mapping[str, str], peers: Iterable[str]) -> str | None:
    """The shared answer when every peer has proposed the same one."""
    answers = [proposals.get(p) for p in peers]
    if any(a is None for a in answers) or len({normalise(a) for a in answers if a is not None}) != 1:
        return None
    return answers[0]


def build_collaboration_graph(
    config: AgentConfig,
    peers: Mapping[str, Specialist],
    *,
    turn_limit: int,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    models: Mapping[str, BaseChatModel] | None = None,
    tools: Iterable[Tool | BaseTool] = (),
    ledger: LedgerLike | None = None,
    events: EventSink | None = None,
    inbox: InboxLike | None = None,
    resources: ToolResources | None = None,
    spend: SpendLike | None = None,
    name: str = "kasloop-collaboration",
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile a collaboration of ``peers`` (round-robin, at most ``turn_limit`` turns in all).

    Invoke it with ``{"task": "..."}`` and ``config={"configurable": {"thread_id": ...}}``;
    the final state has ``status`` (``done`` or ``escalated``), ``output`` (the shared
    answer) and ``turn`` (turns taken).

    Args:
        config: the shared policy (autonomy, rules, budgets per peer turn, workspace).
        peers: the peers by name; the order is the speaking order.
        turn_limit: the hard limit on peer turns; reached without agreement → ``escalated``.
        checkpointer: the collaboration thread's saver (the peers' checkpoints go in it too).
        models: chat models for peers by name, instead of their specs.
        tools, ledger, events, inbox, resources, spend: as for ``build_graph``, shared by every peer.
    """
    if not peers:
        raise ConfigError("a collaboration needs at least one peer")
    if turn_limit < 1:
        raise ConfigError(f"turn_limit must be at least 1, got {turn_limit}")
    order = tuple(peers)
    resources = resources or standalone_resources(config)
    ledger, events, inbox, spend = ledger or MemoryLedger(), events or MemoryEventLog(), inbox or MemoryInbox(), spend or MemorySpend()
    graphs, configs, names = build_members(
        peers, lambda name, peer: peer_config(config, name, peer), models=models, tools=(*as_tools(tools), *blackboard_tools()),
        ledger=ledger, events=events, inbox=inbox, resources=resources, spend=spend,
    )

    async def turn(state: CollaborationState, config: RunnableConfig, runtime: Runtime[RunContext]) -> dict[str, Any]:
        """One peer's turn: its agent loop over the task and the blackboard, then its reply is posted."""
        thread = str((config.get("configurable") or {}).get("thread_id", "default"))
        task = _task(state)
        n = state.get("turn", 0)
        who = order[n % len(order)]
        task_no = state.get("tasks", 1)
        sub_thread = f"{thread}/{who}-{n + 1}" if task_no <= 1 else f"{thread}/{who}-{task_no}.{n + 1}"
        store = await blackboard_store(resources)
        board = _render(await read_blackboard(store, thread))
        prompt = f"Problem: {task}\n\nThe blackboard so far:\n{board}\n\nIt is your turn, {who} (turn {n + 1} of {turn_limit})."
        sub_config, tool_names = configs[who], names[who]
        used = state.get("usage") or empty_usage()
        top = runtime.context if isinstance(runtime.context, RunContext) else None
        # Under a run policy (kasloop.Agent), a peer gets only what is left of the collaboration's budgets.
        # A peer's spent budget stops the collaboration (below) instead of asking inside the peer's loop.
        ctx = specialist_context(top, used, sub_config, sub_thread, tool_names) if top else replace(context_for(sub_config, sub_thread, tool_names), budget_asks=False)
        peer_turns = dict(state.get("peer_turns") or {})
        values = await graphs[who].ainvoke(
            {
                **new_task(), "messages": [HumanMessage(prompt)], "goals": [{"id": "g1", "text": task, "status": "open"}],
                "model_turns": peer_turns.get(who, 0),
            },
            context=ctx,
        )
        peer_turns[who] = int(values.get("model_turns", peer_turns.get(who, 0)))
        reply = str(values.get("output", "")).strip()
        if reply:
            await _post(store, thread, f"reply-{state.get('since', 0)}-{n + 1}", who, "message", reply)
        proposals = dict(state.get("proposals") or {})
        for post in await read_blackboard(store, thread):
            if post["kind"] == "proposal" and post["author"] in peers and post["at"] >= state.get("since", 0):
                proposals[post["author"]] = post["text"]
        spent = values.get("usage") or empty_usage()
        usage = Usage(**{k: used[k] + spent[k] for k in used})  # type: ignore[typeddict-item]
        update: dict[str, Any] = {"turn": n + 1, "proposals": proposals, "usage": usage, "peer_turns": peer_turns}
        if values.get("status") not in ("done", None):  # a peer that is stopped (budget, stuck) stops the collaboration
            return {**update, "status": values["status"], "output": f"{who} could not finish its turn: {reply}"}
        agreed = _agreed(proposals, order)
        if agreed is not None:
            return {**update, "status": "done", "output": agreed, "messages": [AIMessage(agreed)]}
        if n + 1 >= turn_limit:
            return {**update, "status": "escalated", "output": f"No consensus after {turn_limit} turns."}
        return {**update, "status": "running"}

    def start(state: CollaborationState) -> dict[str, Any]:
        """A new task (every invoke with input): turns and proposals start again; the blackboard stays as context."""
        return {
            "turn": 0, "proposals": {}, "since": time.time_ns(), "status": "running", "output": "", "usage": empty_usage(),
            "tasks": state.get("tasks", 0) + 1,
        }

    def route(state: CollaborationState) -> str:
        return "turn" if state.get("status") == "running" else END

    builder = StateGraph(CollaborationState, context_schema=RunContext)
    builder.add_node("start", start)
    builder.add_node("turn", turn)
    builder.add_edge(START, "start")
    builder.add_edge("start", "turn")
    builder.add_conditional_edges("turn", route, {"turn": "turn", END: END})
    # The turn limit and each peer's max_steps bound the run; LangGraph's recursion limit (25 by
    # default, inherited by the peers' loops) must not cut a long peer turn short.
    return builder.compile(checkpointer=checkpointer, name=name).with_config(recursion_limit=RECURSION_LIMIT)

