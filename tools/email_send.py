"""``email_send``'s SMTP side: check the recipients and attachments, build the message, send it.

Everything is checked before any connection is made (see :mod:`kasloop.tools.email`);
the send runs in a thread on a fresh connection through the network gate, and the
:class:`_Gate` lets the caller give up on it before the message data goes out,
and know whether it was too late. The tool function itself (``_send`` in
:mod:`kasloop.tools.email`) reads the settings and passes the deadline in.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import smtplib
import stat
import threading
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kasloop.config.mail import SmtpSettings
from kasloop.tools.base import ToolContext, ToolFailure, ToolResult
from kasloop.tools.base import ToolErrorKind as ErrorKind
from kasloop.tools.email_addresses import message_id_for, parse_addresses
from kasloop.tools.email_connection import _network, _network_failure, _password, _redact, _reply_text, _server_addresses, _tls
from kasloop.tools.files import resolve_in_workspace
from kasloop.tools.network import IPAddress, NetworkGate, connect_pinned

if TYPE_CHECKING:
    from kasloop.tools.email import EmailSettings, SendArgs

__all__ = ["MAX_RECIPIENTS", "send_mail"]

MAX_RECIPIENTS = 50

# CRLF line ends; 7-bit body encodings (quoted-printable/base64 for non-ASCII text), so the message
# needs no 8BITMIME/SMTPUTF8 from the server.
_MESSAGE_POLICY = email_policy.SMTP.clone(cte_type="7bit")


# --------------------------------------------------------------------------- recipients


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


# --------------------------------------------------------------------------- SMTP


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


def _code_kind(code: int) -> ErrorKind:
    return "transient" if 400 <= code < 500 else "permanent"


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


async def send_mail(args: SendArgs, ctx: ToolContext, settings: EmailSettings, *, deadline: float) -> ToolResult:
    """``email_send`` with its settings: check everything, then one SMTP transaction in a thread, given up after ``deadline`` s."""
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
        reply = await asyncio.wait_for(asyncio.shield(sending), timeout=deadline)
    except ToolFailure as exc:
        raise ToolFailure(exc.kind, _redact(exc.message, (password,))) from None
    except TimeoutError:
        too_late = gate.cancel()
        sending.add_done_callback(_ignore_result)
        if too_late:
            raise ToolFailure("outcome_unknown", f"the SMTP server took too long to confirm the message; it may or may not have been sent (Message-ID {msg_id}): check before retrying") from None
        raise ToolFailure("timeout", f"sending took longer than {deadline:g} s and was abandoned before the message was handed over; nothing was sent") from None
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
