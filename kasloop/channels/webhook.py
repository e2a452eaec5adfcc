"""Approval requests POSTed to a webhook; the decisions come back to kasloop's receiver.

Each request is sent through the webhook family's jail (gated by
``tool_settings.webhook``) as ``{"type": "approval_request", ...}`` to
``approval_channels.webhook.url``, HMAC-signed with the **approval channel's
own secret** (``approval_channels.webhook.secret_env``, default
``KASLOOP_APPROVAL_WEBHOOK_SECRET``), never with the webhook tools' secret.
The decision comes back as a POST to ``/approvals`` of
:func:`kasloop.channels.webhook_receiver.approvals_app`, signed with that same
approval secret. So nothing a tool can sign is a decision: kasloop refuses to
start when the approval secret is in a variable a tool may name or has the value
of any other variable. Requests go out in the one JSON shape of
:func:`kasloop.guardrails.approvals.approval_json` (with ``arg_hash``, so the approvers'
side can bind its decision to the arguments it was shown).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kasloop.guardrails.approvals import approval_json, approval_secret_problem
from kasloop.channels.base import Decide, Refuse
from kasloop.checkpoints.database import Database
from kasloop.config.schema import WebhookApprovals
from kasloop.errors import ConfigError
from kasloop.tools.base import ToolContext, ToolFailure
from kasloop.tools.webhook import WebhookSettings, post_signed

__all__ = ["MIN_SECRET_CHARS", "WebhookChannel", "approval_secret"]

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
