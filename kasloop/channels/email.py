"""Approval requests by email, decided by a reply read from the approvals' own mailbox.

Each request is mailed to ``approval_channels.email.to`` (through the email
family's SMTP settings and recipient allowlist) with a one-time code. Replies
are read from ``approval_channels.email.imap``: a mailbox with its own login,
whose password is in a ``KASLOOP_APPROVAL_*`` variable no tool may read (not
the tools' mailbox, so no email tool can read a reply or its code). A reply
decides when all of these hold: it is unread in ``folder``; its subject
names the approval id; its first non-empty line is ``APPROVE CODE`` or
``REJECT CODE [reason]``; the code is the one sent for that request; and its
sender is one of ``approvers``. Every reply looked at is marked read, so it
is handled once; a reply that fails a check is refused and logged.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
from pathlib import Path
from typing import Any

from kasloop.guardrails.approvals import Approve, Reject, approval_secret_problem
from kasloop.channels.announcements import AnnouncementLog, request_text
from kasloop.channels.base import Decide, Incoming, Refuse
from kasloop.checkpoints.database import Database
from kasloop.config.schema import EmailApprovals
from kasloop.errors import ConfigError
from kasloop.tools.base import ToolContext, ToolFailure, run_tool
from kasloop.tools.email import EMAIL_TOOLS, EmailSettings, ImapSettings
from kasloop.tools.email_addresses import parse_addresses
from kasloop.tools.email_read import _imap_session, take_unread

__all__ = ["EmailChannel", "parse_reply"]

_APPROVAL_ID = re.compile(r"\bap-[0-9a-f]{10}\b")
_DECISION = re.compile(r"^\s*(APPROVE|REJECT)\s+([0-9A-F]{8})\b\s*[:,-]?\s*(.*)$", re.IGNORECASE)


def parse_reply(subject: str, body: str) -> tuple[str, str, str, str] | None:
    """``(approval_id, decision, code, reason)`` from a reply, or None if it is not a decision."""
    found = _APPROVAL_ID.search(subject)
    line = next((ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith(">")), "")
    match = _DECISION.match(line)
    if found is None or match is None:
        return None
    return found.group(0), match.group(1).lower(), match.group(2).upper(), match.group(3).strip()


class EmailChannel:
    name = "email"

    def __init__(self, approvals: EmailApprovals, tool_settings: dict[str, Any]) -> None:
        self.approvals = approvals
        self.tool_settings = tool_settings
        self.approvers = {a.addr_spec.lower() for entry in approvals.approvers for a in parse_addresses(entry)}

    async def send(self, record: dict[str, Any], code: str) -> str:
        body = (
            f"{request_text(record)}\n\nTo decide, reply with one of these as the first line:\n"
            f"APPROVE {code}\nREJECT {code} your reason\n\nThe code is for this request only."
        )
        return await self._mail(f"[kasloop] Approval {record['approval_id']}: {record['tool']}", body, f"approval-{record['approval_id']}")

    async def notify(self, subject: str, text: str, data: dict[str, Any]) -> str:
        return await self._mail(f"[kasloop] {subject}", text, f"notice-{data['key']}")

    async def _mail(self, subject: str, body: str, key: str) -> str:
        send = next(t for t in EMAIL_TOOLS if t.name == "email_send")
        args = {"to": self.approvals.to, "subject": subject[:400], "body": body}
        result = await run_tool(send, args, ToolContext(workspace=Path("."), idempotency_key=key, extra=self.tool_settings))
        if not result.ok:
            raise ToolFailure(result.error_kind or "permanent", result.output)
        return str(result.metadata.get("message_id", ""))

    def _mailbox(self) -> tuple[ImapSettings, str]:
        """The approvals mailbox and its password (checked again here: never a value a tool's variable holds)."""
        mailbox = ImapSettings.model_validate(self.approvals.imap)
        problem = approval_secret_problem("approval_channels.email.imap.password_env", mailbox.password_env)
        if problem is not None:
            raise ConfigError(f"Refusing to use the email approval channel: {problem}.")
        password = os.environ.get(mailbox.password_env, "")
        if not password:
            raise ToolFailure("permanent", f"no password for the approvals mailbox: set the environment variable `{mailbox.password_env}` (approval_channels.email.imap.password_env)")
        return mailbox, password

    async def poll(self, db: Database, decide: Decide, refuse: Refuse) -> None:
        mailbox, password = self._mailbox()
        limit = EmailSettings.model_validate(self.tool_settings.get("email") or {}).max_read_bytes
        folder = self.approvals.folder
        replies = await asyncio.to_thread(
            _imap_session, mailbox, password, lambda conn: take_unread(conn, folder, max_bytes=limit, criteria=("UNSEEN", "SUBJECT", '"kasloop"')),
        )
        log = AnnouncementLog(db)
        for sender, subject, body, _ in replies:
            parsed = parse_reply(subject, body)
            if parsed is None:
                continue
            approval_id, decision, code, reason = parsed
            by = f"email:{sender}"
            sent = await log.get(approval_id, self.name)
            if sender not in self.approvers:
                await refuse(approval_id, by, f"{sender} is not an approver")
            elif sent is None or not sent["code"] or not hmac.compare_digest(str(sent["code"]), code):
                await refuse(approval_id, by, "the reply does not quote this request's code")
            else:
                await decide(Incoming(approval_id, Approve(reason=reason) if decision == "approve" else Reject(reason=reason), by))
