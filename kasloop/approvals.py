"""The approval lifecycle in one place: ids, typed decisions, and the one check every decision passes.

Every way a human decides (``kasloop approve`` / ``reject``, ``Agent.approve`` /
``reject`` / ``respond`` / ``decide``, a Telegram button, an email reply, a
signed webhook callback) ends in :func:`check_decision`, which refuses an
unknown, already-decided, stale or expired request and edited arguments the
tool would not take, and binds the decision to the request's argument hash
(an edit gets the hash of its new arguments, recorded next to the old one).
:func:`record_decision` then writes it with its audit event in one
transaction. There is no other path from a channel to the approvals table.

Who may decide is the channels' business (``kasloop.channels``); what they
must never share with a tool is settled here too: an approval channel's
secrets live in ``KASLOOP_APPROVAL_*`` environment variables, which no tool
setting may name, and whose values no other variable may hold
(:func:`approval_secret_problem`, :func:`tool_secret_problem`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from kasloop.errors import ApprovalError

if TYPE_CHECKING:
    from kasloop.checkpoints.approvals import ApprovalRecord
    from kasloop.checkpoints.sqlite import Database
    from kasloop.config import AgentConfig
    from kasloop.tools.base import Tool

__all__ = [
    "APPROVAL_ENV_PREFIX",
    "refuse_approval_env",
    "DECISIONS",
    "Approve",
    "Checked",
    "Edit",
    "Reject",
    "Respond",
    "TypedDecision",
    "approval_id",
    "approval_secret_problem",
    "check_decision",
    "parse_decision",
    "record_decision",
    "require_approval_secret",
    "tool_secret_problem",
]

DECISIONS = ("approve", "edit", "reject", "respond")
APPROVAL_ENV_PREFIX = "KASLOOP_APPROVAL_"
"""Environment variables of this prefix hold approval channels' secrets; no tool may read one."""


def approval_id(*parts: object) -> str:
    """The id of an approval request: ``ap-`` + 10 hex digits of sha256 over ``parts`` joined by ``:``.

    Derived from the request's own coordinates (thread, turn, call; or thread, budget, numbers), so a
    node that re-runs after a crash asks with the same id instead of a second request.
    """
    seed = ":".join(str(part) for part in parts)
    return "ap-" + hashlib.sha256(seed.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- typed decisions


class _Decision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    arg_hash: str | None = None
    """The request's hash as the decider saw it (optional): a decision made for other arguments is stale."""


class Approve(_Decision):
    """Run the call as requested (``always``: also allow the tool from now on)."""

    decision: Literal["approve"] = "approve"
    reason: str = ""
    always: bool = False


class Edit(_Decision):
    """Run the call with these arguments instead (checked against the tool's schema; a new hash is recorded)."""

    decision: Literal["edit"] = "edit"
    args: dict[str, Any]
    always: bool = False


class Reject(_Decision):
    """Do not run it; the model is told ``reason`` and plans again."""

    decision: Literal["reject"] = "reject"
    reason: str = ""


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


def _redacted(typed: Approve | Edit | Reject | Respond, config: AgentConfig) -> Approve | Edit | Reject | Respond:
    """The decision with secrets redacted from what a person typed (a reason, a response, edited arguments):
    it reaches the model, the approvals table and the checkpoints like any other input."""
    from kasloop.secrets import Redactor, known_secrets

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

    Raises:
        ApprovalError: unknown id, not pending any more (decided, stale), the thread is gone, an
            ``arg_hash`` that is not the request's, expired (logged as ``approval_refused``), the thread
            no longer waits for it, a decision the request cannot take, or edited arguments the tool refuses.
    """
    from kasloop.checkpoints.approvals import ApprovalStore
    from kasloop.checkpoints.events import EventLog
    from kasloop.checkpoints.threads import ThreadStore
    from kasloop.policy import arg_hash

    record = await ApprovalStore(db).get(approval_id)
    if record is None:
        raise ApprovalError(f"No approval `{approval_id}`; list pending ones with `kasloop approvals`.")
    if record["status"] != "pending":
        raise ApprovalError(f"Approval `{approval_id}` is {record['status']}, not pending; nothing to decide. List pending ones with `kasloop approvals`.")
    thread = await ThreadStore(db).get(record["thread"])
    if thread is None:
        raise ApprovalError(f"Approval `{approval_id}` belongs to a thread that no longer exists.")
    config = thread_config(thread["policy"])
    typed = _redacted(parse_decision(decision), config)
    if typed.arg_hash is not None and typed.arg_hash != record["arg_hash"]:
        raise ApprovalError(f"The decision for `{approval_id}` was made for other arguments (arg_hash mismatch); it is stale.")
    stored: dict[str, Any] = typed.model_dump(exclude_defaults=True, exclude={"arg_hash"})
    stored["decision"] = typed.decision
    if record["kind"] == "budget":  # the limit it raises is checked by kasloop.budget.granted_value; it does not expire
        return Checked(record=record, config=config, decision=typed, stored={**stored, "arg_hash": record["arg_hash"]}, step=0, by=by, channel=channel)
    if record["expires_at"] < (time.time() if now is None else now) and config.approval_expiry == "reject":
        await EventLog(db).append(record["thread"], 0, "approval_refused", approval_id=approval_id, reason="expired", channel=channel)
        raise ApprovalError(
            f"Approval `{approval_id}` expired at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record['expires_at']))}; "
            f"`kasloop resume {record['thread']}` rejects it as the thread's policy says (approval_expiry)."
        )
    live, step = await pause(config, record["thread"])
    if record["batch_id"] not in live:
        raise ApprovalError(f"Approval `{approval_id}` is stale: thread `{record['thread']}` is no longer waiting for it.")
    if isinstance(typed, Edit):
        tool = tool_for(config, record["tool"])
        if tool is None:
            raise ApprovalError(f"Approval `{approval_id}` is not a tool call; edit is only for tool calls.")
        try:
            tool.args_model.model_validate(typed.args)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            raise ApprovalError(f"Edited arguments for `{tool.name}` are invalid: {where}: {first['msg']}.") from None
        stored["args"] = dict(typed.args)
        stored["arg_hash"] = arg_hash(record["tool"], stored["args"])
    else:
        stored["arg_hash"] = record["arg_hash"]
    stored.pop("always", None)
    stored["by"], stored["channel"] = by, channel
    return Checked(record=record, config=config, decision=typed, stored=stored, step=step, by=by, channel=channel)


async def record_decision(db: Database, checked: Checked) -> None:
    """Write a checked decision and its ``approval_decision`` event together (``ApprovalError`` if someone else decided first)."""
    from kasloop.checkpoints.approvals import ApprovalStore
    from kasloop.checkpoints.events import event_row

    record, stored = checked.record, checked.stored
    kind = checked.decision.decision
    said = {key: str(stored[key])[:500] for key in ("reason", "text") if stored.get(key)}  # what the person told the model
    event = event_row(
        record["thread"], checked.step, "approval_decision", approval_id=record["approval_id"], decision=kind, by=checked.by,
        channel=checked.channel, arg_hash=record["arg_hash"], new_arg_hash=stored["arg_hash"] if kind == "edit" else None, **said,
    )
    if not await ApprovalStore(db).decide(record["approval_id"], stored, by=checked.by, channel=checked.channel, event=event):  # type: ignore[arg-type]
        raise ApprovalError(f"Approval `{record['approval_id']}` was decided by someone else meanwhile; nothing changed.")


# --------------------------------------------------------------------------- secrets of the approval channels


def approval_secret_problem(setting: str, name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why environment variable ``name`` cannot hold an approval channel's secret (``setting`` names the key), or None.

    It must be a ``KASLOOP_APPROVAL_*`` variable (no tool setting may name one), and its value, when
    set, must be in no other variable: a tool configured with that other variable could sign or send
    with the approvers' secret.
    """
    if not name.startswith(APPROVAL_ENV_PREFIX) or name == APPROVAL_ENV_PREFIX:
        return (
            f"{setting} = `{name}`: an approval channel's secret must be in its own {APPROVAL_ENV_PREFIX}* variable "
            f"(e.g. {APPROVAL_ENV_PREFIX}WEBHOOK_SECRET), which no tool may read"
        )
    env = os.environ if environ is None else environ
    value = env.get(name)
    if not value:
        return None
    same = sorted(other for other, text in env.items() if other != name and text == value)
    if same:
        return (
            f"the value of {name} ({setting}) is also the value of {same[0]}: approvals would trust what a tool "
            f"configured with {same[0]} can sign or send; give the approval channel a secret of its own"
        )
    return None


def refuse_approval_env(name: str, use: str = "use") -> str:
    """``name`` unless it is a ``KASLOOP_APPROVAL_*`` variable, which no tool setting may name (``ValueError``)."""
    if name.startswith(APPROVAL_ENV_PREFIX):
        raise ValueError(f"`{name}`: {APPROVAL_ENV_PREFIX}* variables hold approval channels' secrets, which no tool may {use}; name another variable")
    return name


def require_approval_secret(setting: str, name: str) -> None:
    """Raise ``ConfigError`` (one line; kasloop refuses to start) if :func:`approval_secret_problem` finds one."""
    from kasloop.errors import ConfigError

    problem = approval_secret_problem(setting, name)
    if problem is not None:
        raise ConfigError(f"Refusing to start: {problem}.")


def tool_secret_problem(setting: str, name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why a tool may not use the secret in environment variable ``name`` (``setting`` names the key), or None.

    ``KASLOOP_APPROVAL_*`` variables belong to the approval channels; a value equal to one of theirs
    would let the tool sign or send as the approvers do.
    """
    if name.startswith(APPROVAL_ENV_PREFIX):
        return f"{setting} = `{name}`: {APPROVAL_ENV_PREFIX}* variables hold approval channels' secrets, which no tool may use; name another variable"
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        for other, text in env.items():
            if other.startswith(APPROVAL_ENV_PREFIX) and text == value:
                return f"the value of {name} ({setting}) is also the value of {other}, an approval channel's secret, which no tool may use"
    return None
