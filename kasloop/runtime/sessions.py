"""What every thread session of one kasloop home shares, and the one way to open them.

``Agent`` (the facade users hold), the daemon, the approval channels and the
webhook receiver all work through :class:`Sessions`: open the database with the
tools' shared resources, then a :class:`~kasloop.runtime.session.ThreadSession`
per thread, under the thread's stored policy. Each thread's policy is stored when
it starts; every later command rebuilds the thread from that stored policy, so a
different process, flag or model output cannot widen what the thread may do.
"""

from __future__ import annotations

import getpass
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel

from kasloop.guardrails.approvals import TypedDecision, approval_json, check_decision
from kasloop.guardrails.budget import LIMITS
from kasloop.checkpoints import ApprovalStore, Database, Decision, EventLog, Inbox, ThreadStore, open_database
from kasloop.checkpoints.database import display_db
from kasloop.checkpoints.rules import RuleStore
from kasloop.config.schema import AgentConfig, PolicyRule
from kasloop.errors import ConfigError, ThreadNotFound, UsageError, check_text
from kasloop.graphs.team import team_tools
from kasloop.models.structured import OutputSpec, output_class, output_schema
from kasloop.runtime.events import Emit
from kasloop.runtime.result import RunResult
from kasloop.runtime.session import ProgressCallback, ThreadSession, add_standing_rule
from kasloop.runtime.thread_policy import absolute_policy, check_models, thread_config
from kasloop.safety.secrets import Redactor, known_secrets, remember_secrets
from kasloop.state import empty_usage
from kasloop.tools.base import Tool, ToolResources
from kasloop.tools.registry import select_tools
from kasloop.tools.sandbox import reap_orphans
from kasloop.tools.shell_runner import SANDBOX_RECORDS

__all__ = ["ProgressCallback", "Sessions"]

class Sessions:
    """The threads of one kasloop home and database.

    Args:
        config: this process's settings, and the policy of threads it starts.
        home: the kasloop home folder (tools' state lives in ``home/tools``).
        db_path: a SQLite file, or a ``postgresql://`` URL.
        extra_tools: tools (``kasloop.tools.Tool``) configs may select beside the built-in ones.
        progress: called after (and, with ``node_started``, before) every node of every drive.
        callbacks: LangChain callback handlers every drive passes to LangGraph.
        protected: kasloop's own files, which no tool may touch.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        home: Path,
        db_path: str | Path,
        extra_tools: Iterable[Tool] = (),
        progress: ProgressCallback | None = None,
        callbacks: list[BaseCallbackHandler] | None = None,
        protected: Any = None,
        model: BaseChatModel | None = None,
    ) -> None:
        self.config = config
        self.model = model
        """The chat model object threads whose policy says ``object:CLASS`` run on (``Agent(model=...)``)."""
        self.home = home
        self.db_path = db_path
        self.extra_tools = tuple(extra_tools)
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.protected = protected
        self.stop_requested = False
        """Set (e.g. by a signal handler) to stop every drive after its current node; resume continues it."""
        self._resources: weakref.WeakKeyDictionary[Database, ToolResources] = weakref.WeakKeyDictionary()

    # -- opening ----------------------------------------------------------------------------

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Database]:
        """Open the database and the tools' shared resources (closed together, browser included)."""
        async with open_database(self.db_path) as db:
            resources = ToolResources(home=self.home / "tools", database=db, protected=self.protected)
            # A shell_run sandbox whose kasloop was killed died with it (--die-with-parent); any that a
            # record shows still running is ended here, before anything runs.
            reap_orphans(resources.home / SANDBOX_RECORDS)
            self._resources[db] = resources
            try:
                yield db
            finally:
                del self._resources[db]
                await resources.aclose()

    def resources(self, db: Database) -> ToolResources | None:
        """The tools' shared resources of ``db`` while :meth:`open` holds it."""
        return self._resources.get(db)

    def thread_config(self, policy: dict[str, Any]) -> AgentConfig:
        """This process's settings under a thread's stored policy (``ConfigError`` if the stored policy is broken)."""
        return thread_config(self.config, policy)

    def not_found(self, thread_id: str) -> ThreadNotFound:
        return ThreadNotFound(f"No thread `{thread_id}` in `{display_db(self.db_path)}`; list threads with `kasloop status`.")

    def session(self, db: Database, thread_id: str, config: AgentConfig) -> ThreadSession:
        return ThreadSession(self, db, thread_id, config)

    async def stored(self, db: Database, thread_id: str) -> ThreadSession:
        """A session for an existing thread, under its stored policy. Raises ``ThreadNotFound``."""
        record = await ThreadStore(db).get(thread_id)
        if record is None:
            raise self.not_found(thread_id)
        return self.session(db, thread_id, self.thread_config(record["policy"]))

    # -- commands ---------------------------------------------------------------------------

    async def run(
        self, goal: str, thread_id: str | None = None, *, emit: Emit | None = None, text: bool = True, output: OutputSpec | None = None,
    ) -> RunResult:
        """Start a thread (``thread_id`` None or unknown) or give an existing one a new goal, and drive it.

        ``output``: the pydantic class or JSON schema the final answer must match (stored with the task)."""
        check_text(goal, "The goal")
        if not goal.strip():
            raise UsageError("The goal is empty; say what the agent should achieve.")
        schema = output_schema(output) if output is not None else None  # a bad schema is refused before anything is written
        goal = secrets_of(self.config).text(goal)  # before anything stores it: rows, events, checkpoints, logs
        config = absolute_policy(self.config, Path.cwd())
        if thread_id is None:  # surely a new thread: a bad model spec is refused before the database is opened
            check_models(config)
        async with self.open() as db:
            session = self.session(db, thread_id or "t-" + uuid.uuid4().hex[:10], config)
            # Locked before the first write: a thread another process drives gets no goal row from this one.
            async with session.locked():
                existing = await ThreadStore(db).get(session.thread_id)
                if existing is None:
                    await session.prepare()  # compiled now: bad model specs, tools or MCP servers fail before the thread's first row
                else:  # an existing thread keeps its own stored policy (and its own secrets are redacted too)
                    session = self.session(db, session.thread_id, self.thread_config(existing["policy"]))
                    goal = secrets_of(session.config).text(goal)
                if schema is not None and session.config.run_collaboration is not None:
                    raise UsageError(
                        "A collaboration's answer is the proposal its peers agree on, not a structured result; "
                        "run without output= / --output-schema, or run the goal as one agent or a team."
                    )
                session.emit, session.stream_text, session.output_model = emit, text, output_class(output)
                return await session.start_goal(goal, new=existing is None, output_schema=schema)

    async def decide(
        self, approval_id: str, decision: Decision | TypedDecision, *, by: str | None, channel: str, resume: bool,
    ) -> RunResult:
        """Check one decision (:func:`kasloop.guardrails.approvals.check_decision`, the one check every channel goes
        through), record it, and continue the thread once its pause is fully decided."""
        async with self.open() as db:
            sessions: list[ThreadSession] = []

            async def pause(config: AgentConfig, thread_id: str) -> tuple[set[str], int]:
                sessions.append(self.session(db, thread_id, config))
                snapshot = await sessions[-1].snapshot()
                return {i.id for i in snapshot.interrupts}, (snapshot.values or {}).get("usage", empty_usage())["steps"]

            def tool_for(config: AgentConfig, name: str) -> Tool | None:
                tools = (*self.extra_tools, *(sessions[-1].mcp_tools if sessions else ()))
                return {**team_tools(config, tools), **select_tools(config.tools, tools, config.tool_traits)}.get(name)

            checked = await check_decision(
                db, approval_id, decision, by=by or getpass.getuser(), channel=channel,
                thread_config=self.thread_config, pause=pause, tool_for=tool_for,
            )
            # The session that read the pause goes on with its graph (compiled once per command).
            same = [s for s in sessions if s.config is checked.config and s.thread_id == checked.record["thread"]]
            session = same[0] if same else self.session(db, checked.record["thread"], checked.config)
            return await session.apply(checked, resume=resume)

    async def resume(self, thread_id: str, *, emit: Emit | None = None, text: bool = True, output: OutputSpec | None = None) -> RunResult:
        """Continue a thread; ``output``: the pydantic class its structured answer is returned as (``RunResult.value``)."""
        async with self.open() as db:
            session = await self.stored(db, thread_id)
            session.emit, session.stream_text, session.output_model = emit, text, output_class(output)
            return await session.resume()

    async def tell(self, thread_id: str, text: str, *, source: str) -> int:
        """Queue an instruction for a thread (redacted); its next cycle reads it. Returns the message id."""
        check_text(text, "The message")
        if not text.strip():
            raise UsageError("The message is empty; say what the agent should do.")
        async with self.open() as db:
            record = await ThreadStore(db).get(thread_id)
            if record is None:
                raise self.not_found(thread_id)
            try:
                configs = (self.config, self.thread_config(record["policy"]))
            except ConfigError:  # resume reports a broken stored policy; the message is still kept, redacted
                configs = (self.config,)
            # Redacted before the inbox row is written (the inbox redacts again with every secret it knows).
            message_id = await Inbox(db).put(thread_id, source, secrets_of(*configs).text(text))
            await EventLog(db).append(thread_id, 0, "told", message_id=message_id, source=source)
            return message_id

    async def set_budget(self, thread_id: str, limits: dict[str, Any], *, by: str | None) -> dict[str, Any]:
        unknown = sorted(set(limits) - set(LIMITS))
        if unknown:
            raise UsageError(f"`{unknown[0]}` is not a budget; budgets: {', '.join(LIMITS)}.")
        async with self.open() as db:
            return await (await self.stored(db, thread_id)).set_budgets(limits, by=by or getpass.getuser())

    async def delete_thread(self, thread_id: str) -> dict[str, Any]:
        async with self.open() as db:
            # No stored policy is needed to delete (a broken one must not keep a thread alive).
            session = self.session(db, thread_id, self.config)
            async with session.locked():
                if await ThreadStore(db).get(thread_id) is None:
                    raise self.not_found(thread_id)
                return await session.delete()

    # -- rules and reads --------------------------------------------------------------------

    async def add_rule(self, rule: PolicyRule, *, by: str | None) -> int:
        async with self.open() as db:
            return await add_standing_rule(db, rule, by=by or getpass.getuser())

    async def remove_rule(self, rule_id: int, *, by: str | None) -> None:
        async with self.open() as db:
            if not await RuleStore(db).remove(rule_id):
                raise UsageError(f"No rule {rule_id}; list them with `kasloop rules list`.")
            await EventLog(db).append("", 0, "rule_removed", rule_id=rule_id, by=by or getpass.getuser())

    async def status(self, thread_id: str | None = None) -> list[dict[str, Any]]:
        """Threads with their status, goal, usage and pending approvals (no graph is compiled to read them)."""
        async with self.open() as db:
            threads = ThreadStore(db)
            records = [await threads.get(thread_id)] if thread_id else await threads.all()
            if thread_id and records[0] is None:
                raise self.not_found(thread_id)
            out = []
            for rec in records:
                assert rec is not None
                pending = await ApprovalStore(db).pending(rec["thread"])
                values = await self.session(db, rec["thread"], self.config).values()
                out.append({
                    "thread": rec["thread"], "status": rec["status"], "goal": rec["goal"],
                    "autonomy": rec["policy"].get("autonomy"), "model": rec["policy"].get("model"),
                    "updated_at": rec["updated_at"], "usage": values.get("usage", empty_usage()), "output": values.get("output", ""),
                    "budgets": rec["policy"].get("budgets", {}),
                    "approvals": [approval_json(p) for p in pending], "unread": await Inbox(db).unread(rec["thread"]),
                })
            return out

    async def history(self, thread_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        async with self.open() as db:
            if await ThreadStore(db).get(thread_id) is None:
                raise self.not_found(thread_id)
            return await EventLog(db).history(thread_id, limit=limit)


def secrets_of(*configs: AgentConfig) -> Redactor:
    """The secrets of ``configs`` and every other secret this process knows (goals and told text are
    redacted with it); remembered, so every table and log of this process redacts them too."""
    for config in configs:
        remember_secrets(Redactor.for_config(config))
    return known_secrets()
