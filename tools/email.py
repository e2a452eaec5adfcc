"""The ``email`` family: send mail over SMTP; search, read and flag mail over IMAP.

``email_send`` builds the message with :class:`email.message.EmailMessage` and
sends it with :mod:`smtplib`; the IMAP tools use :mod:`imaplib`. Both libraries
block, so every exchange runs in ``asyncio.to_thread`` on a fresh connection
(no connection is kept between calls: mail servers drop idle ones anyway).

Sending (risk ``high``, not idempotent):

* Everything is checked **before** any connection is made: the recipients
  (plain ``addr@domain`` or ``Name <addr@domain>``, comma-separated; each
  address must match ``email.allow_recipients`` when that list is set, else
  ``denied``), the subject (one line: CR, LF and other control characters are
  ``bad_args``, so no header can be injected), and the attachments.
* Attachments are workspace paths read through the files family's jail:
  absolute paths and ``..`` segments are ``bad_args``, a symlink that leads out
  of the workspace is ``denied``; their total size is capped by
  ``email.max_attachment_bytes``; the MIME type is guessed from the name.
* The ``Message-ID`` is derived from ``ToolContext.idempotency_key``
  (``<KEY@kasloop>``, sanitised), so every retry of one call carries the same
  id and the far side (or a human) can recognise a duplicate.
* The envelope is all or nothing: if the server refuses any recipient the
  transaction is reset and nothing is sent. A connection lost after the
  message data was handed over is ``outcome_unknown`` (the server may have
  queued it); a refusal before that is ``transient`` (4xx) or ``permanent``
  (5xx); a refused login is ``denied``.

Reading (IMAP; the id of a message is its UID in the folder):

* ``email_search`` maps the query to IMAP criteria: ``from:x``, ``to:x``,
  ``cc:x``, ``subject:x`` and ``body:x`` prefixes, ``"quoted phrases"``, and
  any other word searches the whole message (``TEXT``); terms are ANDed. Every
  term is sent as an IMAP quoted string (or a counted literal when it is not
  ASCII) and control characters become spaces, so model text can never add
  IMAP syntax. Newest first.
* ``email_search`` and ``email_read`` open the folder read-only (``EXAMINE``)
  and fetch with ``BODY.PEEK``: reading never marks a message seen.
* ``email_read`` shows the headers, the text body (HTML reduced to text) and
  the attachments by name, type and size, never their content; at most
  ``email.max_read_bytes`` of the message are downloaded.
* ``email_mark`` sets or clears ``\\Seen`` (risk ``low``, idempotent).

Connections go through the one network gate (:mod:`kasloop.tools.network`),
as http's do: the server's name is resolved once, kasloop's own receivers are
refused, and smtplib / imaplib connect to the checked address itself (the
name stays for TLS: SNI and the certificate check), so a DNS answer that
changes between the check and the connection cannot redirect the login.
Private and loopback servers are allowed: a person names the server in the
config (``email.smtp.host``), the model cannot choose it, and local relays
are common.

Secrets are never config values: ``password_env`` names the environment
variable holding the password, read at call time; no password appears in an
error, an output or metadata. ``KASLOOP_APPROVAL_*`` variables are refused: the
approvals mailbox is kasloop's (``approval_channels.email.imap``), never a tool's.

Config (``ToolContext.extra["email"]``, i.e. ``[tool_settings.email]``; see :class:`EmailSettings`):

``from_address``          sender, ``addr@domain`` or ``Name <addr@domain>`` (required to send).
``allow_recipients``      globs such as ``*@example.com`` or ``boss@example.org``; empty = anyone.
``max_attachment_bytes``  total attachment bytes per message (10 MiB).
``max_read_bytes``        bytes of one message downloaded by ``email_read`` (2 MiB).
``smtp.*`` / ``imap.*``   ``host`` (required), ``port`` (by security: SMTP 587 / 465 / 25,
                          IMAP 143 / 993 / 143), ``security`` = ``starttls`` | ``ssl`` | ``plain``
                          (SMTP default ``starttls``, IMAP default ``ssl``; ``plain`` sends the
                          password unencrypted: local relays only), ``username``, ``password_env``
                          (``KASLOOP_SMTP_PASSWORD`` / ``KASLOOP_IMAP_PASSWORD``), ``timeout``
                          (seconds per network operation, 30), ``ca_file`` (PEM of CAs to trust
                          instead of the system's).

The family is split by job: :mod:`kasloop.tools.email` (this module) holds the
settings, the argument models, the thin tool functions and ``EMAIL_TOOLS``;
:mod:`kasloop.tools.email_send` checks, builds and sends a message over SMTP;
:mod:`kasloop.tools.email_read` holds the IMAP session, search, fetch and parsing
(and ``take_unread``, for the channels); :mod:`kasloop.tools.email_addresses` the
address grammar and Message-IDs; :mod:`kasloop.tools.email_connection` what both
sides share (password, TLS, network gate, error classification).
"""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from kasloop.safety.approval_secrets import APPROVAL_ENV_PREFIX
from kasloop.config.mail import CONTROL_CHARS as _CONTROL_RE
from kasloop.config.mail import ImapSettings, SmtpSettings
from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.email_addresses import message_id_for, parse_addresses
from kasloop.tools.email_connection import _network, _password, _redact
from kasloop.tools.email_read import _do_mark, _do_read, _do_search, _has_message_id, _imap_session, imap_quote, search_criteria, take_unread
from kasloop.tools.email_send import send_mail

__all__ = [
    "EMAIL_TOOLS",
    "EmailSettings",
    "ImapSettings",
    "SmtpSettings",
    "imap_quote",
    "message_id_for",
    "parse_addresses",
    "search_criteria",
    "take_unread",
]

DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_READ_BYTES = 2 * 1024 * 1024
_TOOL_TIMEOUT = 120.0  # outer bound; each network operation has email.<smtp|imap>.timeout
_SEND_DEADLINE = _TOOL_TIMEOUT - 10  # email_send gives up itself first, so it can say whether data went out


# --------------------------------------------------------------------------- settings
# SmtpSettings and ImapSettings are in kasloop.config.mail: the approvals mailbox (kasloop.config.schema) uses them too.


class EmailSettings(BaseModel, extra="forbid"):
    """``[tool_settings.email]`` (see the module docstring). Validated at config load, so keep it cheap."""

    smtp: SmtpSettings | None = None
    imap: ImapSettings | None = None
    from_address: str | None = None
    allow_recipients: list[str] = Field(default_factory=list)
    max_attachment_bytes: int = Field(default=DEFAULT_MAX_ATTACHMENT_BYTES, ge=0)
    max_read_bytes: int = Field(default=DEFAULT_MAX_READ_BYTES, ge=1024)
    sent_folder: str | None = Field(default=None, min_length=1, max_length=200)
    """IMAP folder where the server keeps sent mail (e.g. ``Sent``). With it, a send interrupted by a
    crash is looked up there by its Message-ID instead of being reported as outcome unknown."""
    inbox_thread: str | None = Field(default=None, min_length=1, max_length=200)
    """Feed unread mail of ``inbox_folder`` into this thread's inbox (the daemon polls it each cycle)."""
    inbox_folder: str = Field(default="INBOX", min_length=1, max_length=200)
    inbox_senders: list[str] = Field(default_factory=list)
    """Address globs whose mail is fed to the inbox (required with ``inbox_thread``: mail comes from strangers)."""

    @model_validator(mode="after")
    def _inbox_needs_senders(self) -> EmailSettings:
        if self.inbox_thread is not None and not self.inbox_senders:
            raise ValueError("inbox_thread needs inbox_senders (address globs like `*@example.com`): mail comes from strangers")
        return self

    @model_validator(mode="after")
    def _not_approvals(self) -> EmailSettings:
        for section, server in (("smtp", self.smtp), ("imap", self.imap)):
            if server is not None and server.password_env.startswith(APPROVAL_ENV_PREFIX):
                raise ValueError(
                    f"{section}.password_env `{server.password_env}`: {APPROVAL_ENV_PREFIX}* variables hold approval channels' secrets, "
                    "which no tool may use; name another variable"
                )
        return self

    @field_validator("from_address")
    @classmethod
    def _valid_sender(cls, value: str | None) -> str | None:
        if value is not None:
            found = parse_addresses(value)
            if len(found) != 1:
                raise ValueError("must be exactly one address")
        return value

    @field_validator("allow_recipients")
    @classmethod
    def _valid_globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip() or _CONTROL_RE.search(pattern) or "@" not in pattern:
                raise ValueError(f"`{pattern}` is not an address glob like `*@example.com`")
        return [p.strip().lower() for p in value]


def _settings(ctx: ToolContext) -> EmailSettings:
    raw = ctx.extra.get("email") or {}
    try:
        return EmailSettings.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'email'}: {e['msg']}" for e in exc.errors())
        raise ToolFailure("permanent", f"bad email settings (tool_settings.email): {details}; fix kasloop.toml") from None


# --------------------------------------------------------------------------- tool functions


async def _send(args: SendArgs, ctx: ToolContext) -> ToolResult:
    return await send_mail(args, ctx, _settings(ctx), deadline=_SEND_DEADLINE)


async def _imap(ctx: ToolContext, work: Callable[[imaplib.IMAP4, EmailSettings], tuple[str, dict[str, Any]]]) -> ToolResult:
    settings = _settings(ctx)
    cfg = settings.imap
    if cfg is None:
        raise ToolFailure("permanent", "reading mail is not configured: set tool_settings.email.imap.host and username in kasloop.toml")
    if not cfg.username:
        raise ToolFailure("permanent", "IMAP needs a login: set tool_settings.email.imap.username (password in the environment variable named by password_env)")
    password = _password(cfg, "imap")
    assert password is not None
    network = await _network("imap").with_receivers(ctx)
    try:
        output, metadata = await asyncio.to_thread(_imap_session, cfg, password, lambda conn: work(conn, settings), network)
    except ToolFailure as exc:
        raise ToolFailure(exc.kind, _redact(exc.message, (password,))) from None
    return ToolResult(ok=True, output=_redact(output, (password,)), metadata=metadata)


async def _reconcile_send(args: SendArgs, ctx: ToolContext) -> bool | None:
    """After a crash mid-send: True if the sent-mail folder holds this call's Message-ID, else None (cannot tell:
    not finding it does not prove it was not sent)."""
    settings = _settings(ctx)
    if settings.imap is None or not settings.sent_folder or not settings.imap.username:
        return None
    password = _password(settings.imap, "imap")
    assert password is not None
    folder, msg_id = settings.sent_folder, message_id_for(ctx.idempotency_key)
    network = await _network("imap").with_receivers(ctx)
    found = await asyncio.to_thread(_imap_session, settings.imap, password, lambda conn: _has_message_id(conn, folder, msg_id), network)
    return True if found else None


async def _search(args: SearchArgs, ctx: ToolContext) -> ToolResult:
    return await _imap(ctx, lambda conn, _s: _do_search(conn, args))


async def _read(args: IdArgs, ctx: ToolContext) -> ToolResult:
    return await _imap(ctx, lambda conn, s: _do_read(conn, args, s.max_read_bytes))


async def _mark(args: MarkArgs, ctx: ToolContext) -> ToolResult:
    return await _imap(ctx, lambda conn, _s: _do_mark(conn, args))


# --------------------------------------------------------------------------- argument models


def _one_line(value: str, what: str) -> str:
    if _CONTROL_RE.sub("", value.replace("\t", " ")) != value.replace("\t", " "):
        raise ValueError(f"{what} must be one line: line breaks and control characters are not allowed")
    return value


class SendArgs(BaseModel):
    to: str = Field(min_length=3, max_length=5000, description="Recipient address(es), comma-separated.")
    subject: str = Field(max_length=500, description="Subject line.")
    body: str = Field(max_length=1_000_000, description="Plain-text body.")
    cc: str | None = Field(default=None, max_length=5000, description="Cc address(es), comma-separated.")
    attachments: list[str] | None = Field(default=None, max_length=20, description="Workspace paths of files to attach.", json_schema_extra={"kasloop": "path", "kasloop_acts_as": "files_read"})

    @field_validator("to", "cc")
    @classmethod
    def _addresses_one_line(cls, value: str | None) -> str | None:
        return None if value is None else _one_line(value, "addresses")

    @field_validator("subject")
    @classmethod
    def _subject_one_line(cls, value: str) -> str:
        return _one_line(value, "the subject")


class SearchArgs(BaseModel):
    query: str = Field(max_length=1000, description="Words to find; from:, to:, subject: prefixes allowed.")
    folder: str = Field(default="INBOX", max_length=200, description="Mail folder.", json_schema_extra={"kasloop": "text"})
    limit: int = Field(default=10, ge=1, le=100, description="Most recent matches to list.")
    unseen_only: bool = Field(default=False, description="Only unread messages.")


class IdArgs(BaseModel):
    id: int = Field(ge=1, description="Message id from email_search.")
    folder: str = Field(default="INBOX", max_length=200, description="Mail folder.", json_schema_extra={"kasloop": "text"})


class MarkArgs(BaseModel):
    id: int = Field(ge=1, description="Message id from email_search.")
    seen: bool = Field(default=True, description="true: mark read; false: mark unread.")
    folder: str = Field(default="INBOX", max_length=200, description="Mail folder.", json_schema_extra={"kasloop": "text"})


EMAIL_TOOLS: tuple[Tool, ...] = (
    Tool(name="email_send", description="Send an email, optionally with workspace files attached.", args_model=SendArgs, func=_send, risk="high", idempotent=False, timeout=_TOOL_TIMEOUT, family="email", untrusted=False, reconcile=_reconcile_send),
    Tool(name="email_search", description="Search a mail folder; lists id, date, sender, subject.", args_model=SearchArgs, func=_search, risk="read", idempotent=True, timeout=_TOOL_TIMEOUT, family="email"),
    Tool(name="email_read", description="Read one email by id (does not mark it read).", args_model=IdArgs, func=_read, risk="read", idempotent=True, timeout=_TOOL_TIMEOUT, family="email"),
    Tool(name="email_mark", description="Mark an email read or unread.", args_model=MarkArgs, func=_mark, risk="low", idempotent=True, timeout=_TOOL_TIMEOUT, family="email", untrusted=False),
)
