"""One thread on an open database: its stored policy, its lock, driving it, settling it, and reading its state.

A :class:`ThreadSession` lives for one command (a run, a resume, a decision, a
delete). Its graph is compiled the first time the command needs it and reused
after that, so checking a decision and then driving the thread compiles once;
reads that need only the state's values (``kasloop status``) never compile one.

Budgets (``max_steps``, ``max_tool_calls``) and the refusal and failure
counters bound a drive; LangGraph's step limit never stops a thread that runs
for days.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.types import Command
from pydantic import BaseModel, ValidationError

from kasloop.guardrails.approvals import Checked, Edit, approval_json, record_decision, record_request, reject_expired
from kasloop.guardrails.budget import with_budgets
from kasloop.channels.fanout import announce, notify
from kasloop.checkpoints import ApprovalRecord, ApprovalStore, Database, EventLog, Inbox, Ledger, ThreadStore
from kasloop.checkpoints.database import Connection
from kasloop.checkpoints.events import event_row
from kasloop.checkpoints.threads import policy_row
from kasloop.checkpoints.pruning import prune_events, prune_thread
from kasloop.checkpoints.rules import RuleStore
from kasloop.checkpoints.spend import SpendLog
from kasloop.config.schema import AgentConfig, PolicyRule
from kasloop.errors import ApprovalAlreadyDecided, ThreadBusy, ThreadNotFound, UsageError
from kasloop.graphs.agent import context_for
from kasloop.graphs.team import build_for, tool_names_for
from kasloop.models.chat import is_object_spec
from kasloop.runtime.events import Emit
from kasloop.runtime.result import RunResult
from kasloop.runtime.streaming import DriveEvents
from kasloop.safety.secrets import Redactor, known_secrets
from kasloop.state import empty_usage, new_task
from kasloop.tools.base import Tool, ToolResources
from kasloop.tools.mcp import all_tool_names, mcp_servers_named, mcp_tools
from kasloop.tools.process_control import stop_thread_processes

__all__ = ["PRUNE_EVERY", "RECURSION_LIMIT", "ProgressCallback", "Shared", "ThreadSession", "add_standing_rule"]

ProgressCallback = Callable[[str, dict[str, Any]], None]
"""Called with (node name, the node's update) after every node finishes. Optional: when the callback also
has a ``node_started(node)`` method, that is called with each node's name just before the node runs (a
live display shows the node running now). Names are the graph's nodes (perceive, decide, act,
self_diagnose, human_approval, ...), never LangGraph's internal ``__interrupt__``/``__start__``/``__end__``."""

RECURSION_LIMIT = 2**31 - 1
PRUNE_EVERY = 30
"""Nodes between checkpoint prunings inside one long drive (and once when it stops)."""

_OWNED = "thread_id = ? OR substr(thread_id, 1, ?) = ?"
"""Rows of a thread and of its specialists (``T/research-...``)."""
_THREAD_TABLES = ("kasloop_approvals", "kasloop_events", "kasloop_ledger", "kasloop_inbox", "kasloop_processes", "kasloop_threads")


class Shared(Protocol):
    """What a thread session takes from the home it was opened in (:class:`kasloop.runtime.sessions.Sessions`)."""

    config: AgentConfig
    model: BaseChatModel | None
    extra_tools: tuple[Tool, ...]
    callbacks: list[BaseCallbackHandler]
    progress: ProgressCallback | None
    stop_requested: bool

    def resources(self, db: Database) -> ToolResources | None: ...

    def thread_config(self, policy: dict[str, Any]) -> AgentConfig: ...

    def not_found(self, thread_id: str) -> ThreadNotFound: ...


class ThreadSession:
    """Thread ``thread_id`` under ``config`` (its stored policy over this process's settings) on ``db``.

    Made by :meth:`kasloop.runtime.sessions.Sessions.session` (a new thread) or
    :meth:`~kasloop.runtime.sessions.Sessions.stored` (an existing one).
    """

    def __init__(self, sessions: Shared, db: Database, thread_id: str, config: AgentConfig) -> None:
        self.sessions = sessions
        self.db = db
        self.thread_id = thread_id
        self.config = config
        self.run_config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
        self._graph: Any = None
        self.emit: Emit | None = None
        """Where :meth:`drive_locked` sends typed events (``Agent.astream``); None: nobody streams."""
        self.stream_text = True
        """Whether the events include the model's text (chat models then stream their replies)."""
        self.mcp_tools: tuple[Tool, ...] = ()
        """The tools of the MCP servers the thread's agents name, once :meth:`prepare` reached them."""
        self.output_model: type[BaseModel] | None = None
        """The pydantic class of the task's structured answer, when this process has it (``output=``): it
        validates the answer in decide too, and the result carries the answer as one (``RunResult.value``)."""

    # -- reading ----------------------------------------------------------------------------

    async def prepare(self) -> Any:
        """The compiled graph, after reaching the MCP servers the thread's agents name (started on demand: a
        command that only reads a thread's values starts none). ``ConfigError`` if one cannot be reached."""
        if self._graph is None and not self.mcp_tools and mcp_servers_named(self.config, all_tool_names(self.config)):
            resources = self.sessions.resources(self.db)
            if resources is not None:
                self.mcp_tools = await mcp_tools(self.config, resources)
        return self.graph

    @property
    def graph(self) -> Any:
        """The thread's compiled graph on this database, compiled on first use (once per session); a thread
        whose agents use MCP servers needs :meth:`prepare` first."""
        if self._graph is None:
            db, sessions = self.db, self.sessions
            self._graph = build_for(
                self.config, model=self._model_object(), checkpointer=db.saver, tools=(*sessions.extra_tools, *self.mcp_tools), ledger=Ledger(db), events=EventLog(db),
                inbox=Inbox(db), resources=sessions.resources(db), spend=SpendLog(db),
            )
        return self._graph

    def _runs_on_object(self) -> bool:
        """The thread's policy says its first model is a chat model object (``object:CLASS``, ``Agent(model=...)``)."""
        specs = self.config.model_specs
        return bool(specs) and is_object_spec(specs[0])

    def _model_object(self) -> BaseChatModel | None:
        """The chat model object this thread runs on, when its policy says ``object:CLASS`` and this process has one."""
        return self.sessions.model if self._runs_on_object() else None

    async def snapshot(self) -> Any:
        """LangGraph's ``StateSnapshot`` of the thread: values, the pause it waits in (``interrupts``), what runs next."""
        return await (await self.prepare()).aget_state(self.run_config)

    async def values(self) -> dict[str, Any]:
        """The state's values as last saved, read from the checkpoint without compiling a graph."""
        saved = await self.db.saver.aget_tuple({"configurable": {"thread_id": self.thread_id, "checkpoint_ns": ""}})
        return dict(saved.checkpoint["channel_values"]) if saved is not None else {}

    # -- the lock ---------------------------------------------------------------------------

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """One driver per thread: a ``kasloop run`` and the daemon never drive it together.

        ``Database.try_lock``: an exclusive ``flock`` next to a SQLite file (the kernel drops it when the
        process dies), a session advisory lock on PostgreSQL (it holds across machines; the server drops
        it when the connection goes).
        """
        name = f"thread:{self.thread_id}"
        if not await self.db.try_lock(name):
            raise ThreadBusy(
                f"Thread `{self.thread_id}` is being driven by another process (a run, resume or the daemon); "
                "wait for it, or see `kasloop status`."
            )
        try:
            yield
        finally:
            await self.db.unlock(name)

    # -- driving ----------------------------------------------------------------------------

    async def start_goal(self, goal: str, *, new: bool, output_schema: dict[str, Any] | None = None) -> RunResult:
        """Record ``goal`` on the thread (``new``: create it) and drive it; the caller holds the lock.
        ``output_schema``: the JSON schema the task's final answer must match (kept in the state with the task)."""
        goals: list[dict[str, Any]] = []
        if new:
            await ThreadStore(self.db).create(self.thread_id, goal, self.config.thread_policy())
        else:
            if await ApprovalStore(self.db).pending(self.thread_id):
                raise UsageError(
                    f"Thread `{self.thread_id}` is waiting for approval; decide with `kasloop approvals` / `kasloop approve ID` first."
                )
            goals = list((await self.snapshot()).values.get("goals", []))
        await EventLog(self.db).append(self.thread_id, 0, "goal", text=goal)
        goals.append({"id": f"g{len(goals) + 1}", "text": goal, "status": "open"})
        payload = {"messages": [HumanMessage(goal)], "goals": goals, **new_task(goal), "output_schema": output_schema}
        if self.config.run_collaboration is not None:
            payload["task"] = goal  # the collaboration's problem (its state has no goals list)
        return await self.drive_locked(payload)

    async def resume(self) -> RunResult:
        """Continue the thread where it stopped (after a crash, once its approvals are decided, or with new inbox messages)."""
        snapshot = await self.snapshot()
        if snapshot.interrupts:  # requests that expired unanswered are rejected first (unless the policy keeps them)
            await reject_expired(self.db, self.config, self.thread_id, (snapshot.values or {}).get("usage", empty_usage())["steps"])
            batch = await ApprovalStore(self.db).batch(snapshot.interrupts[0].id)
            if not batch or any(r["status"] == "pending" for r in batch):
                return await self.settle()
            return await self.drive(Command(resume=_resume_value(batch)))
        if not snapshot.values:
            raise UsageError(
                f"Thread `{self.thread_id}` has no checkpoint (its first run died before the first one was written); "
                f"start it again with `kasloop run GOAL --thread {self.thread_id}`."
            )
        if _finished(snapshot) and snapshot.values.get("status") == "paused_budget":
            # The nodes check the budgets again: a limit that was raised lets the thread go on.
            return await self.continue_paused(snapshot.values)
        if _finished(snapshot):
            if await Inbox(self.db).newer(self.thread_id, snapshot.values.get("inbox_seen", 0)):
                # Finished, but instructions arrived since (`kasloop tell`): a new cycle reads them.
                return await self.drive(new_task())
            return await self.settle()
        return await self.drive(None)

    async def drive(self, payload: Any) -> RunResult:
        async with self.locked():
            return await self.drive_locked(payload)

    async def drive_locked(self, payload: Any) -> RunResult:
        """Stream the graph from ``payload`` until it ends, pauses or is asked to stop; then settle. The caller holds the lock."""
        sessions, config = self.sessions, self.config
        if self._runs_on_object() and sessions.model is None:
            raise UsageError(
                f"Thread `{self.thread_id}` runs on a chat model object ({config.model_specs[0]}) that only Python has; continue it there: "
                f"`await Agent(config, model=...).resume({self.thread_id!r})` (decisions recorded so far are kept)."
            )
        graph = await self.prepare()
        ctx = context_for(config, self.thread_id, tool_names_for(config, (*sessions.extra_tools, *self.mcp_tools)))
        standing = await RuleStore(self.db).policy_rules()
        if standing:  # rules people added since (`--always`, `kasloop rules add`) join the thread's own
            ctx = dataclasses.replace(ctx, rules=(*ctx.rules, *standing))
        if self.output_model is not None:
            ctx = dataclasses.replace(ctx, output_model=self.output_model)
        run_config: dict[str, Any] = {**self.run_config, "recursion_limit": RECURSION_LIMIT}
        if sessions.callbacks:
            run_config["callbacks"] = sessions.callbacks
        # "tasks" adds LangGraph's task-start events, each yielded before its node runs: only asked for
        # when the progress callback wants to hear which node is starting, or someone streams.
        started = getattr(sessions.progress, "node_started", None)
        events = None
        if self.emit is not None:
            events = DriveEvents(self.emit, self.thread_id, Redactor.for_config(config).merged(known_secrets()), text=self.stream_text)
        modes = events.modes if events is not None else ["updates", "tasks"] if started is not None else ["updates"]
        nodes = 0
        async for mode, chunk in graph.astream(payload, run_config, context=ctx, durability=config.durability, stream_mode=modes):
            if events is not None:
                await events.handle(mode, chunk)
            if mode in ("messages", "custom"):
                continue
            if mode == "tasks":
                if started is not None and "result" not in chunk and not chunk["name"].startswith("__"):
                    started(chunk["name"])  # a start event (a result event has "result"; the update follows)
                continue
            nodes += 1
            if nodes % PRUNE_EVERY == 0:
                await self.prune()
            if sessions.progress is not None:
                for node, update in chunk.items():
                    if not node.startswith("__"):  # `__interrupt__`: a node paused (human_approval), it did not finish
                        sessions.progress(node, update if isinstance(update, dict) else {})
            if sessions.stop_requested or getattr(self.emit, "stopped", False):
                # Between nodes: the finished node's writes are saved, the next one never starts;
                # `resume` continues from exactly here.
                break
        await self.prune()
        return await self.settle()

    async def prune(self) -> None:
        """Keep the thread's checkpoints and events within the policy's bounds."""
        await prune_thread(self.db, self.thread_id, self.config.keep_checkpoints)
        await prune_events(self.db, self.thread_id, keep_days=self.config.events_keep_days, keep_last=self.config.events_keep_last)

    async def settle(self) -> RunResult:
        """Read where the thread stopped; persist pending approvals and announce them; return the result."""
        db, thread_id = self.db, self.thread_id
        snapshot = await self.snapshot()
        values = snapshot.values or {}
        approvals = ApprovalStore(db)
        step = values.get("usage", empty_usage())["steps"]
        batch_id: str | None = None
        for intr in snapshot.interrupts:
            batch_id = intr.id
            for request in intr.value.get("requests", []):
                await record_request(db, {**_at_top(request, thread_id), "batch_id": intr.id}, step)
        await approvals.mark_stale(thread_id, batch_id)
        records: list[dict[str, Any]] = []
        if snapshot.interrupts:  # a budget request (levels 2, 3) is a pause like any other, reported as the budget's
            status = "paused_budget" if snapshot.interrupts[0].value.get("kind") == "budget" else "waiting_approval"
            records = [approval_json(r) for r in await approvals.pending(thread_id)]
        else:
            status = values.get("status", "running")
            if status in ("running", "waiting_approval") and _finished(snapshot):
                status = "done"
        if records:
            await self.announce(records)
        elif status in ("escalated", "paused_budget") and not snapshot.interrupts:  # nobody is asked (level 4): tell them
            key = f"{status}:{step}:{values.get('model_turns', 0)}"
            await self.notify(key, f"Thread {thread_id} {status.replace('_', ' ')}", values.get("output", ""))
        await ThreadStore(db).set_status(thread_id, status)
        structured = values.get("output_schema") is not None
        data = values.get("structured") if structured and status == "done" else None
        return RunResult(
            thread=thread_id, status=status, output=values.get("output", ""), approvals=records, usage=values.get("usage", empty_usage()),
            structured=structured, data=data, value=self._as_output_model(data),
        )

    def _as_output_model(self, data: Any) -> BaseModel | None:
        """The structured answer as this process's ``output=`` class. The answer was checked against the stored
        schema; a class stricter than that (another class than the run's, or validators a process without the class
        could not run) is told in one line, and the answer stays readable as ``result.data``."""
        if self.output_model is None or data is None:
            return None
        try:
            return self.output_model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "/".join(str(p) for p in first["loc"]) or "the top level"
            raise UsageError(
                f"Thread `{self.thread_id}`'s answer does not fit {self.output_model.__name__} (at {where}: {first['msg']}); "
                f"read it as JSON from `status`/`history`, or resume with the class the task was run with."
            ) from None

    # -- channels ---------------------------------------------------------------------------

    async def announce(self, records: list[dict[str, Any]]) -> None:
        """Send pending requests to the thread's approval channels (its stored policy's; each once, failures retried later)."""
        config = await self._stored_policy()
        if config is not None:
            await announce(self.db, config, records)

    async def notify(self, key: str, subject: str, text: str) -> None:
        """Send a notice to the thread's channels, once per ``key``."""
        config = await self._stored_policy()
        if config is not None:
            await notify(self.db, config, self.thread_id, f"notice:{self.thread_id}:{key}", subject, text or subject)

    async def _stored_policy(self) -> AgentConfig | None:
        """The thread's channels come from its policy as stored now (None: the thread is gone)."""
        record = await ThreadStore(self.db).get(self.thread_id)
        return None if record is None else self.sessions.thread_config(record["policy"])

    # -- decisions and budgets --------------------------------------------------------------

    async def apply(self, checked: Checked, *, resume: bool) -> RunResult:
        """Record a decision :func:`kasloop.guardrails.approvals.check_decision` passed; once the pause is fully decided
        (and ``resume``), continue the thread.

        An approved budget request raises the limit in the thread's stored policy in the same transaction
        as the decision: a crash never keeps an approval whose raise was lost (the thread would ask again
        for the same numbers) or a raise nobody approved.
        """
        record = checked.record
        raise_to: tuple[list[Statement], AgentConfig] | None = None
        if record["kind"] == "budget" and checked.granted is not None:
            raise_to = await self._budget_writes({record["args"]["limit"]: checked.granted}, by=checked.by)
        await record_decision(self.db, checked, writes=raise_to[0] if raise_to else ())
        if raise_to is not None:
            self._go_on_under(raise_to[1])
        if checked.rule is not None:  # read by the drive below: the thread's next calls already follow it
            await add_standing_rule(self.db, PolicyRule(tool=record["tool"], action=checked.rule), by=checked.by)
        batch = await ApprovalStore(self.db).batch(record["batch_id"])
        if not resume or any(r["status"] == "pending" for r in batch):
            return await self.settle()
        return await self.drive(Command(resume=_resume_value(batch)))

    async def set_budgets(self, limits: dict[str, Any], *, by: str) -> dict[str, Any]:
        """Write new limits into the thread's stored policy (only people get here: ``kasloop budget``, Python).

        A budget request waiting for one of these limits is answered in the same transaction, as an edit
        granting the new value, by ``by`` on channel ``budget`` (when the value is above what is used; a
        lower one leaves the request waiting): the thread goes on with ``kasloop resume``, and nobody is
        left holding a request that no longer says what the limit is.
        """
        writes, config = await self._budget_writes(limits, by=by)
        pending = await ApprovalStore(self.db).pending(self.thread_id)
        record = next((r for r in pending if r["kind"] == "budget" and _grants(r, limits)), None)  # one pause, one budget request
        answered = False
        if record is not None:
            value = limits[record["args"]["limit"]]
            stored = {"decision": "edit", "args": {"value": value}, "arg_hash": record["arg_hash"], "by": by, "channel": "budget"}
            checked = Checked(
                record=record, config=config, decision=Edit(args={"value": value}), stored=stored, step=0, by=by, channel="budget", granted=value,
            )
            try:
                await record_decision(self.db, checked, writes=writes)
                answered = True
            except ApprovalAlreadyDecided:
                pass  # someone decided it meanwhile: the limits are written all the same
        if not answered:
            await self.db.write(lambda conn: _run_all(conn, writes))
        self._go_on_under(config)
        return config.budgets.model_dump(mode="json")

    async def _budget_writes(self, limits: dict[str, Any], *, by: str) -> tuple[list[Statement], AgentConfig]:
        """The writes that set ``limits`` in the stored policy (checked like kasloop.toml's ``[budgets]``) with their
        ``budget_changed`` event, and the thread's config under them."""
        record = await ThreadStore(self.db).get(self.thread_id)
        if record is None:
            raise self.sessions.not_found(self.thread_id)
        policy = with_budgets(record["policy"], limits)
        event = event_row(self.thread_id, 0, "budget_changed", by=by, **{k: policy["budgets"][k] for k in limits})
        return [policy_row(self.thread_id, policy), event], self.sessions.thread_config(policy)

    def _go_on_under(self, config: AgentConfig) -> None:
        """The raised limits are written: this session goes on under them (its graph is built again from them)."""
        self.config = config
        self._graph = None

    async def continue_paused(self, values: dict[str, Any] | None = None) -> RunResult:
        """Continue a thread a budget paused, exactly where it stopped (the calls not yet run first)."""
        values = values if values is not None else ((await self.snapshot()).values or {})
        goto = "act" if values.get("pending") and all(c.get("gate") == "allow" for c in values["pending"]) else "perceive"
        return await self.drive(Command(update={"status": "running", "budget_breach": None}, goto=goto))

    # -- deleting ---------------------------------------------------------------------------

    async def delete(self) -> dict[str, Any]:
        """Stop the thread's background processes, then remove its checkpoints and every row kasloop keeps for it
        (its specialists' too). Day spend stays counted: it was spent. The caller holds the lock."""
        db, thread_id = self.db, self.thread_id
        stopped = await stop_thread_processes(db, thread_id)
        prefix = thread_id + "/"
        params = (thread_id, len(prefix), prefix)
        members = {thread_id} | {row[0] for row in await db.fetchall(f"SELECT DISTINCT thread_id FROM kasloop_events WHERE {_OWNED}", params)}
        for member in sorted(members):
            await db.saver.adelete_thread(member)
        await db.execute(f"DELETE FROM kasloop_announcements WHERE approval_id IN (SELECT approval_id FROM kasloop_approvals WHERE {_OWNED})", params)
        rows = 0
        for table in _THREAD_TABLES:
            rows += await db.execute(f"DELETE FROM {table} WHERE {_OWNED}", params)
        return {"thread": thread_id, "processes_stopped": stopped, "checkpoint_threads": len(members), "rows": rows}


async def add_standing_rule(db: Database, rule: PolicyRule, *, by: str) -> int:
    """A rule for every thread of ``db`` from their next drive (``--always``, ``kasloop rules add``); logged with who added it."""
    rule_id = await RuleStore(db).add(rule, by=by)
    await EventLog(db).append("", 0, "rule_added", rule_id=rule_id, tool=rule.tool, action=rule.action, args=rule.args, by=by)
    return rule_id


def _finished(snapshot: Any) -> bool:
    """The graph reached its end. ``next`` alone is not enough: after a crash between a node's saved
    writes and the checkpoint that follows, LangGraph lists that node in ``tasks`` (done) but not in
    ``next``, and the thread still has to be continued (``resume`` applies the writes and goes on)."""
    return not snapshot.next and not snapshot.tasks


def _at_top(request: dict[str, Any], thread_id: str) -> dict[str, Any]:
    """A request made inside a team's specialist (thread ``T/research-…``) belongs to thread ``T``, with its path."""
    inner = str(request.get("thread", thread_id))
    path = inner.removeprefix(thread_id + "/") if inner.startswith(thread_id + "/") else ""
    return {**request, "thread": thread_id, "path": path}


Statement = tuple[str, tuple[Any, ...]]


def _run_all(conn: Connection, statements: list[Statement]) -> None:
    for statement in statements:
        conn.execute(*statement)


def _grants(record: ApprovalRecord, limits: dict[str, Any]) -> bool:
    """Whether ``limits`` raise the limit a budget request waits for above what is used."""
    value = limits.get(record["args"].get("limit"))
    return value is not None and float(value) > float(record["args"]["used"])


def _resume_value(batch: list[ApprovalRecord]) -> dict[str, Any]:
    return {r["approval_id"]: r["decision"] for r in batch}
