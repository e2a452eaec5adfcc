"""``Agent``: run goals as durable threads, pause for approvals, resume from any process.

Each thread's policy is stored when it starts; every later call (resume,
approve, reject) rebuilds the graph from that stored policy, so a different
process, flag or model output cannot widen what the thread may do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import hashlib
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langgraph.types import Command
from pydantic import ValidationError

from kasloop.approvals import (
    Approve,
    Checked,
    Reject,
    Respond,
    TypedDecision,
    approval_json,
    check_decision,
    parse_decision,
    record_decision,
    record_request,
    reject_expired,
)
from kasloop.checkpoints import ApprovalRecord, ApprovalStore, Database, Decision, EventLog, Inbox, Ledger, ThreadStore, open_database
from kasloop.checkpoints.pruning import prune_events, prune_thread
from kasloop.checkpoints.rules import RuleStore
from kasloop.budget import LIMITS, budget_request, check_prices, with_budgets
from kasloop.channels import runner
from kasloop.checkpoints.spend import SpendLog
from kasloop.checkpoints.database import display_db, is_postgres_url
from kasloop.checkpoints.sqlite import sqlite_path
from kasloop.config import AgentConfig, PolicyRule, Specialist
from kasloop.errors import ConfigError, ThreadBusy, ThreadNotFound, UsageError, check_text
from kasloop.graphs.agent import context_for
from kasloop.graphs.team import build_for, team_tools, tool_names_for
from kasloop.locks import try_lock
from kasloop.models import resolve_model_specs
from kasloop.protected import protected_paths_for
from kasloop.secrets import Redactor, known_secrets, remember_secrets
from kasloop.settings import resolve_home
from kasloop.state import Usage, empty_usage, new_task
from kasloop.tools.base import Tool, ToolResources
from kasloop.tools.process import stop_thread_processes
from kasloop.tools.sandbox import reap_orphans
from kasloop.tools.shell import SANDBOX_RECORDS
from kasloop.tools.registry import check_tool_settings, select_tools

__all__ = ["Agent", "ProgressCallback", "RunResult", "approval_json"]  # approval_json: kasloop.approvals' own, kept importable here

EXIT_CODES = {"done": 0, "waiting_approval": 10, "paused_budget": 11, "escalated": 12, "failed": 12}

# Budgets (max_steps, max_tool_calls) and the refusal/failure counters bound a run; LangGraph's
# step limit must never be what stops a thread that runs for days.
RECURSION_LIMIT = 2**31 - 1
PRUNE_EVERY = 30
"""Nodes between checkpoint prunings inside one long drive (and once when it stops)."""

ProgressCallback = Callable[[str, dict[str, Any]], None]
"""Called with (node name, the node's update) after every node finishes. Optional: when the callback also
has a ``node_started(node)`` method, that is called with each node's name just before the node runs (a
live display shows the node running now). Names are the graph's nodes (perceive, decide, act,
self_diagnose, human_approval, ...), never LangGraph's internal ``__interrupt__``/``__start__``/``__end__``."""
T = TypeVar("T")


@dataclass
class RunResult:
    """Where a thread stands after ``run``/``resume``/``approve``."""

    thread: str
    status: str
    output: str = ""
    approvals: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=empty_usage)

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this status (0 done, 10 approval, 11 budget, 12 escalated)."""
        return EXIT_CODES.get(self.status, 1)

    def to_json(self) -> dict[str, Any]:
        return {"thread": self.thread, "status": self.status, "output": self.output, "approvals": self.approvals, "usage": dict(self.usage)}


def _run_sync(coro: Awaitable[T], name: str) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    if hasattr(coro, "close"):
        coro.close()  # type: ignore[union-attr]
    raise UsageError(f"Agent.{name}_sync() was called inside a running event loop; use `await agent.{name}(...)`.")


def _absolute_policy(config: AgentConfig, cwd: Path) -> AgentConfig:
    """Make paths in the policy absolute, so any process can resume the thread."""
    workspace = config.workspace if config.workspace.is_absolute() else (cwd / config.workspace)
    team = {name: _absolute_members(members, cwd) for name, members in config.team.items()}
    collaboration = {
        name: chosen.model_copy(update={"peers": _absolute_members(chosen.peers, cwd)}) for name, chosen in config.collaboration.items()
    }
    return config.model_copy(update={
        "workspace": workspace.resolve(), "model": _absolute_specs(resolve_model_specs(config), cwd), "team": team,
        "collaboration": collaboration,
    })


def _absolute_members(members: dict[str, Specialist], cwd: Path) -> dict[str, Specialist]:
    """Team members or peers with absolute scripted model paths."""
    return {
        name: spec.model_copy(update={"model": _absolute_specs(spec.model, cwd)}) if spec.model is not None else spec
        for name, spec in members.items()
    }


def _absolute_specs(model: str | list[str], cwd: Path) -> str | list[str]:
    """Scripted model files as absolute paths (a resumed thread may run in another folder)."""
    specs = []
    for spec in [model] if isinstance(model, str) else model:
        kind, _, rest = spec.partition(":")
        if kind == "scripted" and rest and not Path(rest).is_absolute():
            spec = f"scripted:{(cwd / rest).resolve()}"
        specs.append(spec)
    return specs[0] if len(specs) == 1 else specs


class Agent:
    """Runs goals as durable threads in a kasloop home (``.kasloop/``).

    Example:
        ```python
        agent = Agent(AgentConfig(autonomy=3, model="scripted:plan.jsonl", workspace="ws"))
        result = await agent.run("write hello.txt")
        if result.status == "waiting_approval":
            result = await agent.approve(result.approvals[0]["approval_id"])
        ```

    Args:
        config: policy and settings for new threads (existing threads keep their own policy).
        home: kasloop home folder (default: ``KASLOOP_HOME`` or ``./.kasloop``).
        db: database file, ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB`` (default: ``<home>/kasloop.db``).
        tools: extra tools (``kasloop.tools.Tool``) that configs may select.
        progress: called with (node name, update) after every node, e.g. for a live display; if it also has a
            ``node_started(node)`` method, that is called as each node starts (see ``ProgressCallback``).
        callbacks: LangChain callback handlers for every run (a tracer such as LangSmith's, your own logging):
            they see every node (chain) and every model call, specialists' included.
        config_file: the config file this agent's settings came from: protected like the home (no tool may
            touch it; ``./kasloop.toml`` and ``$KASLOOP_CONFIG`` always are).
    """

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        home: str | Path | None = None,
        db: str | Path | None = None,
        tools: Iterable[Tool] = (),
        progress: ProgressCallback | None = None,
        callbacks: list[BaseCallbackHandler] | None = None,
        config_file: str | Path | None = None,
    ) -> None:
        self.config = config or AgentConfig()
        # Every store and log of this process redacts this agent's secrets, also before a graph is built
        # (the daemon's inbox poll, a receiver app).
        remember_secrets(Redactor.for_config(self.config))
        self.home = resolve_home(Path(home) if home is not None else None)
        self.db_path: str | Path = (
            self.home / "kasloop.db" if db is None else str(db) if is_postgres_url(db) else sqlite_path(db)
        )
        """A SQLite file, or a ``postgresql://`` URL (LangGraph's Postgres saver and store, kasloop's tables)."""
        self.extra_tools = tuple(tools)
        self.progress = progress
        self.callbacks = list(callbacks or [])
        """LangChain callback handlers (tracers) every run passes to LangGraph: they see each node, model call and tool."""
        self.stop_requested = False
        """Set (e.g. by a signal handler) to stop every run after its current node; resume continues it."""
        self._resources: weakref.WeakKeyDictionary[Database, ToolResources] = weakref.WeakKeyDictionary()
        self.protected = protected_paths_for(
            home=self.home, db_path=self.db_path, config_file=Path(config_file) if config_file is not None else None,
            tool_settings=self.config.tool_settings, extra=self.config.protected_paths,
        )
        """kasloop's own files (home, database, config in use, setting and secret files): no tool touches them."""
        select_tools(self.config.tools, self.extra_tools)  # unknown tools and bad settings fail now, before any write
        team_tools(self.config, self.extra_tools)
        check_tool_settings(self.config.tool_settings, self.config.workspace)
        check_prices(self.config, resolve_model_specs(self.config))

    # -- plumbing ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Database]:
        """Open the database and the tools' shared resources (closed together, browser included)."""
        async with open_database(self.db_path) as db:
            resources = ToolResources(home=self.home / "tools", database=db, protected=self.protected)
            # A shell_run sandbox whose kasloop was killed died with it (--die-with-parent); any that a
            # record shows still running is ended here, before this agent runs anything.
            reap_orphans(resources.home / SANDBOX_RECORDS)
            self._resources[db] = resources
            try:
                yield db
            finally:
                del self._resources[db]
                await resources.aclose()

    def _thread_config(self, policy: dict[str, Any]) -> AgentConfig:
        try:
            return self.config.with_thread_policy(policy)
        except ValidationError as exc:
            raise ConfigError(f"The stored policy of this thread is invalid: {exc.errors()[0]['msg']}.") from None

    def _graph(self, db: Database, config: AgentConfig) -> Any:
        return build_for(
            config, checkpointer=db.saver, tools=self.extra_tools, ledger=Ledger(db), events=EventLog(db),
            inbox=Inbox(db), resources=self._resources.get(db), spend=SpendLog(db),
        )

    @asynccontextmanager
    async def _thread_lock(self, db: Database, thread_id: str) -> AsyncIterator[None]:
        """One driver per thread: a ``kasloop run`` and the daemon never drive it together.

        SQLite: an exclusive ``flock`` on a file per thread next to the database; the kernel drops it
        when the process dies. PostgreSQL: a session advisory lock, so it holds across machines; the
        server drops it when the connection goes.
        """
        busy = ThreadBusy(
            f"Thread `{thread_id}` is being driven by another process (a run, resume or the daemon); "
            "wait for it, or see `kasloop status`."
        )
        if is_postgres_url(self.db_path):
            name = f"thread:{thread_id}"
            if not await db.try_advisory_lock(name):  # type: ignore[attr-defined]
                raise busy
            try:
                yield
            finally:
                await db.advisory_unlock(name)  # type: ignore[attr-defined]
            return
        name = hashlib.sha256(thread_id.encode()).hexdigest()[:24]
        handle = try_lock(self.db_path.with_name(self.db_path.name + ".locks") / f"{name}.lock")  # type: ignore[union-attr]
        if handle is None:
            raise busy
        try:
            yield
        finally:
            handle.close()

    async def _drive(self, db: Database, thread_id: str, config: AgentConfig, payload: Any) -> RunResult:
        async with self._thread_lock(db, thread_id):
            return await self._drive_locked(db, thread_id, config, payload)

    async def _drive_locked(self, db: Database, thread_id: str, config: AgentConfig, payload: Any) -> RunResult:
        graph = self._graph(db, config)
        ctx = context_for(config, thread_id, tool_names_for(config, self.extra_tools))
        standing = await RuleStore(db).policy_rules()
        if standing:  # rules people added since (`--always`, `kasloop rules add`) join the thread's own
            ctx = dataclasses.replace(ctx, rules=(*ctx.rules, *standing))
        run_config: dict[str, Any] = {"configurable": {"thread_id": thread_id}, "recursion_limit": RECURSION_LIMIT}
        if self.callbacks:
            run_config["callbacks"] = self.callbacks
        # "tasks" adds LangGraph's task-start events, each yielded before its node runs: only asked for
        # when the progress callback wants to hear which node is starting.
        started = getattr(self.progress, "node_started", None)
        modes = ["updates", "tasks"] if started is not None else ["updates"]
        nodes = 0
        async for mode, chunk in graph.astream(payload, run_config, context=ctx, durability=config.durability, stream_mode=modes):
            if mode == "tasks":
                if started is not None and "result" not in chunk and not chunk["name"].startswith("__"):
                    started(chunk["name"])  # a start event (a result event has "result"; the update follows)
                continue
            nodes += 1
            if nodes % PRUNE_EVERY == 0:
                await prune_thread(db, thread_id, config.keep_checkpoints)
                await prune_events(db, thread_id, keep_days=config.events_keep_days, keep_last=config.events_keep_last)
            if self.progress is not None:
                for node, update in chunk.items():
                    if not node.startswith("__"):  # `__interrupt__`: a node paused (human_approval), it did not finish
                        self.progress(node, update if isinstance(update, dict) else {})
            if self.stop_requested:
                # Between nodes: the finished node's writes are saved, the next one never starts;
                # `resume` continues from exactly here.
                break
        await prune_thread(db, thread_id, config.keep_checkpoints)
        await prune_events(db, thread_id, keep_days=config.events_keep_days, keep_last=config.events_keep_last)
        return await self._settle(db, graph, thread_id, run_config)

    async def _settle(self, db: Database, graph: Any, thread_id: str, run_config: dict[str, Any]) -> RunResult:
        """Read where the thread stopped; persist pending approvals; return the result."""
        snapshot = await graph.aget_state(run_config)
        values = snapshot.values or {}
        approvals = ApprovalStore(db)
        step = values.get("usage", empty_usage())["steps"]
        batch_id: str | None = None
        for intr in snapshot.interrupts:
            batch_id = intr.id
            for request in intr.value.get("requests", []):
                await record_request(db, {**_at_top(request, thread_id), "batch_id": intr.id}, step)
        breach = values.get("budget_breach") if values.get("status") == "paused_budget" and not snapshot.interrupts else None
        if breach:
            batch_id = await self._ask_for_budget(db, thread_id, breach, step)
        await approvals.mark_stale(thread_id, batch_id)
        records: list[dict[str, Any]] = []
        if snapshot.interrupts:
            status = "waiting_approval"
            records = [approval_json(r) for r in await approvals.pending(thread_id)]
        else:
            status = values.get("status", "running")
            if status in ("running", "waiting_approval") and _finished(snapshot):
                status = "done"
            if breach:
                records = [approval_json(r) for r in await approvals.pending(thread_id)]
        if records:
            await runner.announce_for(self, db, thread_id, records)
        elif status in ("escalated", "paused_budget"):  # nobody is asked (level 4): tell them
            await runner.notify_for(self, db, thread_id, f"{status}:{step}:{values.get('model_turns', 0)}", f"Thread {thread_id} {status.replace('_', ' ')}", values.get("output", ""))
        await ThreadStore(db).set_status(thread_id, status)
        return RunResult(
            thread=thread_id, status=status, output=values.get("output", ""),
            approvals=records, usage=values.get("usage", empty_usage()),
        )

    async def _ask_for_budget(self, db: Database, thread_id: str, breach: dict[str, Any], step: int) -> str | None:
        """At levels 2 and 3 a budget pause is also a request to a human to raise that limit. Returns its batch."""
        record = await ThreadStore(db).get(thread_id)
        if record is None or record["policy"].get("autonomy", 3) >= 4:
            return None
        request = budget_request(thread_id, breach, self.config.approval_ttl)
        await record_request(db, request, step)
        return str(request["batch_id"])

    async def _decide_budget(self, db: Database, checked: Checked, resume: bool) -> RunResult:
        """Record a checked budget decision: approve (raise the limit in the thread's stored policy, then continue) or reject (stay paused)."""
        thread_id = checked.record["thread"]
        await record_decision(db, checked)
        if checked.granted is None:  # rejected
            return await self._settle(db, self._graph(db, await self._stored_config(db, thread_id)), thread_id, {"configurable": {"thread_id": thread_id}})
        await self._set_budgets(db, thread_id, {checked.record["args"]["limit"]: checked.granted}, by=checked.by)
        if not resume:
            return await self._settle(db, self._graph(db, await self._stored_config(db, thread_id)), thread_id, {"configurable": {"thread_id": thread_id}})
        return await self._continue_paused(db, thread_id)

    async def _stored_config(self, db: Database, thread_id: str) -> AgentConfig:
        record = await ThreadStore(db).get(thread_id)
        if record is None:
            raise ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")
        return self._thread_config(record["policy"])

    async def _set_budgets(self, db: Database, thread_id: str, limits: dict[str, Any], *, by: str) -> dict[str, Any]:
        threads = ThreadStore(db)
        record = await threads.get(thread_id)
        if record is None:
            raise ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")
        policy = with_budgets(record["policy"], limits)
        await threads.set_policy(thread_id, policy)
        await EventLog(db).append(thread_id, 0, "budget_changed", by=by, **{k: policy["budgets"][k] for k in limits})
        return policy["budgets"]  # type: ignore[no-any-return]

    async def _continue_paused(self, db: Database, thread_id: str) -> RunResult:
        """Continue a thread a budget paused, exactly where it stopped (the calls not yet run first)."""
        config = await self._stored_config(db, thread_id)
        snapshot = await self._graph(db, config).aget_state({"configurable": {"thread_id": thread_id}})
        values = snapshot.values or {}
        goto = "act" if values.get("pending") and all(c.get("gate") == "allow" for c in values["pending"]) else "perceive"
        return await self._drive(db, thread_id, config, Command(update={"status": "running", "budget_breach": None}, goto=goto))

    # -- public API -------------------------------------------------------------------------

    async def run(self, goal: str, *, thread_id: str | None = None) -> RunResult:
        """Start (or continue) a thread with a goal and drive it until done, paused or waiting.

        Raises:
            UsageError: the thread is waiting for an approval.
            ConfigError: the model spec or tools are invalid (nothing is written then).
        """
        check_text(goal, "The goal")
        if not goal.strip():
            raise UsageError("The goal is empty; say what the agent should achieve.")
        goal = _secrets_of(self.config).text(goal)  # before anything stores it: rows, events, checkpoints, logs
        config = _absolute_policy(self.config, Path.cwd())
        named = thread_id is not None
        if not named:
            build_for(config, tools=self.extra_tools)  # a new thread: validate model specs and tools before any write
        async with self._open() as db:
            thread_id = thread_id or "t-" + uuid.uuid4().hex[:10]
            # Locked before the first write: a thread another process drives gets no goal row from this one.
            async with self._thread_lock(db, thread_id):
                return await self._start_goal(db, thread_id, goal, config, named)

    async def _start_goal(self, db: Database, thread_id: str, goal: str, config: AgentConfig, named: bool) -> RunResult:
        """Record ``goal`` on the thread (created if new) and drive it; the caller holds the thread lock."""
        threads = ThreadStore(db)
        existing = await threads.get(thread_id)
        goals: list[dict[str, Any]] = []
        if existing is None:
            if named:  # only now known to be new: an existing thread keeps its own stored policy instead
                build_for(config, tools=self.extra_tools)
            await threads.create(thread_id, goal, config.thread_policy())
        else:
            if await ApprovalStore(db).pending(thread_id):
                raise UsageError(
                    f"Thread `{thread_id}` is waiting for approval; decide with `kasloop approvals` / `kasloop approve ID` first."
                )
            config = self._thread_config(existing["policy"])
            goal = _secrets_of(config).text(goal)  # the thread's own secrets too (its stored secret_env)
            state = await self._graph(db, config).aget_state({"configurable": {"thread_id": thread_id}})
            goals = list((state.values or {}).get("goals", []))
        await EventLog(db).append(thread_id, 0, "goal", text=goal)
        goals.append({"id": f"g{len(goals) + 1}", "text": goal, "status": "open"})
        payload = {"messages": [HumanMessage(goal)], "goals": goals, **new_task(goal)}
        if config.run_collaboration is not None:
            payload["task"] = goal  # the collaboration's problem (its state has no goals list)
        return await self._drive_locked(db, thread_id, config, payload)

    async def resume(self, thread_id: str) -> RunResult:
        """Continue a thread where it stopped (after a crash, or once its approvals are decided)."""
        async with self._open() as db:
            record = await ThreadStore(db).get(thread_id)
            if record is None:
                raise ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")
            config = self._thread_config(record["policy"])
            graph = self._graph(db, config)
            run_config = {"configurable": {"thread_id": thread_id}}
            snapshot = await graph.aget_state(run_config)
            if snapshot.interrupts:  # requests that expired unanswered are rejected first (unless the policy keeps them)
                await reject_expired(db, config, thread_id, (snapshot.values or {}).get("usage", empty_usage())["steps"])
                batch = await ApprovalStore(db).batch(snapshot.interrupts[0].id)
                if not batch or any(r["status"] == "pending" for r in batch):
                    return await self._settle(db, graph, thread_id, run_config)
                return await self._drive(db, thread_id, config, Command(resume=_resume_value(batch)))
            if not snapshot.values:
                raise UsageError(
                    f"Thread `{thread_id}` has no checkpoint (its first run died before the first one was written); "
                    f"start it again with `kasloop run GOAL --thread {thread_id}`."
                )
            if _finished(snapshot) and snapshot.values.get("status") == "paused_budget":
                # The nodes check the budgets again: a limit that was raised lets the thread go on.
                return await self._continue_paused(db, thread_id)
            if _finished(snapshot):
                seen = snapshot.values.get("inbox_seen", 0)
                if await Inbox(db).newer(thread_id, seen) and snapshot.values.get("status") not in ("paused_budget",):
                    # Finished, but instructions arrived since (`kasloop tell`): a new cycle reads them.
                    return await self._drive(db, thread_id, config, new_task())
                return await self._settle(db, graph, thread_id, run_config)
            return await self._drive(db, thread_id, config, None)

    async def tell(self, thread_id: str, text: str, *, source: str = "python") -> int:
        """Queue an instruction for a thread; its next cycle reads it (in order, exactly once).

        A thread that is running or waiting picks it up at its next perceive; a
        finished thread continues with it on ``resume`` (or the daemon's next cycle).
        Returns the message id.

        Raises:
            ThreadNotFound: no such thread.
            UsageError: the text is empty.
        """
        check_text(text, "The message")
        if not text.strip():
            raise UsageError("The message is empty; say what the agent should do.")
        async with self._open() as db:
            record = await ThreadStore(db).get(thread_id)
            if record is None:
                raise ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")
            try:
                configs = (self.config, self._thread_config(record["policy"]))
            except ConfigError:  # resume reports a broken stored policy; the message is still kept, redacted
                configs = (self.config,)
            # Redacted before the inbox row is written (the inbox redacts again with every secret it knows).
            message_id = await Inbox(db).put(thread_id, source, _secrets_of(*configs).text(text))
            await EventLog(db).append(thread_id, 0, "told", message_id=message_id, source=source)
            return message_id

    async def approvals(self, thread_id: str | None = None) -> list[dict[str, Any]]:
        """Pending approval requests, oldest first, across threads (or of one thread)."""
        async with self._open() as db:
            return [approval_json(r) for r in await ApprovalStore(db).pending(thread_id)]

    async def decide(
        self,
        approval_id: str,
        decision: Decision | TypedDecision,
        *,
        by: str | None = None,
        channel: str = "python",
        resume: bool = True,
    ) -> RunResult:
        """Record one decision; once every request of that pause is decided, continue the thread.

        ``decision`` is typed (``kasloop.approvals.Approve / Edit / Reject / Respond``) or the same as a
        mapping (``{"decision": "approve"}``). Every way a human decides ends here, in the one check of
        :func:`kasloop.approvals.check_decision`. ``Approve/Edit(always=True)`` and ``Reject(never=True)``
        also add a standing allow / deny rule for the tool (see :meth:`add_rule`) before the thread goes on.

        Raises:
            ApprovalError: unknown id, or invalid edited args; its subclasses ``ApprovalExpired``,
                ``ApprovalStale`` and ``ApprovalAlreadyDecided`` say why a request cannot be decided.
                Nothing is written in that case (an expired one is logged as ``approval_refused``).
        """
        async with self._open() as db:

            async def pause(config: AgentConfig, thread_id: str) -> tuple[set[str], int]:
                snapshot = await self._graph(db, config).aget_state({"configurable": {"thread_id": thread_id}})
                return {i.id for i in snapshot.interrupts}, (snapshot.values or {}).get("usage", empty_usage())["steps"]

            def tool_for(config: AgentConfig, name: str) -> Tool | None:
                return {**team_tools(config, self.extra_tools), **select_tools(config.tools, self.extra_tools)}.get(name)

            checked = await check_decision(
                db, approval_id, decision, by=by or getpass.getuser(), channel=channel,
                thread_config=self._thread_config, pause=pause, tool_for=tool_for,
            )
            record = checked.record
            if record["kind"] == "budget":
                return await self._decide_budget(db, checked, resume)
            await record_decision(db, checked)
            if checked.rule is not None:  # read by the drive below: the thread's next calls already follow it
                await self._add_rule(db, PolicyRule(tool=record["tool"], action=checked.rule), by=checked.by)
            batch = await ApprovalStore(db).batch(record["batch_id"])
            if not resume or any(r["status"] == "pending" for r in batch):
                return await self._settle(db, self._graph(db, checked.config), record["thread"], {"configurable": {"thread_id": record["thread"]}})
            return await self._drive(db, record["thread"], checked.config, Command(resume=_resume_value(batch)))

    async def approve(
        self, approval_id: str, *, edit: dict[str, Any] | None = None, by: str | None = None, channel: str = "python", resume: bool = True,
        always: bool = False,
    ) -> RunResult:
        """Approve a pending call (with ``edit``: run it with these arguments instead).

        ``always=True`` also adds a standing ``allow`` rule for the tool (see :meth:`add_rule`), so it is not asked again.
        """
        decision = parse_decision({"decision": "edit", "args": edit, "always": always}) if edit is not None else Approve(always=always)
        return await self.decide(approval_id, decision, by=by, channel=channel, resume=resume)

    async def reject(
        self, approval_id: str, reason: str = "", *, by: str | None = None, channel: str = "python", resume: bool = True, never: bool = False,
    ) -> RunResult:
        """Refuse a pending call; the model is told ``reason`` and plans again. ``never=True`` adds a standing ``deny`` rule."""
        return await self.decide(approval_id, Reject(reason=reason, never=never), by=by, channel=channel, resume=resume)

    async def add_rule(self, rule: PolicyRule, *, by: str | None = None) -> int:
        """Add a standing rule for every thread of this database (from their next drive); returns its id."""
        async with self._open() as db:
            return await self._add_rule(db, rule, by=by or getpass.getuser())

    async def _add_rule(self, db: Database, rule: PolicyRule, *, by: str) -> int:
        rule_id = await RuleStore(db).add(rule, by=by)
        await EventLog(db).append("", 0, "rule_added", rule_id=rule_id, tool=rule.tool, action=rule.action, args=rule.args, by=by)
        return rule_id

    async def rules(self) -> list[dict[str, Any]]:
        """The standing rules people added (configured rules live in kasloop.toml)."""
        async with self._open() as db:
            return await RuleStore(db).all()

    async def remove_rule(self, rule_id: int, *, by: str | None = None) -> None:
        """Remove a standing rule. Raises ``UsageError`` if there is none with that id."""
        async with self._open() as db:
            if not await RuleStore(db).remove(rule_id):
                raise UsageError(f"No rule {rule_id}; list them with `kasloop rules list`.")
            await EventLog(db).append("", 0, "rule_removed", rule_id=rule_id, by=by or getpass.getuser())

    async def respond(self, approval_id: str, text: str, *, by: str | None = None, channel: str = "python", resume: bool = True) -> RunResult:
        """Answer instead of running the call: ``text`` is given to the model as the result."""
        return await self.decide(approval_id, Respond(text=text), by=by, channel=channel, resume=resume)

    async def status(self, thread_id: str | None = None) -> list[dict[str, Any]]:
        """Threads with their status, goal, usage and pending approvals."""
        async with self._open() as db:
            threads = ThreadStore(db)
            records = [await threads.get(thread_id)] if thread_id else await threads.all()
            if thread_id and records[0] is None:
                raise ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")
            out = []
            for rec in records:
                assert rec is not None
                pending = await ApprovalStore(db).pending(rec["thread"])
                state = await db.saver.aget_tuple({"configurable": {"thread_id": rec["thread"], "checkpoint_ns": ""}})
                values = state.checkpoint["channel_values"] if state is not None else {}
                out.append({
                    "thread": rec["thread"], "status": rec["status"], "goal": rec["goal"],
                    "autonomy": rec["policy"].get("autonomy"), "model": rec["policy"].get("model"),
                    "updated_at": rec["updated_at"], "usage": values.get("usage", empty_usage()), "output": values.get("output", ""),
                    "budgets": rec["policy"].get("budgets", {}),
                    "approvals": [approval_json(p) for p in pending], "unread": await Inbox(db).unread(rec["thread"]),
                })
            return out

    async def delete_thread(self, thread_id: str) -> dict[str, Any]:
        """Delete a thread for good: stop the background processes it (or its specialists) started, then
        remove its checkpoints and every row kasloop keeps for it (approvals and their announcements,
        events, ledger, inbox, process records). Day spend stays counted: it was spent.

        Raises:
            ThreadNotFound: no such thread.
            ThreadBusy: a run, resume or the daemon drives it right now.
        """
        async with self._open() as db:
            async with self._thread_lock(db, thread_id):
                if await ThreadStore(db).get(thread_id) is None:
                    raise ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")
                stopped = await stop_thread_processes(db, thread_id)
                prefix = thread_id + "/"
                owned = "thread_id = ? OR substr(thread_id, 1, ?) = ?"
                params = (thread_id, len(prefix), prefix)
                members = {thread_id} | {row[0] for row in await db.fetchall(f"SELECT DISTINCT thread_id FROM kasloop_events WHERE {owned}", params)}
                for member in sorted(members):
                    await db.saver.adelete_thread(member)
                await db.execute(
                    f"DELETE FROM kasloop_announcements WHERE approval_id IN (SELECT approval_id FROM kasloop_approvals WHERE {owned})", params
                )
                rows = 0
                for table in ("kasloop_approvals", "kasloop_events", "kasloop_ledger", "kasloop_inbox", "kasloop_processes", "kasloop_threads"):
                    rows += await db.execute(f"DELETE FROM {table} WHERE {owned}", params)
        return {"thread": thread_id, "processes_stopped": stopped, "checkpoint_threads": len(members), "rows": rows}

    def delete_thread_sync(self, thread_id: str) -> dict[str, Any]:
        return _run_sync(self.delete_thread(thread_id), "delete_thread")

    async def poll_approvals(self) -> int:
        """Take the decisions that arrived on this agent's approval channels (Telegram buttons, email replies).

        Pending requests not yet announced (a channel was down) are announced first. Decided tool
        calls are recorded without resuming (``resume`` or the daemon continues the thread); an
        approved budget raise continues its thread here. Returns how many decisions were recorded.
        Signed webhook callbacks arrive on ``kasloop.channels.webhook.approvals_app`` instead.
        """
        return await runner.poll_approvals(self)

    async def poll_inbox(self) -> int:
        """Feed new mail (``email.inbox_thread``) and Telegram messages (``telegram.chat_threads`` /
        ``default_thread``, unless a Telegram approval channel polls them) into the inbox; returns how many."""
        return await runner.poll_inbox(self)

    async def set_budget(self, thread_id: str, *, by: str | None = None, **limits: int | float | None) -> dict[str, Any]:
        """Change a thread's budgets (e.g. ``max_usd=2.0``); ``resume`` then continues a paused thread.

        Only people call this (CLI ``kasloop budget``): the limits live in the thread's stored policy,
        which no model output or tool result can reach. Pending budget requests of the thread become stale.

        Raises:
            ThreadNotFound: no such thread.
            UsageError: an unknown budget or an invalid value.
        """
        unknown = sorted(set(limits) - set(LIMITS))
        if unknown:
            raise UsageError(f"`{unknown[0]}` is not a budget; budgets: {', '.join(LIMITS)}.")
        async with self._open() as db:
            budgets = await self._set_budgets(db, thread_id, limits, by=by or getpass.getuser())
            await ApprovalStore(db).mark_stale_kind(thread_id, "budget")
            return budgets

    async def history(self, thread_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The thread's event log, oldest first."""
        async with self._open() as db:
            if await ThreadStore(db).get(thread_id) is None:
                raise ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")
            return await EventLog(db).history(thread_id, limit=limit)

    # -- sync twins -------------------------------------------------------------------------

    def tell_sync(self, thread_id: str, text: str, *, source: str = "python") -> int:
        return _run_sync(self.tell(thread_id, text, source=source), "tell")

    def run_sync(self, goal: str, *, thread_id: str | None = None) -> RunResult:
        """``run`` for code without an event loop (scripts, a notebook cell without ``await``)."""
        return _run_sync(self.run(goal, thread_id=thread_id), "run")

    def resume_sync(self, thread_id: str) -> RunResult:
        return _run_sync(self.resume(thread_id), "resume")

    def approve_sync(self, approval_id: str, **kwargs: Any) -> RunResult:
        return _run_sync(self.approve(approval_id, **kwargs), "approve")

    def reject_sync(self, approval_id: str, reason: str = "", **kwargs: Any) -> RunResult:
        return _run_sync(self.reject(approval_id, reason, **kwargs), "reject")

    def respond_sync(self, approval_id: str, text: str, **kwargs: Any) -> RunResult:
        return _run_sync(self.respond(approval_id, text, **kwargs), "respond")


def _secrets_of(*configs: AgentConfig) -> Redactor:
    """The secrets of ``configs`` and every other secret this process knows (``run`` and ``tell`` redact
    their text with it); remembered, so every table and log of this process redacts them too."""
    for config in configs:
        remember_secrets(Redactor.for_config(config))
    return known_secrets()


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


def _resume_value(batch: list[ApprovalRecord]) -> dict[str, Any]:
    return {r["approval_id"]: r["decision"] for r in batch}

