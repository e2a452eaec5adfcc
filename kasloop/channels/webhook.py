"""Approval requests POSTed to a webhook; decisions come back as signed callbacks.

Each request is sent with the webhook family (HMAC-signed, gated by
``tool_settings.webhook``) as ``{"type": "approval_request", ...}`` to
``approval_channels.webhook.url``. The decision comes back as a signed POST
to ``/approvals`` of :func:`approvals_app` (same signature scheme, the
shared secret from ``tool_settings.webhook.secret_env``), with a body
``{"approval_id", "decision": "approve"|"reject", "by"?, "reason"?}``. A bad
signature, a stale timestamp or a delivery id seen before is refused (401,
409) and logged; an expired, stale or already-decided approval is refused by
``Agent.decide`` (409) and logged too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kasloop.channels.base import Decide, Refuse
from kasloop.checkpoints.approvals import ApprovalStore, Decision
from kasloop.checkpoints.events import EventLog
from kasloop.checkpoints.sqlite import Database
from kasloop.config import WebhookApprovals
from kasloop.errors import KasloopError
from kasloop.tools.base import ToolContext, ToolFailure, run_tool
from kasloop.tools.webhook import WEBHOOK_TOOLS, DatabaseDeliveryLog, WebhookSettings, _secret, inbox_deliver, make_webhook_app

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from kasloop.agent import Agent

__all__ = ["WebhookChannel", "approvals_app"]


class WebhookChannel:
    name = "webhook"

    def __init__(self, approvals: WebhookApprovals, tool_settings: dict[str, Any], workspace: Path) -> None:
        self.approvals = approvals
        self.tool_settings = tool_settings
        self.workspace = workspace

    async def send(self, record: dict[str, Any], code: str) -> str:
        payload = {"type": "approval_request", **{k: record[k] for k in ("approval_id", "thread", "kind", "tool", "args", "risk", "reason", "expires_at")}}
        return await self._post(payload, f"approval-{record['approval_id']}")

    async def notify(self, subject: str, text: str, data: dict[str, Any]) -> str:
        return await self._post({"type": "notification", "subject": subject, "text": text, "thread": data["thread"]}, f"notice-{data['key']}")

    async def _post(self, payload: dict[str, Any], key: str) -> str:
        ctx = ToolContext(workspace=self.workspace, idempotency_key=key, extra=self.tool_settings)
        result = await run_tool(WEBHOOK_TOOLS[0], {"url": self.approvals.url, "payload": payload}, ctx)
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

    Serve it with uvicorn while ``db`` is open (see the README's "Approval channels").
    """
    settings = WebhookSettings.model_validate(agent.config.tool_settings.get("webhook") or {})
    events = EventLog(db)
    running: set[asyncio.Task[None]] = set()

    async def refused(status: int, delivery: str, payload: dict[str, Any] | None = None) -> None:
        approval_id = str((payload or {}).get("approval_id", ""))
        record = await ApprovalStore(db).get(approval_id) if approval_id else None
        why = {401: "bad signature or stale timestamp", 409: "replayed callback"}.get(status, f"refused ({status})")
        await events.append(record["thread"] if record else "", 0, "approval_refused", approval_id=approval_id, channel="webhook", reason=why, delivery=delivery)

    async def approvals(payload: dict[str, Any], delivery: str) -> tuple[int, dict[str, Any]]:
        approval_id, decision = payload.get("approval_id"), payload.get("decision")
        if not isinstance(approval_id, str) or decision not in ("approve", "reject"):
            return 400, {"ok": False, "error": "the body needs approval_id and decision (approve or reject)"}
        by = f"webhook:{payload.get('by') or delivery}"
        decided: Decision = {"decision": decision, "reason": str(payload.get("reason") or "")}  # type: ignore[typeddict-item]
        try:
            result = await agent.decide(approval_id, decided, by=by, channel="webhook", resume=False)
        except KasloopError as exc:
            if "expired" not in exc.message:  # Agent.decide logs expiry itself
                await refused(409, delivery, payload)
            return 409, {"ok": False, "error": exc.message}
        if not result.approvals:  # the pause is fully decided: continue the thread after answering the caller
            task = asyncio.create_task(_continue(agent, result.thread, events))
            running.add(task)
            task.add_done_callback(running.discard)
        return 200, {"ok": True, "thread": result.thread, "status": result.status}

    return make_webhook_app(
        _secret(settings), inbox_deliver(db), replay_window=replay_window, seen=DatabaseDeliveryLog(db), approvals=approvals, refused=refused,
    )
