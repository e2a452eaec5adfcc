"""Approval requests POSTed to a webhook; decisions come back as signed callbacks to kasloop's receiver.

Each request is sent through the webhook family's jail (gated by
``tool_settings.webhook``) as ``{"type": "approval_request", ...}`` to
``approval_channels.webhook.url``, HMAC-signed with the **approval channel's
own secret** (``approval_channels.webhook.secret_env``, default
``KASLOOP_APPROVAL_WEBHOOK_SECRET``), never with the webhook tools' secret.
The decision comes back as a POST to ``/approvals`` of :func:`approvals_app`
signed with that same approval secret, with a body ``{"approval_id",
"decision": "approve"|"reject", "by"?, "reason"?, "arg_hash"?}``. So nothing
a tool can sign is a decision: kasloop refuses to start when the approval
secret is in a variable a tool may name or has the value of any other
variable. And no tool reaches the receiver: serve it with
:func:`serve_approvals` (or list its address in ``approval_channels.receivers``)
and the http, webhook and browser gates refuse its address whatever
``allow_private`` says.

A bad signature, a stale timestamp or a delivery id seen before is refused
(401, 409) and logged; an expired, stale or already-decided approval is
refused by the one check of ``kasloop.approvals`` (409) and logged too, with
the check's reason. Requests go out in the one JSON shape of
:func:`kasloop.approvals.approval_json` (with ``arg_hash``, so the approvers'
side can bind its decision to the arguments it was shown).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kasloop.approvals import Approve, Reject, approval_json, approval_secret_problem
from kasloop.channels import receivers
from kasloop.channels.base import Decide, Refuse
from kasloop.checkpoints.approvals import ApprovalStore
from kasloop.checkpoints.events import EventLog
from kasloop.checkpoints.database import Database
from kasloop.config import WebhookApprovals
from kasloop.errors import ApprovalExpired, ConfigError, KasloopError
from kasloop.tools.base import ToolContext, ToolFailure
from kasloop.tools.webhook import DatabaseDeliveryLog, WebhookSettings, inbox_deliver, make_webhook_app, post_signed

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from kasloop.agent import Agent

__all__ = ["MIN_SECRET_CHARS", "WebhookChannel", "approval_secret", "approvals_app", "serve_approvals"]

MIN_SECRET_CHARS = 16
"""An approval webhook secret shorter than this is refused (it is an HMAC key people could guess)."""


def approval_secret(approvals: WebhookApprovals | None) -> bytes:
    """The approval channel's own HMAC secret, checked: a ``KASLOOP_APPROVAL_*`` variable, long enough, and held by no other variable."""
    name = (approvals or WebhookApprovals(url="-")).secret_env
    problem = approval_secret_problem("approval_channels.webhook.secret_env", name)
    if problem is not None:
        raise ConfigError(f"Refusing to use the webhook approval channel: {problem}.")
    secret = os.environ.get(name, "")
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"The webhook approval channel needs its own secret of at least {MIN_SECRET_CHARS} characters in the environment "
            f"variable `{name}` (approval_channels.webhook.secret_env); it is {'too short' if secret else 'not set'}."
        )
    return secret.encode()


class WebhookChannel:
    name = "webhook"

    def __init__(self, approvals: WebhookApprovals, tool_settings: dict[str, Any], workspace: Path) -> None:
        self.approvals = approvals
        self.tool_settings = tool_settings
        self.workspace = workspace

    async def send(self, record: dict[str, Any], code: str) -> str:
        payload = {"type": "approval_request", **approval_json(record)}
        return await self._post(payload, f"approval-{record['approval_id']}")

    async def notify(self, subject: str, text: str, data: dict[str, Any]) -> str:
        return await self._post({"type": "notification", "subject": subject, "text": text, "thread": data["thread"]}, f"notice-{data['key']}")

    async def _post(self, payload: dict[str, Any], key: str) -> str:
        """Signed with the approval secret, through the webhook jail (the approvers' side is an outside address too)."""
        try:
            settings = WebhookSettings.model_validate(self.tool_settings.get("webhook") or {})
        except ValueError as exc:
            raise ToolFailure("permanent", f"bad tool_settings.webhook: {exc}") from None
        ctx = ToolContext(workspace=self.workspace, idempotency_key=key, extra=self.tool_settings)
        policy = await settings.policy().with_receivers(ctx)
        result = await post_signed(self.approvals.url, payload, policy, lambda: approval_secret(self.approvals), key)
        if not result.ok:
            raise ToolFailure(result.error_kind or "permanent", result.output)
        return str(result.metadata.get("delivery", key))

    async def poll(self, db: Database, decide: Decide, refuse: Refuse) -> None:
        """Decisions are pushed to :func:`approvals_app`; nothing to poll."""


async def _continue(agent: Agent, thread: str, events: EventLog) -> None:
    try:
        await agent.resume(thread)
    except KasloopError as exc:  # e.g. the daemon is driving it already: it continues there
        await events.append(thread, 0, "channel_error", channel="webhook", message=exc.message[:300])


def approvals_app(agent: Agent, db: Database, *, replay_window: float = 300.0) -> Starlette:
    """The receiver for signed approval callbacks (and signed hooks into the inbox), on ``agent``'s database.

    Verified with the approval channel's own secret (``approval_channels.webhook.secret_env``, default
    ``KASLOOP_APPROVAL_WEBHOOK_SECRET``; ``ConfigError`` if it is missing, short, or shared with any
    other variable). Serve it with :func:`serve_approvals`, or with uvicorn while ``db`` is open; it
    declares the address it is served on at its first request, so this process's tools refuse it
    (list the address in ``approval_channels.receivers`` to have it refused from the start, by every
    process that loads the config).
    """
    secret = approval_secret(agent.config.approval_channels.webhook)
    events = EventLog(db)
    running: set[asyncio.Task[None]] = set()

    async def refused(status: int, delivery: str, payload: dict[str, Any] | None = None, why: str = "") -> None:
        approval_id = str((payload or {}).get("approval_id", ""))
        record = await ApprovalStore(db).get(approval_id) if approval_id else None
        why = why or {401: "bad signature or stale timestamp", 409: "replayed callback"}.get(status, f"refused ({status})")
        await events.append(record["thread"] if record else "", 0, "approval_refused", approval_id=approval_id, channel="webhook", reason=why, delivery=delivery)

    async def approvals(payload: dict[str, Any], delivery: str) -> tuple[int, dict[str, Any]]:
        approval_id, decision = payload.get("approval_id"), payload.get("decision")
        expected = payload.get("arg_hash")
        if not isinstance(approval_id, str) or decision not in ("approve", "reject") or not isinstance(expected, str | None):
            return 400, {"ok": False, "error": "the body needs approval_id and decision (approve or reject); arg_hash, if given, is a string"}
        by = f"webhook:{payload.get('by') or delivery}"
        reason = str(payload.get("reason") or "")
        decided = Approve(reason=reason, arg_hash=expected) if decision == "approve" else Reject(reason=reason, arg_hash=expected)
        try:
            result = await agent.decide(approval_id, decided, by=by, channel="webhook", resume=False)
        except ApprovalExpired as exc:  # the check logged this refusal itself
            return 409, {"ok": False, "error": exc.message}
        except KasloopError as exc:
            await refused(409, delivery, payload, exc.message)
            return 409, {"ok": False, "error": exc.message}
        if not result.approvals:  # the pause is fully decided: continue the thread after answering the caller
            task = asyncio.create_task(_continue(agent, result.thread, events))
            running.add(task)
            task.add_done_callback(running.discard)
        return 200, {"ok": True, "thread": result.thread, "status": result.status}

    app = make_webhook_app(secret, inbox_deliver(db), replay_window=replay_window, seen=DatabaseDeliveryLog(db), approvals=approvals, refused=refused)
    app.add_middleware(_DeclareServer, db=db)
    return app


class _DeclareServer:
    """ASGI middleware: the address the receiver is served on becomes a receiver no tool may reach."""

    def __init__(self, app: Any, db: Database) -> None:
        self.app = app
        self.db = db
        self.seen: set[tuple[str, int]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        server = scope.get("server") if scope.get("type") == "http" else None
        if server and tuple(server) not in self.seen and server[1] is not None:
            host, port = str(server[0]), int(server[1])
            self.seen.add((host, port))
            receivers.declare(host, port)
            await receivers.record(self.db, host, port)
        await self.app(scope, receive, send)


@asynccontextmanager
async def serve_approvals(agent: Agent, db: Database, *, host: str = "127.0.0.1", port: int = 0, replay_window: float = 300.0) -> AsyncIterator[str]:
    """Serve :func:`approvals_app` on ``host:port`` (0: a free port) while the block runs; yields its base URL.

    The address is a receiver from before the first request until the block ends: declared in this
    process and recorded in the database, so the tools of every process on it refuse it.
    """
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serving the approvals receiver needs uvicorn: pip install uvicorn") from None
    app = approvals_app(agent, db, replay_window=replay_window)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound, bound_port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
    receivers.declare(bound, bound_port)
    await receivers.record(db, bound, bound_port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://{f'[{bound}]' if family == socket.AF_INET6 else bound}:{bound_port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        finally:
            sock.close()
            receivers.withdraw(bound, bound_port)
            await receivers.forget(db, bound, bound_port)
