"""The approval lifecycle in one place: ids, requests and their JSON, typed decisions, the one check, expiry.

A request is made by ``human_approval`` and passed to ``interrupt()``: a tool
call, an escalation, or a budget that ran out at levels 2 and 3
(:func:`kasloop.guardrails.budget.budget_request`); its id comes from :func:`approval_id`, :func:`record_request` stores
it, and :func:`approval_json` is the one shape every listing shows (``Agent.approvals()``, ``RunResult``,
``kasloop approvals --json``, ``kasloop status``, the channels, the report).

Every way a human decides (``kasloop approve`` / ``reject``, ``Agent.approve`` /
``reject`` / ``respond`` / ``decide``, a Telegram button, an email reply, a
signed webhook callback) ends in :func:`check_decision`, which refuses an
unknown, already-decided, stale or expired request, and then binds the
decision to the request with :func:`bind_decision`: a decision made for other
arguments is stale, edited arguments must pass the tool's schema (an edit gets
the hash of its new arguments, recorded next to the old one), and a budget
request takes only a new limit above what is used. ``human_approval`` binds
every resume value with the same :func:`bind_decision`, so a resume that never
went through kasloop's table (``Command(resume=...)`` from LangGraph Studio)
is held to the same rules. :func:`record_decision` writes a checked decision
with its audit event in one transaction; :func:`reject_expired` is the only
decision kasloop takes itself. There is no other path from a channel to the
approvals table. Refusals are typed (``ApprovalExpired``, ``ApprovalStale``,
``ApprovalAlreadyDecided``, all ``ApprovalError``): callers branch on the
class, never on the message.

Who may decide is the channels' business (``kasloop.channels``); what they
must never share with a tool is settled here too: an approval channel's
secrets live in ``KASLOOP_APPROVAL_*`` environment variables, which no tool
setting may name, and whose values no other variable may hold
(:func:`approval_secret_problem`, :func:`tool_secret_problem`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from kasloop.support.records import FrozenRecord

from kasloop.safety.approval_secrets import (
    APPROVAL_ENV_PREFIX,
    approval_secret_problem,
    refuse_approval_env,
    require_approval_secret,
    tool_secret_problem,
)
from kasloop.checkpoints.approvals import ApprovalRecord, ApprovalStore
from kasloop.checkpoints.events import EventLog, event_row
from kasloop.checkpoints.threads import ThreadStore
from kasloop.errors import ApprovalAlreadyDecided, ApprovalError, ApprovalExpired, ApprovalStale
from kasloop.guardrails.policy import arg_hash
from kasloop.safety.secrets import Redactor, known_secrets

if TYPE_CHECKING:
    from kasloop.checkpoints.database import Database
    from kasloop.config.schema import AgentConfig
    from kasloop.tools.base import Tool

__all__ = [
    "APPROVAL_ENV_PREFIX",
    "DECISIONS",
    "EXPIRED_REASON",
    "ApprovalRequest",
    "Approve",
    "Bound",
    "Checked",
    "Edit",
    "Reject",
    "Respond",
    "TypedDecision",
    "approval_id",
    "approval_json",
    "approval_secret_problem",
    "bind_decision",
    "check_decision",
    "granted_value",
    "parse_decision",
    "record_decision",
    "refuse_approval_env",
    "record_request",
    "reject_expired",
    "require_approval_secret",
    "tool_secret_problem",
]

DECISIONS = ("approve", "edit", "reject", "respond")
EXPIRED_REASON = "Nobody decided before the request expired; do not retry it, choose another way."
"""What the model is told when kasloop rejects a request nobody decided in time (``approval_expiry = "reject"``)."""


def approval_id(*parts: object) -> str:
    """The id of an approval request: ``ap-`` + 10 hex digits of sha256 over ``parts`` joined by ``:``.

    Derived from the request's own coordinates (thread, turn, call; or thread, budget, numbers), so a
    node that re-runs after a crash asks with the same id instead of a second request.
    """
    seed = ":".join(str(part) for part in parts)
    return "ap-" + hashlib.sha256(seed.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- requests and their JSON shape


class ApprovalRequest(TypedDict):
    """One request as ``human_approval`` hands it to ``interrupt()``; the runner stores it as it is."""

    approval_id: str
    thread: str
    kind: Literal["tool_call", "escalation", "budget"]
    call_id: str
    tool: str
    args: dict[str, Any]
    risk: str
    reason: str
    arg_hash: str
    created_at: float
    expires_at: float


class Approval(FrozenRecord):
    """A pending request for a person, as every listing shows it (DESIGN §12): a tool call (``kind="tool_call"``),
    an escalation, or a budget raise. ``Agent.approvals()``, ``RunResult.approvals`` and the stream's events hold
    these; ``model_dump(mode="json")`` is what ``kasloop approvals --json`` prints. Reading one by key
    (``approval["approval_id"]``) keeps working for code written when it was a dict."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a stored record carries more (status, batch_id, ...)

    approval_id: str
    thread: str
    tool: str
    args: dict[str, Any]
    risk: str
    reason: str
    arg_hash: str
    created_at: float
    expires_at: float
    kind: Literal["tool_call", "escalation", "budget"] = "tool_call"
    path: str = ""
    """A team's specialist's place under its manager (``manager/specialist``); empty for the thread itself."""


def approval_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """The stable JSON shape of a pending approval (a stored record or a request): :class:`Approval`'s.

    What the channels' announcements, ``kasloop status`` and the report show. Idempotent: the shape of a shape is itself.
    """
    return Approval.model_validate(dict(record)).model_dump(mode="json")


async def record_request(db: Database, request: Mapping[str, Any], step: int) -> bool:
    """Store a request (with ``batch_id``, the pause it belongs to) and log ``approval_requested``.

    False if it was stored already: a re-run asks with the same id, and the first payload is kept.
    """
    if not await ApprovalStore(db).add(dict(request)):
        return False
    await EventLog(db).append(
        request["thread"], step, "approval_requested", approval_id=request["approval_id"], tool=request["tool"],
        arg_hash=request["arg_hash"], reason=request["reason"], path=request.get("path", ""),
    )
    return True


# --------------------------------------------------------------------------- typed decisions


class _Decision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    arg_hash: str | None = None
    """The request's hash as the decider saw it (optional): a decision made for other arguments is stale."""


class Approve(_Decision):
    """Run the call as requested (``always``: also allow the tool from now on, a standing rule)."""

    decision: Literal["approve"] = "approve"
    reason: str = ""
    always: bool = False


class Edit(_Decision):
    """Run the call with these arguments instead (checked against the tool's schema; a new hash is recorded).

    On a budget request, ``args`` is ``{"value": N}``: the new limit. ``always``: also allow the tool from now on.
    """

    decision: Literal["edit"] = "edit"
    args: dict[str, Any]
    always: bool = False


class Reject(_Decision):
    """Do not run it; the model is told ``reason`` and plans again (``never``: also deny the tool from now on)."""

    decision: Literal["reject"] = "reject"
    reason: str = ""
    never: bool = False


class Respond(_Decision):
    """Do not run it; give the model ``text`` as its result."""

    decision: Literal["respond"] = "respond"
    text: str


TypedDecision = Annotated[Approve | Edit | Reject | Respond, Field(discriminator="decision")]
_DECISION = TypeAdapter(TypedDecision)


def parse_decision(value: Any) -> Approve | Edit | Reject | Respond:
    """A typed decision from a typed one or a ``{"decision": ..., ...}`` mapping (``ApprovalError`` if it is none)."""
    if isinstance(value, Approve | Edit | Reject | Respond):
        return value
    kind = value.get("decision") if isinstance(value, Mapping) else None
    if kind not in DECISIONS:
        raise ApprovalError(f"Decision `{kind}` is not one of approve, edit, reject, respond.")
    try:
        return _DECISION.validate_python(dict(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "decision"
        if kind == "edit" and where.startswith("args"):
            raise ApprovalError("Edited arguments must be a JSON object, e.g. '{\"path\": \"notes.md\"}'.") from None
        raise ApprovalError(f"Invalid `{kind}` decision: {where}: {first['msg']}.") from None


# --------------------------------------------------------------------------- the one check


@dataclass(frozen=True)
class Bound:
    """A decision bound to the request it answers (:func:`bind_decision`)."""

    decision: Approve | Edit | Reject | Respond
    stored: dict[str, Any]
    """What is recorded and handed to the graph: the decision's fields and ``arg_hash`` (the request's, or
    the edited arguments' for an edit). ``always`` / ``never`` are not in it: they become ``rule``."""
    granted: float | None = None
    """The new limit an approved budget request grants."""
    rule: Literal["allow", "deny"] | None = None
    """The standing rule the decision asks for (``always``: allow, ``never``: deny), added by ``Agent.decide``."""


def bind_decision(request: Mapping[str, Any], decision: Any, tool: Tool | None) -> Bound:
    """The one validation of a decision against the request it answers (``request``: a stored record or an
    :class:`ApprovalRequest`; ``tool``: the tool that would run an edit, or None).

    :func:`check_decision` calls it before anything is recorded, and ``human_approval`` on every resume
    value (kasloop's own, already checked, and one that never went through the approvals table, such as
    ``Command(resume=...)`` from LangGraph Studio), so both refuse the same things.

    Raises:
        ApprovalStale: an ``arg_hash`` that is neither the request's nor, for an edit, its new arguments'.
        ApprovalError: not a decision; ``always`` / ``never`` on anything but a tool call; on a budget
            request, a decision it cannot take or a limit not above what is used; an edit of no tool call,
            or edited arguments the tool's schema refuses.
    """
    typed = parse_decision(decision)
    approval, kind = request["approval_id"], request.get("kind", "tool_call")
    edited = isinstance(typed, Edit) and kind != "budget"  # a budget edit is a number, not a tool's arguments
    new_hash = arg_hash(request["tool"], typed.args) if edited else None  # type: ignore[union-attr]
    if typed.arg_hash is not None and typed.arg_hash not in (request["arg_hash"], new_hash):
        raise ApprovalStale(f"The decision for `{approval}` was made for other arguments (arg_hash mismatch); it is stale.")
    rule: Literal["allow", "deny"] | None = "allow" if getattr(typed, "always", False) else "deny" if getattr(typed, "never", False) else None
    if rule is not None and kind != "tool_call":
        raise ApprovalError(f"`--always` / `--never` need a pending tool call; `{approval}` is not one.")
    stored: dict[str, Any] = typed.model_dump(exclude_defaults=True, exclude={"arg_hash", "always", "never"})
    stored["decision"] = typed.decision
    stored["arg_hash"] = request["arg_hash"]
    if kind == "budget":

        granted = granted_value(request["args"], stored)  # refuses a decision a budget request cannot take
        return Bound(typed, stored, granted=None if typed.decision == "reject" else granted)
    if edited:
        if tool is None:
            raise ApprovalError(f"Approval `{approval}` is not a tool call; edit is only for tool calls.")
        try:
            tool.args_model.model_validate(typed.args)  # type: ignore[union-attr]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            raise ApprovalError(f"Edited arguments for `{tool.name}` are invalid: {where}: {first['msg']}.") from None
        stored["args"] = dict(typed.args)  # type: ignore[union-attr]
        stored["arg_hash"] = new_hash
    return Bound(typed, stored, rule=rule)


def _redacted(typed: Approve | Edit | Reject | Respond, config: AgentConfig) -> Approve | Edit | Reject | Respond:
    """The decision with secrets redacted from what a person typed (a reason, a response, edited arguments):
    it reaches the model, the approvals table and the checkpoints like any other input."""
    redactor = Redactor.for_config(config).merged(known_secrets())
    if not redactor:
        return typed
    fields = {name: redactor.deep(getattr(typed, name)) for name in ("reason", "text", "args") if hasattr(typed, name)}
    return typed.model_copy(update=fields)


@dataclass(frozen=True)
class Checked:
    """A decision that passed :func:`check_decision`, ready for :func:`record_decision`."""

    record: ApprovalRecord
    config: AgentConfig
    decision: Approve | Edit | Reject | Respond
    stored: dict[str, Any]
    """What is recorded and handed to the graph: the decision's fields, ``arg_hash`` (recomputed for an
    edit), ``by`` and ``channel``."""
    step: int
    by: str
    channel: str
    granted: float | None = None
    """The new limit an approved budget request grants (:func:`granted_value`)."""
    rule: Literal["allow", "deny"] | None = None
    """The standing rule the decision asks for (``always`` / ``never``)."""


ThreadConfig = Callable[[dict[str, Any]], "AgentConfig"]
Pause = Callable[["AgentConfig", str], Awaitable[tuple[set[str], int]]]
"""``async (config, thread) -> (ids of the pauses the thread waits in, its step)``."""
ToolFor = Callable[["AgentConfig", str], "Tool | None"]


async def check_decision(
    db: Database,
    approval_id: str,
    decision: Any,
    *,
    by: str,
    channel: str,
    thread_config: ThreadConfig,
    pause: Pause,
    tool_for: ToolFor,
    now: float | None = None,
) -> Checked:
    """Check one decision on ``approval_id`` against the request as stored; nothing is written on success.

    The request must be pending, its thread must exist and still wait in that pause, and it must not have
    expired (a budget request does not); then :func:`bind_decision` checks the decision itself.

    Raises:
        ApprovalAlreadyDecided: someone decided it already.
        ApprovalExpired: nobody decided in time and the thread's policy rejects it (logged as ``approval_refused``).
        ApprovalStale: marked stale, the thread is gone or no longer waits for it, or a decision made for other arguments.
        ApprovalError: unknown id, or a decision :func:`bind_decision` refuses.
    """
    record = await ApprovalStore(db).get(approval_id)
    if record is None:
        raise ApprovalError(f"No approval `{approval_id}`; list pending ones with `kasloop approvals`.")
    if record["status"] != "pending":
        error = ApprovalStale if record["status"] == "stale" else ApprovalAlreadyDecided
        raise error(f"Approval `{approval_id}` is {record['status']}, not pending; nothing to decide. List pending ones with `kasloop approvals`.")
    thread = await ThreadStore(db).get(record["thread"])
    if thread is None:
        raise ApprovalStale(f"Approval `{approval_id}` belongs to a thread that no longer exists.")
    config = thread_config(thread["policy"])
    typed = _redacted(parse_decision(decision), config)
    expired = record["expires_at"] < (time.time() if now is None else now)
    if expired and record["kind"] != "budget" and config.approval_expiry == "reject":  # a budget request waits for a person
        await EventLog(db).append(record["thread"], 0, "approval_refused", approval_id=approval_id, reason="expired", channel=channel)
        raise ApprovalExpired(
            f"Approval `{approval_id}` expired at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record['expires_at']))}; "
            f"`kasloop resume {record['thread']}` rejects it as the thread's policy says (approval_expiry)."
        )
    live, step = await pause(config, record["thread"])
    if record["batch_id"] not in live:
        raise ApprovalStale(f"Approval `{approval_id}` is stale: thread `{record['thread']}` is no longer waiting for it.")
    tool = tool_for(config, record["tool"]) if isinstance(typed, Edit) and record["kind"] != "budget" else None
    bound = bind_decision(record, typed, tool)
    stored = {**bound.stored, "by": by, "channel": channel}
    return Checked(
        record=record, config=config, decision=bound.decision, stored=stored, step=step, by=by, channel=channel,
        granted=bound.granted, rule=bound.rule,
    )


async def record_decision(db: Database, checked: Checked, *, writes: Sequence[tuple[str, tuple[Any, ...]]] = ()) -> None:
    """Write a checked decision, its ``approval_decision`` event and ``writes`` (a budget raise) in one transaction.

    Raises:
        ApprovalAlreadyDecided: someone else decided it meanwhile; nothing changed.
    """
    record, stored = checked.record, checked.stored
    kind = checked.decision.decision
    edited = kind == "edit" and record["kind"] != "budget"  # a budget edit changes a number, not arguments
    said = {key: str(stored[key])[:500] for key in ("reason", "text") if stored.get(key)}  # what the person told the model
    event = event_row(
        record["thread"], checked.step, "approval_decision", approval_id=record["approval_id"], decision=kind, by=checked.by,
        channel=checked.channel, arg_hash=record["arg_hash"], new_arg_hash=stored["arg_hash"] if edited else None, **said,
    )
    if not await ApprovalStore(db).decide(record["approval_id"], stored, by=checked.by, channel=checked.channel, writes=(event, *writes)):  # type: ignore[arg-type]
        raise ApprovalAlreadyDecided(f"Approval `{record['approval_id']}` was decided by someone else meanwhile; nothing changed.")


async def reject_expired(db: Database, config: AgentConfig, thread_id: str, step: int, *, now: float | None = None) -> list[str]:
    """Reject the thread's requests that expired unanswered, when its policy says so (``approval_expiry``);
    a budget request is not among them (the thread stays paused until a person decides).

    The one decision kasloop takes itself: recorded like a person's (by ``kasloop``, channel ``expiry``),
    the model is told :data:`EXPIRED_REASON`. A request someone decided meanwhile keeps that decision.
    Returns the ids rejected.
    """
    if config.approval_expiry != "reject":
        return []
    rejected: list[str] = []
    decision = Reject(reason=EXPIRED_REASON)
    for record in await ApprovalStore(db).expired(thread_id, time.time() if now is None else now):
        if record["kind"] == "budget":
            continue
        stored = {"decision": "reject", "reason": EXPIRED_REASON, "arg_hash": record["arg_hash"], "by": "kasloop", "channel": "expiry"}
        checked = Checked(record=record, config=config, decision=decision, stored=stored, step=step, by="kasloop", channel="expiry")
        try:
            await record_decision(db, checked)
        except ApprovalAlreadyDecided:
            continue
        rejected.append(record["approval_id"])
    return rejected


def granted_value(breach: dict[str, Any], decision: dict[str, Any]) -> float:
    """The new limit a decision on a budget request grants: the proposal, or an edited ``value`` above what is used."""
    kind = decision.get("decision")
    if kind not in ("approve", "edit", "reject"):
        raise ApprovalError(f"A budget request takes approve, edit ('{{\"value\": N}}') or reject, not `{kind}`.")
    if kind != "edit":
        return float(breach["proposed"])
    value = (decision.get("args") or {}).get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= breach["used"]:
        raise ApprovalError(
            f"The new {breach['limit']} must be a number above what is used ({breach['used']:g}), e.g. --edit '{{\"value\": {breach['proposed']:g}}}'."
        )
    return float(value)
