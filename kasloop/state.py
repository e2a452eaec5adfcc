"""The graph's state (what the loop remembers) and run context (what it may do).

``AgentState`` is checkpointed after every step. ``RunContext`` is passed in by
kasloop at each invocation from the thread's stored policy: nodes read it, no
node can write it, so neither the model nor a tool result can raise the
autonomy level or approve its own call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # not typing's: on Python < 3.12 pydantic builds no JSON schema from it (Studio's input form)

from kasloop.config.schema import PolicyRule, Risk
from kasloop.steps import Plan, new_plan

__all__ = [
    "AgentState",
    "ErrorInfo",
    "ErrorKind",
    "Goal",
    "PendingCall",
    "RunContext",
    "Status",
    "ToolErrorKind",
    "Usage",
    "empty_usage",
    "new_task",
]

Status = Literal["running", "waiting_approval", "sleeping", "done", "paused_budget", "escalated", "failed"]
ToolErrorKind = Literal["transient", "bad_args", "denied", "permanent", "timeout", "outcome_unknown", "conflict"]
"""How a tool call failed: the one declaration of these kinds (``kasloop.tools.base`` re-exports it for the tools).

``transient`` try again later, ``bad_args`` the model must change its call, ``denied`` refused by policy or a
jail, ``permanent`` retrying cannot help (a broken setting, a bug), ``timeout`` cut off by the tool's limit,
``outcome_unknown`` a side effect may or may not have happened, ``conflict`` the ledger holds this call's key
for other arguments."""

ErrorKind = Literal[ToolErrorKind, "model"]
"""How a step failed: any :data:`ToolErrorKind`, or ``model`` (the model call itself failed). Built from
``ToolErrorKind`` (nested Literals flatten), so a tool's kind is always a valid state kind."""


class Goal(TypedDict):
    id: str
    text: str
    status: Literal["open", "done", "dropped"]
    untrusted: NotRequired[bool]
    """Came from outside (a Telegram, webhook or email inbox message), not from a person's ``tell``/``run``."""


class PendingCall(TypedDict, total=False):
    """A tool call proposed by decide, with everything gating decided about it."""

    id: str
    """kasloop's id for the call (``call_<turn>_<index>``), never the model's: it ties the call to its
    ToolMessage and keys the ledger, so two calls a model gave the same id stay two calls."""
    tool: str
    args: dict[str, Any]
    risk: Risk
    gate: Literal["allow", "ask", "deny"]
    reason: str
    arg_hash: str
    approval_id: str
    decision: Literal["approve", "edit", "reject", "respond"]
    """Set by human_approval on a call a human approved or edited (it is not asked again)."""
    attempt: int
    """Retries so far of this call (part of its idempotency key)."""
    turn: int
    """The model turn that proposed it."""
    created_at: float
    error: dict[str, Any]
    """Set by act when this call failed: ``{"kind": ..., "output": ...}``."""


class ErrorInfo(TypedDict, total=False):
    kind: ErrorKind
    message: str
    tool: str
    call_id: str
    source: Literal["tool", "model"]


class Usage(TypedDict):
    steps: int
    tool_calls: int
    model_calls: int
    input_tokens: int
    output_tokens: int
    usd: float
    seconds: float


def empty_usage() -> Usage:
    return Usage(steps=0, tool_calls=0, model_calls=0, input_tokens=0, output_tokens=0, usd=0.0, seconds=0.0)


def new_task(goal: str | None = None) -> dict[str, Any]:
    """State reset at the start of a new task on a thread (budgets count per task); ``goal`` gives its steps."""
    return {
        "status": "running", "output": "", "usage": empty_usage(), "attempts": 0, "pending": [], "done_calls": [], "files_seen": [],
        "last_error": None, "diagnosis": None, "loops": 0, "stalled": 0, "model_index": 0, "recovering": None,
        "plan": new_plan(goal) if goal else None, "output_schema": None, "structured": None, "observations": {},
    }


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    """Working memory: bounded to the configured window."""
    summary: str
    """What fell out of the window (folded in by the memory issue's summariser)."""
    goals: list[Goal]
    observation: str
    pending: list[PendingCall]
    last_error: ErrorInfo | None
    diagnosis: str | None
    attempts: int
    usage: Usage
    tainted: bool
    status: Status
    output: str
    output_schema: dict[str, Any] | None
    """The JSON schema this task's final answer must match (``Agent.run(output=...)``, ``--output-schema``); set
    only from what a person gave, with the goal (``kasloop.models.structured``)."""
    structured: Any
    """The final answer as the validated JSON value, when the task has an ``output_schema``."""
    files_seen: list[str]
    """Files read or written in this task (absolute paths, newest last, bounded): files_write may replace
    only these (``tool_settings.files.overwrite_unread`` aside)."""
    done_calls: list[str]
    observations: dict[str, Any]
    """Observing calls (polls) of this task by ``arg_hash``: their last result's digest, when, and how many
    identical results in a row (``kasloop.nodes.observations``)."""
    """``arg_hash`` of the calls that succeeded in this task (latest last, bounded): a small model
    that repeats a finished idempotent call is told so instead of running it again."""
    model_index: int
    """Position in the model fallback chain this task uses now (self_diagnose moves it on)."""
    model_turns: int
    """How many model replies this thread has consumed (a scripted model's position)."""
    stalled: int
    """Cycles in a row whose calls brought nothing new (none succeeded, or only repeats); decide stops the
    task at ``stall_cycles``."""
    loops: int
    """How many loops (A-A-A, A-B-A-B over ``done_calls`` and the new calls) were detected in this task;
    the second one escalates."""
    recovering: dict[str, str] | None
    """The failure the task is getting past (tool, kind, message); the next new success writes a learning."""
    budget_breach: dict[str, Any] | None
    """The limit that paused the thread (``limit``, ``value``, ``used``, ``next_cost``, ``proposed``); None while running."""
    recalled: list[str]
    """The learnings from long-term memory most relevant to the open goals (one line each, bounded)."""
    recall_key: str
    """Hash of the goals ``recalled`` was looked up for (the search is repeated when they change)."""
    inherited_taint: list[str]
    """Where outside content came from before this task began: a team's specialist whose task was
    written after the manager read outside content gets ``["the manager's task"]``, so its side
    effects are gated as if it had read it itself."""
    team_turns: dict[str, int]
    """Model turns each specialist of a team has used in this thread (a scripted specialist goes on
    from there the next time it is given a task)."""
    plan: Plan | None
    """The task's goal as steps and how far it got (see ``kasloop.steps``); a small model is shown the
    current step, and a plain-text answer while steps are left shows it the next one."""
    inbox_seen: int
    """Id of the last inbox message perceive took into this thread. Saved with the checkpoint, so a
    message is delivered exactly once: a crash before the checkpoint delivers it again, after it never."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunContext:
    """The thread's policy for this invocation. Read-only for nodes."""

    thread_id: str = "default"
    autonomy: int = 3
    tools: tuple[str, ...] = ()
    """Names of the single tools this agent may call."""
    rules: tuple[PolicyRule, ...] = ()
    risk_overrides: dict[str, Risk] = field(default_factory=dict)
    max_steps: int | None = 50
    max_tool_calls: int | None = None
    max_tokens: int | None = None
    max_usd: float | None = None
    max_seconds: float | None = None
    max_tokens_per_day: int | None = None
    max_usd_per_day: float | None = None
    output_model: Any = None
    """The pydantic class of a structured result, when the process that drives the thread has it
    (``Agent.run(output=Model)``): it validates the answer too. Never stored; the schema in the state is."""
    budget_asks: bool = True
    """Whether a budget breach at levels 2 and 3 asks a person to raise the limit (``human_approval``). False
    in a team's specialist: its breach goes back to the manager with the delegation's result, and the
    manager asks."""
