"""``Agent``: run goals as durable threads, pause for approvals, resume from any process.

A thin facade: each method opens the home's database through
:class:`~kasloop.runtime.sessions.Sessions` and delegates to a
:class:`~kasloop.runtime.session.ThreadSession` (the thread's stored policy,
lock, drive, settle and state), with a sync twin where scripts expect one.
Each thread's policy is stored when it starts; every later call (resume,
approve, reject) rebuilds the thread from that stored policy, so a different
process, flag or model output cannot widen what the thread may do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from kasloop.guardrails.approvals import Approve, Reject, Respond, TypedDecision, approval_json, parse_decision
from kasloop.guardrails.budget import check_prices
from kasloop.runtime import polling
from kasloop.checkpoints import ApprovalStore, Decision
from kasloop.checkpoints.database import is_postgres_url
from kasloop.checkpoints.rules import RuleStore
from kasloop.checkpoints.sqlite import sqlite_path
from kasloop.config.schema import AgentConfig, PolicyRule
from kasloop.errors import UsageError
from kasloop.graphs.team import team_tools
from kasloop.models.chat import chain_with, resolve_model_specs
from kasloop.safety.protected import protected_paths_for
from kasloop.runtime.events import StreamEvent
from kasloop.models.structured import OutputSpec
from kasloop.runtime.result import EXIT_CODES, Approval, RunResult
from kasloop.runtime.streaming import stream_run, stream_sync
from kasloop.runtime.sessions import ProgressCallback, Sessions
from kasloop.safety.secrets import Redactor, remember_secrets
from kasloop.config.loading import resolve_home
from kasloop.tools.base import Tool
from kasloop.tools.langchain_tools import as_tools
from kasloop.tools.mcp import plain_tool_names
from kasloop.tools.registry import check_tool_settings, select_tools

__all__ = ["EXIT_CODES", "Agent", "Approval", "ProgressCallback", "RunResult", "approval_json"]  # approval_json: kasloop.guardrails.approvals' own, kept importable here

T = TypeVar("T")


def _run_sync(coro: Awaitable[T], name: str) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    if hasattr(coro, "close"):
        coro.close()  # type: ignore[union-attr]
    raise UsageError(f"Agent.{name}_sync() was called inside a running event loop; use `await agent.{name}(...)`.")


class Agent:
    """Runs goals as durable threads in a kasloop home (``.kasloop/``).

    Example:
        ```python
        agent = Agent(AgentConfig(autonomy=3, model="scripted:plan.jsonl", workspace="ws"))
        result = await agent.run("write hello.txt")
        if result.status == "waiting_approval":
            result = await agent.approve(result.approvals[0].approval_id)
        ```

    Args:
        config: policy and settings for new threads (existing threads keep their own policy).
        home: kasloop home folder (default: ``KASLOOP_HOME`` or ``./.kasloop``).
        db: database file, ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB`` (default: ``<home>/kasloop.db``).
        tools: extra tools that configs may select by name (or family): ``kasloop.tools.Tool`` objects or any
            LangChain tool (``BaseTool``, ``@tool`` functions), gated by what :func:`kasloop.tool` declared
            (nothing declared: risk ``high``, not idempotent, output untrusted).
        progress: called with (node name, update) after every node, e.g. for a live display; if it also has a
            ``node_started(node)`` method, that is called as each node starts (see ``ProgressCallback``).
        callbacks: LangChain callback handlers for every run (a tracer such as LangSmith's, your own logging):
            they see every node (chain) and every model call, specialists' included.
        config_file: the config file this agent's settings came from: protected like the home (no tool may
            touch it; ``./kasloop.toml`` and ``$KASLOOP_CONFIG`` always are).
        model: any LangChain chat model object (``ChatAnthropic(...)``, ``init_chat_model(...)``, a fake for
            tests) to run new threads on, in the place of ``config.model``'s first spec (its other specs stay
            fallbacks). A thread
            stores it as ``object:CLASS``: the CLI reads, lists and records decisions for such a thread,
            and a process that has the object (this ``Agent``) continues it.
    """

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        home: str | Path | None = None,
        db: str | Path | None = None,
        tools: Iterable[Tool | BaseTool] = (),
        progress: ProgressCallback | None = None,
        callbacks: list[BaseCallbackHandler] | None = None,
        config_file: str | Path | None = None,
        model: BaseChatModel | None = None,
    ) -> None:
        config = config or AgentConfig()
        if model is not None:  # stored with each new thread as `object:CLASS` in the first model's place
            config = config.model_copy(update={"model": chain_with(model, config.model_specs)})
        # Every store and log of this process redacts this agent's secrets, also before a graph is built
        # (the daemon's inbox poll, a receiver app).
        remember_secrets(Redactor.for_config(config))
        home_path = resolve_home(Path(home) if home is not None else None)
        db_path: str | Path = home_path / "kasloop.db" if db is None else str(db) if is_postgres_url(db) else sqlite_path(db)
        protected = protected_paths_for(
            home=home_path, db_path=db_path, config_file=Path(config_file) if config_file is not None else None,
            tool_settings=config.tool_settings, extra=config.protected_paths,
        )
        extra_tools = as_tools(tools)
        select_tools(plain_tool_names(config, config.tools), extra_tools, config.tool_traits)  # unknown tools and bad settings fail now, before any write
        team_tools(config, extra_tools)
        check_tool_settings(config.tool_settings, config.workspace)
        check_prices(config, resolve_model_specs(config))
        self.sessions = Sessions(
            config, home=home_path, db_path=db_path, extra_tools=extra_tools, progress=progress, callbacks=callbacks, protected=protected,
            model=model,
        )
        """The threads of this home and database: what the daemon, the channels and the receivers work through."""

    # -- what the sessions share, readable here --------------------------------------------

    @property
    def config(self) -> AgentConfig:
        """Policy and settings for new threads (existing threads keep their own stored policy)."""
        return self.sessions.config

    @property
    def home(self) -> Path:
        return self.sessions.home

    @property
    def db_path(self) -> str | Path:
        """A SQLite file, or a ``postgresql://`` URL (LangGraph's Postgres saver and store, kasloop's tables)."""
        return self.sessions.db_path

    @property
    def extra_tools(self) -> tuple[Tool, ...]:
        return self.sessions.extra_tools

    @property
    def protected(self) -> Any:
        """kasloop's own files (home, database, config in use, setting and secret files): no tool touches them."""
        return self.sessions.protected

    @property
    def callbacks(self) -> list[BaseCallbackHandler]:
        """LangChain callback handlers (tracers) every run passes to LangGraph: they see each node, model call and tool."""
        return self.sessions.callbacks

    @property
    def progress(self) -> ProgressCallback | None:
        return self.sessions.progress

    @progress.setter
    def progress(self, value: ProgressCallback | None) -> None:
        self.sessions.progress = value

    @property
    def stop_requested(self) -> bool:
        """Set (e.g. by a signal handler) to stop every run after its current node; resume continues it."""
        return self.sessions.stop_requested

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self.sessions.stop_requested = value

    # -- threads ----------------------------------------------------------------------------

    async def run(self, goal: str, *, thread_id: str | None = None, output: OutputSpec | None = None) -> RunResult:
        """Start (or continue) a thread with a goal and drive it until done, paused or waiting.

        ``output``: a pydantic model class (or a JSON schema dict) the final answer must match. The model is
        told the schema; an answer that does not match goes back to it with what is wrong (the recovery
        ladder: after three in a row a fallback model, then a person, or at level 4 ``escalated``). Once
        done, ``result.value`` is the validated object (``result.data`` its JSON).

        Example:
            ```python
            class Forecast(BaseModel):
                city: str
                high_c: float

            result = await agent.run("tomorrow's forecast for Oslo", output=Forecast)
            if result.status == "done":
                print(result.value.high_c)
            ```

        Raises:
            UsageError: the thread is waiting for an approval.
            ConfigError: the model spec or tools are invalid (nothing is written then).
        """
        return await self.sessions.run(goal, thread_id, output=output)

    async def resume(self, thread_id: str, *, output: OutputSpec | None = None) -> RunResult:
        """Continue a thread where it stopped (after a crash, or once its approvals are decided).

        The task's output schema was stored with it; ``output`` (its pydantic class) gives ``result.value``."""
        return await self.sessions.resume(thread_id, output=output)

    def astream(
        self, goal: str, *, thread_id: str | None = None, text: bool = True, output: OutputSpec | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """``run``, streamed: typed events as they happen (nodes, model text, proposed calls with the gate's
        verdict, tool calls), then what stopped the run (``ApprovalNeeded``, ``BudgetPaused``) and ``Done``.

        Example:
            ```python
            async for event in agent.astream("write hello.txt", thread_id="t"):
                if event.kind == "text":
                    print(event.text, end="")
                elif event.kind == "approval_needed":
                    await agent.approve(event.approvals[0].approval_id, resume=False)
            ```
        """
        return stream_run(lambda emit: self.sessions.run(goal, thread_id, emit=emit, text=text, output=output))

    def astream_resume(self, thread_id: str, *, text: bool = True, output: OutputSpec | None = None) -> AsyncIterator[StreamEvent]:
        """``resume``, streamed (after an approval was decided with ``resume=False``, a crash, a ``tell``).
        ``text=False``: no model text events (the model is then not asked to stream its replies)."""
        return stream_run(lambda emit: self.sessions.resume(thread_id, emit=emit, text=text, output=output))

    async def tell(self, thread_id: str, text: str, *, source: str = "python") -> int:
        """Queue an instruction for a thread; its next cycle reads it (in order, exactly once).

        A thread that is running or waiting picks it up at its next perceive; a
        finished thread continues with it on ``resume`` (or the daemon's next cycle).
        Returns the message id.

        Raises:
            ThreadNotFound: no such thread.
            UsageError: the text is empty.
        """
        return await self.sessions.tell(thread_id, text, source=source)

    async def status(self, thread_id: str | None = None) -> list[dict[str, Any]]:
        """Threads with their status, goal, usage and pending approvals."""
        return await self.sessions.status(thread_id)

    async def history(self, thread_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The thread's event log, oldest first."""
        return await self.sessions.history(thread_id, limit=limit)

    async def set_budget(self, thread_id: str, *, by: str | None = None, **limits: int | float | None) -> dict[str, Any]:
        """Change a thread's budgets (e.g. ``max_usd=2.0``); ``resume`` then continues a paused thread.

        Only people call this (CLI ``kasloop budget``): the limits live in the thread's stored policy,
        which no model output or tool result can reach. Pending budget requests of the thread become stale.

        Raises:
            ThreadNotFound: no such thread.
            UsageError: an unknown budget or an invalid value.
        """
        return await self.sessions.set_budget(thread_id, limits, by=by)

    async def delete_thread(self, thread_id: str) -> dict[str, Any]:
        """Delete a thread for good: stop the background processes it (or its specialists) started, then
        remove its checkpoints and every row kasloop keeps for it (approvals and their announcements,
        events, ledger, inbox, process records). Day spend stays counted: it was spent.

        Raises:
            ThreadNotFound: no such thread.
            ThreadBusy: a run, resume or the daemon drives it right now.
        """
        return await self.sessions.delete_thread(thread_id)

    # -- approvals --------------------------------------------------------------------------

    async def approvals(self, thread_id: str | None = None) -> list[Approval]:
        """Pending approval requests, oldest first, across threads (or of one thread)."""
        async with self.sessions.open() as db:
            return [Approval.model_validate(dict(r)) for r in await ApprovalStore(db).pending(thread_id)]  # the record, read once as the typed shape

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

        ``decision`` is typed (``kasloop.guardrails.approvals.Approve / Edit / Reject / Respond``) or the same as a
        mapping (``{"decision": "approve"}``). Every way a human decides ends here, in the one check of
        :func:`kasloop.guardrails.approvals.check_decision`. ``Approve/Edit(always=True)`` and ``Reject(never=True)``
        also add a standing allow / deny rule for the tool (see :meth:`add_rule`) before the thread goes on.

        Raises:
            ApprovalError: unknown id, or invalid edited args; its subclasses ``ApprovalExpired``,
                ``ApprovalStale`` and ``ApprovalAlreadyDecided`` say why a request cannot be decided.
                Nothing is written in that case (an expired one is logged as ``approval_refused``).
        """
        return await self.sessions.decide(approval_id, decision, by=by, channel=channel, resume=resume)

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

    async def respond(self, approval_id: str, text: str, *, by: str | None = None, channel: str = "python", resume: bool = True) -> RunResult:
        """Answer instead of running the call: ``text`` is given to the model as the result."""
        return await self.decide(approval_id, Respond(text=text), by=by, channel=channel, resume=resume)

    async def poll_approvals(self) -> int:
        """Take the decisions that arrived on this agent's approval channels (Telegram buttons, email replies).

        Pending requests not yet announced (a channel was down) are announced first. Decided tool
        calls are recorded without resuming (``resume`` or the daemon continues the thread); an
        approved budget raise continues its thread here. Returns how many decisions were recorded.
        Signed webhook callbacks arrive on ``kasloop.channels.webhook.approvals_app`` instead.
        """
        return await polling.poll_approvals(self.sessions)

    async def poll_inbox(self) -> int:
        """Feed new mail (``email.inbox_thread``) and Telegram messages (``telegram.chat_threads`` /
        ``default_thread``, unless a Telegram approval channel polls them) into the inbox; returns how many."""
        return await polling.poll_inbox(self.sessions)

    # -- standing rules ---------------------------------------------------------------------

    async def add_rule(self, rule: PolicyRule, *, by: str | None = None) -> int:
        """Add a standing rule for every thread of this database (from their next drive); returns its id."""
        return await self.sessions.add_rule(rule, by=by)

    async def rules(self) -> list[dict[str, Any]]:
        """The standing rules people added (configured rules live in kasloop.toml)."""
        async with self.sessions.open() as db:
            return await RuleStore(db).all()

    async def remove_rule(self, rule_id: int, *, by: str | None = None) -> None:
        """Remove a standing rule. Raises ``UsageError`` if there is none with that id."""
        await self.sessions.remove_rule(rule_id, by=by)

    # -- sync twins -------------------------------------------------------------------------

    def run_sync(self, goal: str, *, thread_id: str | None = None, output: OutputSpec | None = None) -> RunResult:
        """``run`` for code without an event loop (scripts, a notebook cell without ``await``)."""
        return _run_sync(self.run(goal, thread_id=thread_id, output=output), "run")

    def resume_sync(self, thread_id: str, *, output: OutputSpec | None = None) -> RunResult:
        return _run_sync(self.resume(thread_id, output=output), "resume")

    def stream(self, goal: str, *, thread_id: str | None = None, output: OutputSpec | None = None) -> Iterator[StreamEvent]:
        """``astream`` for code without an event loop: the same events, as they happen."""
        return stream_sync(lambda: self.astream(goal, thread_id=thread_id, output=output))

    def stream_resume(self, thread_id: str, *, output: OutputSpec | None = None) -> Iterator[StreamEvent]:
        return stream_sync(lambda: self.astream_resume(thread_id, output=output))

    def tell_sync(self, thread_id: str, text: str, *, source: str = "python") -> int:
        return _run_sync(self.tell(thread_id, text, source=source), "tell")

    def approve_sync(self, approval_id: str, **kwargs: Any) -> RunResult:
        return _run_sync(self.approve(approval_id, **kwargs), "approve")

    def reject_sync(self, approval_id: str, reason: str = "", **kwargs: Any) -> RunResult:
        return _run_sync(self.reject(approval_id, reason, **kwargs), "reject")

    def respond_sync(self, approval_id: str, text: str, **kwargs: Any) -> RunResult:
        return _run_sync(self.respond(approval_id, text, **kwargs), "respond")

    def delete_thread_sync(self, thread_id: str) -> dict[str, Any]:
        return _run_sync(self.delete_thread(thread_id), "delete_thread")
