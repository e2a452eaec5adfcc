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
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import imaplib
import mimetypes
import os
import re
import smtplib
import socket
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy as email_policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import formatdate, make_msgid, parsedate_to_datetime
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from kasloop.approval_secrets import APPROVAL_ENV_PREFIX, tool_secret_problem
from kasloop.mail_settings import CONTROL_CHARS as _CONTROL_RE
from kasloop.mail_settings import ImapSettings, ServerSettings, SmtpSettings
from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.base import ToolErrorKind as ErrorKind
from kasloop.tools.files import resolve_in_workspace
from kasloop.tools.http import html_to_text
from kasloop.tools.network import IPAddress, NetworkGate, connect_pinned, tls_context

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

T = TypeVar("T")

DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_READ_BYTES = 2 * 1024 * 1024
MAX_RECIPIENTS = 50
MAX_SEARCH_TERMS = 10
_TOOL_TIMEOUT = 120.0  # outer bound; each network operation has email.<smtp|imap>.timeout
_SEND_DEADLINE = _TOOL_TIMEOUT - 10  # email_send gives up itself first, so it can say whether data went out

# CRLF line ends; 7-bit body encodings (quoted-printable/base64 for non-ASCII text), so the message
# needs no 8BITMIME/SMTPUTF8 from the server.
_MESSAGE_POLICY = email_policy.SMTP.clone(cte_type="7bit")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_RE = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")
_NAMED_RE = re.compile(r'^(?P<name>"(?:[^"\\]|\\.)*"|[^"<>]*?)\s*<(?P<addr>[^<>\s]*)>$')
_NAME_SPECIALS = re.compile(r'[()<>@,;:\\"\[\]]')
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


# --------------------------------------------------------------------------- settings
# SmtpSettings and ImapSettings are in kasloop.mail_settings: the approvals mailbox (kasloop.config) uses them too.


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


def _password(server: ServerSettings, section: str) -> str | None:
    """The password from the environment, read at call time (it is never a config value)."""
    if not server.username:
        return None
    value = os.environ.get(server.password_env)
    if not value:
        raise ToolFailure(
            "permanent",
            f"environment variable {server.password_env} (email.{section}.password_env) is not set; set it to the {section.upper()} password",
        )
    problem = tool_secret_problem(f"email.{section}.password_env", server.password_env)
    if problem is not None:  # the approvals mailbox is kasloop's, never a tool's
        raise ToolFailure("denied", problem)
    return value


def _tls(server: ServerSettings, section: str) -> ssl.SSLContext:
    try:
        return tls_context(server.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ToolFailure("permanent", f"cannot load email.{section}.ca_file `{server.ca_file}`: {exc}") from None


def _network(section: str) -> NetworkGate:
    """The gate of ``email.<section>``: private servers allowed (a person named the host), kasloop's receivers never."""
    return NetworkGate(section=f"email.{section}", allow_private=True)


def _server_addresses(network: NetworkGate, server: ServerSettings, section: str, port: int) -> tuple[IPAddress, ...]:
    """The checked addresses of the server (resolved once, in the worker thread); the client connects only to these."""
    try:
        return network.resolve_blocking(server.host, port)
    except ToolFailure as exc:
        if exc.kind == "denied":
            raise
        raise ToolFailure(exc.kind, f"{exc.message}; check email.{section}.host") from None


class _PinnedSMTP(smtplib.SMTP):
    """smtplib's client connecting to addresses the network gate checked, never to the name again."""

    def __init__(self, addresses: tuple[IPAddress, ...], host: str, port: int, **kwargs: Any) -> None:
        self.addresses = addresses
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float | None) -> Any:
        return connect_pinned(self.addresses, port, timeout, self.source_address)


class _PinnedSMTPSSL(smtplib.SMTP_SSL, _PinnedSMTP):
    """Implicit TLS over the pinned connection: ``SMTP_SSL._get_socket`` wraps it with the server's *name* (SNI, certificate)."""

    def __init__(self, addresses: tuple[IPAddress, ...], host: str, port: int, **kwargs: Any) -> None:
        self.addresses = addresses
        smtplib.SMTP_SSL.__init__(self, host, port, **kwargs)  # SMTP_SSL calls SMTP.__init__ itself


class _PinnedIMAP4(imaplib.IMAP4):
    """imaplib's client connecting to addresses the network gate checked (STARTTLS still checks the name)."""

    def __init__(self, addresses: tuple[IPAddress, ...], host: str, port: int, timeout: float) -> None:
        self.addresses = addresses
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> Any:
        return connect_pinned(self.addresses, self.port, timeout)


class _PinnedIMAP4SSL(imaplib.IMAP4_SSL):
    """Implicit TLS over the pinned connection, wrapped with the server's name as ``IMAP4_SSL`` does."""

    def __init__(self, addresses: tuple[IPAddress, ...], host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        self.addresses = addresses
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> Any:
        return self.ssl_context.wrap_socket(connect_pinned(self.addresses, self.port, timeout), server_hostname=self.host)


# --------------------------------------------------------------------------- addresses and message ids


def _split_list(text: str) -> Iterator[str]:
    """Split on commas that are outside quotes and angle brackets."""
    start, quoted, angle, escaped = 0, False, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"' and not angle:
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        elif char == "," and not quoted and not angle:
            yield text[start:index]
            start = index + 1
    yield text[start:]


def parse_addresses(text: str) -> list[Address]:
    """``a@x.org, Name <b@y.org>, "Last, First" <c@z.org>`` → addresses; ``ValueError`` on anything else.

    A deliberately small grammar (ASCII ``addr@domain`` with a dotted domain):
    what is checked against the allowlist is exactly what goes into the
    envelope and the headers, with no lenient parser in between.
    """
    if _CONTROL_RE.search(text):
        raise ValueError("addresses must be one line (no line breaks or control characters)")
    found: list[Address] = []
    for piece in _split_list(text):
        piece = piece.strip()
        if not piece:
            continue
        match = _NAMED_RE.match(piece)
        name, addr = (match.group("name").strip(), match.group("addr")) if match else ("", piece)
        if name.startswith('"'):
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        elif _NAME_SPECIALS.search(name):
            raise ValueError(f"`{piece}`: put a display name with @ ( ) , ; : < > [ ] in double quotes")
        if not _ADDR_RE.match(addr) or len(addr) > 254:
            raise ValueError(f"`{piece}` is not an email address like name@example.com")
        found.append(Address(display_name=name, addr_spec=addr))
    if not found:
        raise ValueError("no address given")
    return found


def message_id_for(idempotency_key: str) -> str:
    """``<KEY@kasloop>``: the same for every retry of one call, so the far side can spot a duplicate.

    Characters not allowed in a Message-ID are replaced, and a hash of the raw
    key is added when anything was replaced (two keys never share an id).
    Without a key (a direct call) a random id is made.
    """
    if not idempotency_key:
        return make_msgid(domain="kasloop")
    clean = _MSGID_UNSAFE.sub("-", idempotency_key).strip("-")[:120]
    if clean != idempotency_key:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        clean = f"{clean}-{digest}" if clean else digest
    return f"<{clean}@kasloop>"


def _check_allowed(addresses: list[Address], patterns: list[str]) -> None:
    if not patterns:
        return
    refused = [a.addr_spec for a in addresses if not any(fnmatchcase(a.addr_spec.lower(), p) for p in patterns)]
    if refused:
        raise ToolFailure(
            "denied",
            f"recipient(s) {', '.join(refused)} are not allowed (email.allow_recipients: {', '.join(patterns)}); nothing was sent",
        )


# --------------------------------------------------------------------------- attachments


@dataclass(frozen=True)
class _Attachment:
    name: str
    data: bytes
    mime: str


def _attachment_path(ctx: ToolContext, raw: str) -> Path:
    """Resolve one attachment path with the files family's jail (plus: no absolute paths, no ``..``)."""
    if not raw.strip() or "\x00" in raw:
        raise ToolFailure("bad_args", f"attachment `{raw}` is not a path; give a path relative to the workspace")
    pure = PurePosixPath(raw)
    if pure.is_absolute() or raw.startswith("\\") or re.match(r"^[A-Za-z]:", raw):
        raise ToolFailure("bad_args", f"attachment `{raw}` is an absolute path; give a path relative to the workspace root")
    if ".." in pure.parts:
        raise ToolFailure("bad_args", f"attachment `{raw}` contains `..`; give a path inside the workspace")
    return resolve_in_workspace(ctx.workspace, raw)  # a symlink out of the workspace -> denied


def _read_attachments(ctx: ToolContext, paths: list[str], limit: int) -> list[_Attachment]:
    """Read every attachment (bounded by ``limit`` bytes in total) before anything is sent."""
    targets = [(raw, _attachment_path(ctx, raw)) for raw in paths]
    found: list[_Attachment] = []
    total = 0
    for raw, target in targets:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise ToolFailure("bad_args", f"attachment `{raw}` does not exist in the workspace; see files_list") from None
        except OSError as exc:
            raise ToolFailure("bad_args", f"attachment `{raw}` cannot be opened: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ToolFailure("bad_args", f"attachment `{raw}` is not a regular file; attach files, not folders")
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit - total + 1)
        total += len(data)
        if total > limit:
            raise ToolFailure("bad_args", f"attachments exceed email.max_attachment_bytes ({limit} bytes in total); send fewer or smaller files")
        mime = mimetypes.guess_type(target.name, strict=False)[0] or "application/octet-stream"
        found.append(_Attachment(name=PurePosixPath(raw).name, data=data, mime=mime))
    return found


# --------------------------------------------------------------------------- errors


def _redact(text: str, secrets: tuple[str | None, ...]) -> str:
    """Belt and braces: no message is built from a password, but none may ever leave either."""
    for secret in secrets:
        if secret and len(secret) >= 4:  # replacing a 1-3 character password would garble text, not protect it
            text = text.replace(secret, "***")
    return text


def _reply_text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return " ".join(str(value).split())[:300]


def _network_failure(exc: BaseException, where: str, section: str, *, after_data: bool = False) -> ToolFailure:
    """Classify socket, TLS and DNS errors; ``after_data`` means the server may already hold the message."""
    unknown = "; the message may or may not have been sent: check the recipient's mailbox or the Sent folder before retrying"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ToolFailure("permanent", f"TLS certificate check failed for {where}: {exc.verify_message}; set email.{section}.ca_file if the server uses a private CA")
    if after_data:
        return ToolFailure("outcome_unknown", f"connection to {where} failed after the message was handed over ({type(exc).__name__}: {exc}){unknown}")
    if isinstance(exc, ssl.SSLError):
        return ToolFailure("permanent", f"TLS handshake with {where} failed ({exc.reason or exc}); check email.{section}.security and port")
    if isinstance(exc, socket.gaierror):
        kind: ErrorKind = "transient" if exc.errno == socket.EAI_AGAIN else "permanent"
        return ToolFailure(kind, f"cannot resolve {where}: {exc.strerror}; check email.{section}.host")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return ToolFailure("timeout", f"{where} did not answer within email.{section}.timeout; try again later")
    if isinstance(exc, ConnectionRefusedError):
        return ToolFailure("transient", f"{where} refused the connection; the server may be down or email.{section}.port is wrong")
    return ToolFailure("transient", f"connection to {where} failed: {type(exc).__name__}: {exc}")


def _code_kind(code: int) -> ErrorKind:
    return "transient" if 400 <= code < 500 else "permanent"


# --------------------------------------------------------------------------- SMTP


def _build_message(args: SendArgs, sender: Address, to: list[Address], cc: list[Address], files: list[_Attachment], msg_id: str) -> EmailMessage:
    msg = EmailMessage(policy=_MESSAGE_POLICY)
    try:
        msg["From"] = sender
        msg["To"] = to
        if cc:
            msg["Cc"] = cc
        msg["Subject"] = args.subject
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = msg_id
        msg.set_content(args.body)
        for item in files:
            maintype, _, subtype = item.mime.partition("/")
            msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.name)
    except (ValueError, TypeError) as exc:  # the header policy refuses CR/LF; checked earlier too
        raise ToolFailure("bad_args", f"cannot build the message: {exc}") from None
    return msg


def _smtp_login(client: smtplib.SMTP, cfg: SmtpSettings, password: str, where: str) -> None:
    """Log in with one mechanism, once (``SMTP.login`` retries every mechanism: two failed logins per call)."""
    offered = client.esmtp_features.get("auth", "").upper().split() if client.has_extn("auth") else []
    for mechanism in ("CRAM-MD5", "PLAIN", "LOGIN"):
        if mechanism in offered:
            client.user, client.password = cfg.username or "", password
            client.auth(mechanism, getattr(client, "auth_" + mechanism.lower().replace("-", "_")))
            return
    hint = "; many servers offer it only after STARTTLS" if cfg.security == "plain" else ""
    raise ToolFailure("permanent", f"{where} offers no login method kasloop supports (AUTH {' '.join(offered) or 'not offered'}){hint}; check email.smtp.security, or remove email.smtp.username")


class _Gate:
    """Lets the caller give up on a send before the message data goes out, and know if it was too late.

    ``asyncio.to_thread`` cannot stop a thread: without this a send that the
    caller gave up on could still deliver later, while the call reported a
    plain timeout.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.data_started = False

    def enter_data(self) -> None:
        with self.lock:
            if self.cancelled:
                raise ToolFailure("timeout", "sending took too long and was abandoned before the message was handed over; nothing was sent")
            self.data_started = True

    def cancel(self) -> bool:
        """Stop the send before its data stage; True if the data may already be on its way."""
        with self.lock:
            self.cancelled = True
            return self.data_started


def _smtp_send(
    cfg: SmtpSettings, password: str | None, sender: str, recipients: list[str], data: bytes, gate: _Gate, network: NetworkGate | None = None
) -> str:
    """One SMTP transaction through the network gate; returns the server's reply to the message data."""
    where = f"SMTP server {cfg.host}:{cfg.effective_port}"
    stage = "connect"
    client: smtplib.SMTP | None = None
    try:
        context = _tls(cfg, "smtp") if cfg.security != "plain" else None
        addresses = _server_addresses(network or _network("smtp"), cfg, "smtp", cfg.effective_port)
        if cfg.security == "ssl":
            client = _PinnedSMTPSSL(addresses, cfg.host, cfg.effective_port, timeout=cfg.timeout, context=context)
        else:
            client = _PinnedSMTP(addresses, cfg.host, cfg.effective_port, timeout=cfg.timeout)
        client.ehlo()
        if cfg.security == "starttls":
            if not client.has_extn("starttls"):
                raise ToolFailure("permanent", f"{where} does not offer STARTTLS; set email.smtp.security to `ssl` or `plain` to match the server")
            client.starttls(context=context)
            client.ehlo()
        if cfg.username:
            stage = "login"
            assert password is not None
            _smtp_login(client, cfg, password, where)
        stage = "envelope"
        code, reply = client.mail(sender)
        if code != 250:
            raise ToolFailure(_code_kind(code), f"{where} refused the sender {sender}: {code} {_reply_text(reply)}; nothing was sent")
        refused: list[str] = []
        worst = 550
        for rcpt in recipients:
            code, reply = client.rcpt(rcpt)
            if code not in (250, 251):
                refused.append(f"{rcpt} ({code} {_reply_text(reply)})")
                worst = min(worst, code)  # one temporary refusal makes a retry worth it
        if refused:
            client.rset()  # all or nothing: never deliver to a subset silently
            raise ToolFailure(_code_kind(worst), f"{where} refused recipient(s) {', '.join(refused)}; nothing was sent")
        gate.enter_data()
        stage = "data"
        code, reply = client.data(data)  # raises SMTPDataError unless the server said 354
        if code != 250:  # smtplib does not check the final reply: the server refused the message
            raise ToolFailure(_code_kind(code), f"{where} refused the message: {code} {_reply_text(reply)}; nothing was sent")
        result = f"{code} {_reply_text(reply)}"
        stage = "done"
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass  # the message is accepted; a rude goodbye changes nothing
        return result
    except ToolFailure:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise ToolFailure(
            "denied",
            f"{where} refused the login of `{cfg.username}` ({exc.smtp_code} {_reply_text(exc.smtp_error)}); check email.smtp.username and ${cfg.password_env}",
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise ToolFailure("permanent", f"{where} does not support this ({exc}); check email.smtp.security and username") from None
    except smtplib.SMTPDataError as exc:
        raise ToolFailure(_code_kind(exc.smtp_code), f"{where} refused the message: {exc.smtp_code} {_reply_text(exc.smtp_error)}; nothing was sent") from None
    except smtplib.SMTPResponseException as exc:
        raise ToolFailure(_code_kind(exc.smtp_code), f"{where} answered {exc.smtp_code} {_reply_text(exc.smtp_error)} during {stage}; nothing was sent") from None
    except smtplib.SMTPServerDisconnected as exc:
        raise _network_failure(ConnectionResetError(str(exc) or "server disconnected"), where, "smtp", after_data=stage == "data") from None
    except smtplib.SMTPException as exc:
        if stage == "login":
            raise ToolFailure("permanent", f"cannot log in to {where}: {exc}; check email.smtp.security and username") from None
        raise ToolFailure("permanent", f"{where}: {exc} (during {stage})") from None
    except OSError as exc:
        raise _network_failure(exc, where, "smtp", after_data=stage == "data") from None
    except UnicodeEncodeError:
        raise ToolFailure("permanent", f"the username or password for {where} is not ASCII; SMTP login needs ASCII") from None
    finally:
        if client is not None:
            client.close()


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


async def _send(args: SendArgs, ctx: ToolContext) -> ToolResult:
    settings = _settings(ctx)
    if settings.smtp is None:
        raise ToolFailure("permanent", "email sending is not configured: set tool_settings.email.smtp.host (and from_address) in kasloop.toml")
    if not settings.from_address:
        raise ToolFailure("permanent", "email sending needs tool_settings.email.from_address in kasloop.toml")
    try:
        to = parse_addresses(args.to)
        cc = parse_addresses(args.cc) if args.cc and args.cc.strip() else []
    except ValueError as exc:
        raise ToolFailure("bad_args", f"{exc}; separate several addresses with commas") from None
    recipients = list(dict.fromkeys(a.addr_spec for a in [*to, *cc]))
    if len(recipients) > MAX_RECIPIENTS:
        raise ToolFailure("bad_args", f"{len(recipients)} recipients; at most {MAX_RECIPIENTS} per message")
    _check_allowed([*to, *cc], settings.allow_recipients)
    files = await asyncio.to_thread(_read_attachments, ctx, list(args.attachments or []), settings.max_attachment_bytes)
    password = _password(settings.smtp, "smtp")
    sender = parse_addresses(settings.from_address)[0]
    msg_id = message_id_for(ctx.idempotency_key)
    msg = _build_message(args, sender, to, cc, files, msg_id)
    data = msg.as_bytes(policy=_MESSAGE_POLICY)
    network = await _network("smtp").with_receivers(ctx)
    gate = _Gate()
    sending = asyncio.ensure_future(asyncio.to_thread(_smtp_send, settings.smtp, password, sender.addr_spec, recipients, data, gate, network))
    try:
        reply = await asyncio.wait_for(asyncio.shield(sending), timeout=_SEND_DEADLINE)
    except ToolFailure as exc:
        raise ToolFailure(exc.kind, _redact(exc.message, (password,))) from None
    except TimeoutError:
        too_late = gate.cancel()
        sending.add_done_callback(_ignore_result)
        if too_late:
            raise ToolFailure("outcome_unknown", f"the SMTP server took too long to confirm the message; it may or may not have been sent (Message-ID {msg_id}): check before retrying") from None
        raise ToolFailure("timeout", f"sending took longer than {_SEND_DEADLINE:g} s and was abandoned before the message was handed over; nothing was sent") from None
    except asyncio.CancelledError:
        gate.cancel()  # the thread stops before the data stage if it has not reached it
        sending.add_done_callback(_ignore_result)
        raise
    listed = ", ".join(recipients)
    attached = f" · {len(files)} attachment(s): " + ", ".join(f"{f.name} ({len(f.data)} bytes)" for f in files) if files else ""
    output = f"Sent to {listed} · subject `{args.subject}` · Message-ID {msg_id}{attached} · server: {_redact(reply, (password,))}"
    metadata = {
        "message_id": msg_id,
        "to": [a.addr_spec for a in to],
        "cc": [a.addr_spec for a in cc],
        "attachments": [{"name": f.name, "bytes": len(f.data), "type": f.mime} for f in files],
        "bytes": len(data),
    }
    return ToolResult(ok=True, output=output, metadata=metadata)


# --------------------------------------------------------------------------- IMAP: quoting and criteria


def _imap_utf7(name: str) -> str:
    """RFC 3501 §5.1.3 modified UTF-7, the encoding of non-ASCII folder names."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{encoded}-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def imap_quote(text: str) -> bytes:
    """An IMAP quoted string: backslash and double quote escaped; only printable ASCII allowed inside."""
    if any(not 0x20 <= ord(c) <= 0x7E for c in text):
        raise ValueError("an IMAP quoted string holds printable ASCII only")
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'


def _folder_arg(folder: str) -> bytes:
    if not folder.strip() or _CONTROL_RE.search(folder) or len(folder) > 200:
        raise ToolFailure("bad_args", f"`{folder}` is not a folder name; use e.g. INBOX")
    return imap_quote(_imap_utf7(folder))


_TERM_RE = re.compile(r'(?:(?P<key>from|to|cc|subject|body):)?(?:"(?P<phrase>[^"]*)"|(?P<word>\S+))', re.IGNORECASE)
_KEYS = {"from": b"FROM", "to": b"TO", "cc": b"CC", "subject": b"SUBJECT", "body": b"BODY", None: b"TEXT"}


def search_terms(query: str) -> list[tuple[bytes, str]]:
    """``from:alice "big invoice" march`` → ``[(FROM, alice), (TEXT, big invoice), (TEXT, march)]``.

    Control characters (CR, LF, NUL...) become spaces: they are never sent.
    """
    text = _CONTROL_RE.sub(" ", query)
    terms: list[tuple[bytes, str]] = []
    for match in _TERM_RE.finditer(text):
        key = match.group("key")
        value = (match.group("phrase") if match.group("phrase") is not None else match.group("word")).strip()
        if value:
            terms.append((_KEYS[key.lower() if key else None], value[:200]))
    return terms


def search_criteria(query: str, *, unseen_only: bool, literal_plus: bool) -> tuple[list[bytes], bytes | None]:
    """IMAP SEARCH arguments for ``query``, plus at most one synchronising literal (sent last by imaplib).

    Every value is a quoted string (ASCII) or a counted literal (non-ASCII,
    with ``CHARSET UTF-8``): nothing the model writes is ever read as syntax.
    With ``LITERAL+``/``LITERAL-`` non-ASCII values are inline ``{n+}`` literals;
    without, imaplib can send only one literal, so only one non-ASCII term is allowed.
    """
    terms = search_terms(query)
    if len(terms) > MAX_SEARCH_TERMS:
        raise ToolFailure("bad_args", f"the query has {len(terms)} terms; use at most {MAX_SEARCH_TERMS}")
    ascii_terms = [(k, v) for k, v in terms if v.isascii()]
    wide_terms = [(k, v) for k, v in terms if not v.isascii()]
    args: list[bytes] = [b"CHARSET", b"UTF-8"] if wide_terms else []
    if unseen_only:
        args.append(b"UNSEEN")
    for key, value in ascii_terms:
        args += [key, imap_quote(value)]
    literal: bytes | None = None
    if wide_terms and not literal_plus and len(wide_terms) > 1:
        raise ToolFailure("bad_args", "this server accepts only one non-ASCII search term per query; drop the others")
    for key, value in wide_terms:
        data = value.encode("utf-8")
        if literal_plus:
            args += [key, b"{%d+}\r\n" % len(data) + data]
        else:
            args.append(key)
            literal = data
    if not terms and not unseen_only:
        args.append(b"ALL")
    return args, literal


# --------------------------------------------------------------------------- IMAP: connection


def _imap_session(cfg: ImapSettings, password: str, work: Callable[[imaplib.IMAP4], T], network: NetworkGate | None = None) -> T:
    """Connect (through the network gate; default: this process's receivers), secure, log in, run ``work``, log out;
    every failure becomes a ``ToolFailure``."""
    where = f"IMAP server {cfg.host}:{cfg.effective_port}"
    stage = "connect"
    conn: imaplib.IMAP4 | None = None
    try:
        context = _tls(cfg, "imap") if cfg.security != "plain" else None
        addresses = _server_addresses(network or _network("imap"), cfg, "imap", cfg.effective_port)
        if cfg.security == "ssl":
            conn = _PinnedIMAP4SSL(addresses, cfg.host, cfg.effective_port, ssl_context=context, timeout=cfg.timeout)
        else:
            conn = _PinnedIMAP4(addresses, cfg.host, cfg.effective_port, timeout=cfg.timeout)
            if cfg.security == "starttls":
                if "STARTTLS" not in conn.capabilities:
                    raise ToolFailure("permanent", f"{where} does not offer STARTTLS; set email.imap.security to `ssl` or `plain` to match the server")
                conn.starttls(ssl_context=context)
        stage = "login"
        assert cfg.username is not None
        conn.login(cfg.username, password)
        stage = "work"
        return work(conn)
    except ToolFailure:
        raise
    except imaplib.IMAP4.abort as exc:
        raise ToolFailure("transient", f"{where} dropped the connection ({_reply_text(exc)}); try again") from None
    except imaplib.IMAP4.error as exc:
        if stage == "login":
            raise ToolFailure("denied", f"{where} refused the login of `{cfg.username}` ({_reply_text(exc)}); check email.imap.username and ${cfg.password_env}") from None
        raise ToolFailure("permanent", f"{where}: {_reply_text(exc)} (during {stage})") from None
    except UnicodeEncodeError:
        raise ToolFailure("permanent", f"the username or password for {where} is not ASCII; IMAP LOGIN needs ASCII") from None
    except OSError as exc:
        raise _network_failure(exc, where, "imap") from None
    finally:
        if conn is not None:
            _close_imap(conn)


def _close_imap(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except (imaplib.IMAP4.error, OSError):
        try:
            conn.shutdown()
        except OSError:
            pass


def _open_folder(conn: imaplib.IMAP4, folder: str, *, readonly: bool) -> None:
    """SELECT (or read-only EXAMINE) a folder; imaplib sends the name as given, so it is quoted here."""
    try:
        typ, data = conn.select(_folder_arg(folder).decode("ascii"), readonly=readonly)
    except imaplib.IMAP4.readonly:
        raise ToolFailure("permanent", f"folder `{folder}` is read-only on this server; flags cannot be changed there") from None
    if typ != "OK":
        raise ToolFailure("bad_args", f"cannot open folder `{folder}` ({_reply_text(data[-1] if data else typ)}); INBOX always exists")


def _check(typ: str, data: list[Any], what: str) -> None:
    if typ != "OK":
        raise ToolFailure("permanent", f"the IMAP server refused {what}: {_reply_text(data[-1] if data else typ)}")


@dataclass
class _Fetched:
    uid: int
    flags: tuple[str, ...]
    size: int | None
    body: bytes


_UID_RE = re.compile(rb"\bUID (\d+)")
_FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def _flags(raw: bytes) -> tuple[str, ...]:
    """Flags as the model should see them; ``\\Recent`` is session state, not the message's."""
    return tuple(f for f in raw.decode("ascii", "replace").split() if f != "\\Recent")


def _parse_fetch(data: list[Any]) -> list[_Fetched]:
    """imaplib's FETCH answer (tuples of meta + literal, then closing bytes) → one entry per message."""
    found: list[_Fetched] = []
    for item in data:
        if isinstance(item, tuple):
            meta, body = item[0], item[1]
        elif isinstance(item, bytes) and _UID_RE.search(item):
            meta, body = item, b""
        else:
            if isinstance(item, bytes) and found:  # the part after a literal may carry FLAGS
                flags = _FLAGS_RE.search(item)
                if flags and not found[-1].flags:
                    found[-1].flags = _flags(flags.group(1))
            continue
        uid = _UID_RE.search(meta)
        if uid is None:
            continue
        flags = _FLAGS_RE.search(meta)
        size = _SIZE_RE.search(meta)
        found.append(
            _Fetched(
                uid=int(uid.group(1)),
                flags=_flags(flags.group(1)) if flags else (),
                size=int(size.group(1)) if size else None,
                body=body,
            )
        )
    return found


def _header(msg: Message, name: str) -> str:
    """A header decoded to one line of text; a malformed one (mail comes from strangers) is shown raw."""
    try:
        value = str(msg.get(name) or "")
    except Exception:  # noqa: BLE001 - the header parser must not break reading
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), "")
        try:
            value = str(make_header(decode_header(raw)))
        except Exception:  # noqa: BLE001
            value = str(raw)
    return " ".join(_CONTROL_RE.sub(" ", value).split())


def _date(msg: Message, fmt: str) -> str:
    raw = _header(msg, "Date")
    try:
        return parsedate_to_datetime(raw).strftime(fmt) if raw else "(no date)"
    except (TypeError, ValueError, IndexError):
        return raw


def _parse(data: bytes) -> Message:
    return BytesParser(policy=email_policy.default).parsebytes(data)


# --------------------------------------------------------------------------- IMAP tools


def _do_search(conn: imaplib.IMAP4, args: SearchArgs) -> tuple[str, dict[str, Any]]:
    _open_folder(conn, args.folder, readonly=True)
    caps = {c.upper() for c in conn.capabilities}
    criteria, literal = search_criteria(args.query, unseen_only=args.unseen_only, literal_plus=bool(caps & {"LITERAL+", "LITERAL-"}))
    if literal is not None:
        conn.literal = literal
    typ, data = conn.uid("SEARCH", *criteria)
    _check(typ, data, "the search")
    uids = sorted({int(u) for u in b" ".join(d for d in data if isinstance(d, bytes)).split()})
    total = len(uids)
    chosen = list(reversed(uids[-args.limit :]))
    if not chosen:
        return f"No messages in {args.folder} match `{args.query}`.", {"folder": args.folder, "total": 0, "uids": []}
    typ, data = conn.uid("FETCH", ",".join(map(str, chosen)), "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")
    _check(typ, data, "fetching the headers")
    by_uid = {f.uid: f for f in _parse_fetch(data)}
    lines = [f"{total} message(s) in {args.folder} match; newest {len(chosen)} (id | date | from | subject):"]
    for uid in chosen:
        fetched = by_uid.get(uid)
        if fetched is None:
            continue
        msg = _parse(fetched.body)
        unseen = "" if "\\Seen" in fetched.flags else " [unseen]"
        lines.append(f"{uid} | {_date(msg, '%Y-%m-%d %H:%M')} | {_header(msg, 'From') or '(no sender)'} | {_header(msg, 'Subject') or '(no subject)'}{unseen}")
    return "\n".join(lines), {"folder": args.folder, "total": total, "uids": chosen}


def _attachment_lines(msg: Message) -> list[str]:
    lines = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if part.get_content_disposition() != "attachment" and not name:
            continue
        payload = part.get_payload(decode=True) or b""
        lines.append(f"{name or '(unnamed)'} ({part.get_content_type()}, {len(payload)} bytes)")
    return lines


def _body_text(msg: Message) -> str:
    body = msg.get_body(preferencelist=("plain", "html")) if hasattr(msg, "get_body") else None
    if body is None:
        return "(no text body)"
    try:
        text = body.get_content()
    except (LookupError, ValueError, AssertionError):
        raw = body.get_payload(decode=True) or b""
        text = raw.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return "(no text body)"
    if body.get_content_type() == "text/html":
        return html_to_text(text)
    return text.replace("\r\n", "\n").strip()


def _do_read(conn: imaplib.IMAP4, args: IdArgs, limit: int) -> tuple[str, dict[str, Any]]:
    _open_folder(conn, args.folder, readonly=True)
    typ, data = conn.uid("FETCH", str(args.id), f"(UID FLAGS RFC822.SIZE BODY.PEEK[]<0.{limit}>)")
    _check(typ, data, "fetching the message")
    found = [f for f in _parse_fetch(data) if f.uid == args.id]
    if not found:
        raise ToolFailure("bad_args", f"no message with id {args.id} in {args.folder}; find ids with email_search")
    fetched = found[0]
    msg = _parse(fetched.body)
    cut = fetched.size is not None and fetched.size > len(fetched.body)
    headers = {name: _header(msg, name) for name in ("From", "To", "Cc", "Subject", "Message-ID")}
    headers["Date"] = _date(msg, "%Y-%m-%d %H:%M %z")
    lines = [f"{name}: {headers[name]}" for name in ("From", "To", "Cc", "Date", "Subject", "Message-ID") if headers[name]]
    lines.append(f"Flags: {' '.join(fetched.flags) or '(none)'}")
    attachments = _attachment_lines(msg)
    if attachments:
        lines.append("Attachments: " + "; ".join(attachments))
    if cut:
        lines.append(f"[message is {fetched.size} bytes; only the first {len(fetched.body)} were read (email.max_read_bytes)]")
    text = "\n".join(lines) + "\n\n" + _body_text(msg)
    return text, {"folder": args.folder, "id": args.id, "flags": list(fetched.flags), "bytes": fetched.size, "attachments": attachments, "truncated": cut}


def _do_mark(conn: imaplib.IMAP4, args: MarkArgs) -> tuple[str, dict[str, Any]]:
    _open_folder(conn, args.folder, readonly=False)
    typ, data = conn.uid("FETCH", str(args.id), "(UID FLAGS)")
    _check(typ, data, "looking up the message")
    if not any(f.uid == args.id for f in _parse_fetch(data)):
        raise ToolFailure("bad_args", f"no message with id {args.id} in {args.folder}; find ids with email_search")
    typ, data = conn.uid("STORE", str(args.id), "+FLAGS.SILENT" if args.seen else "-FLAGS.SILENT", "(\\Seen)")
    _check(typ, data, "changing the flag")
    state = "seen" if args.seen else "unseen"
    return f"Marked message {args.id} in {args.folder} as {state}.", {"folder": args.folder, "id": args.id, "seen": args.seen}


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


def _has_message_id(conn: imaplib.IMAP4, folder: str, msg_id: str) -> bool:
    _open_folder(conn, folder, readonly=True)
    typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", imap_quote(msg_id))
    _check(typ, data, "looking for the Message-ID")
    return bool(b" ".join(d for d in data if isinstance(d, bytes)).split())


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


def take_unread(
    conn: imaplib.IMAP4, folder: str, *, max_bytes: int, senders: list[str] | None = None, criteria: tuple[str, ...] = ("UNSEEN",),
) -> list[tuple[str, str, str, str]]:
    """``(sender, subject, body, message id)`` of the unread mail matching ``criteria``; each one taken is marked read.

    With ``senders`` (address globs) only their mail is taken and the rest is left unread (another
    reader may want it); without, every match is taken. The sender is ``""`` when the From header
    does not parse (mail comes from strangers). A message over ``max_bytes`` is taken unread.
    """
    _open_folder(conn, folder, readonly=False)
    typ, data = conn.uid("SEARCH", *criteria)
    _check(typ, data, "searching for new mail")
    found: list[tuple[str, str, str, str]] = []
    for uid in [u.decode() for d in data if isinstance(d, bytes) for u in d.split()]:
        typ, data = conn.uid("FETCH", uid, "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM)])")
        _check(typ, data, "reading a sender")
        fetched = _parse_fetch(data)
        try:
            senders_found = parse_addresses(_header(_parse(fetched[0].body), "From")) if fetched else []
        except ValueError:
            senders_found = []
        sender = senders_found[0].addr_spec.lower() if len(senders_found) == 1 else ""
        if senders is not None and (not sender or not any(fnmatchcase(sender, p) for p in senders)):
            continue
        if fetched and fetched[0].size is not None and fetched[0].size > max_bytes:
            conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
            found.append((sender, "(too large)", f"A message of {fetched[0].size} bytes was not read (email.max_read_bytes).", ""))
            continue
        typ, data = conn.uid("FETCH", uid, "(UID BODY.PEEK[])")
        _check(typ, data, "reading new mail")
        msg = _parse(_parse_fetch(data)[0].body)
        found.append((sender, _header(msg, "Subject"), _body_text(msg), _header(msg, "Message-ID")))
        conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
    return found


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
