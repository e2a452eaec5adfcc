"""What the ``email`` family's SMTP and IMAP sides share (:mod:`kasloop.tools.email`).

The password from the environment (never a config value; ``KASLOOP_APPROVAL_*``
refused), the TLS context, the network gate each connection goes through (the
server's name resolved once, the client pinned to the checked addresses), and the
turning of socket, TLS and DNS errors into :class:`~kasloop.tools.base.ToolFailure`
with a hint at the setting to fix. :mod:`kasloop.channels.email_inbox` uses
:func:`_password` too: the inbox feed reads the tools' mailbox.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from kasloop.safety.approval_secrets import tool_secret_problem
from kasloop.config.mail import ServerSettings
from kasloop.tools.base import ToolFailure
from kasloop.tools.base import ToolErrorKind as ErrorKind
from kasloop.tools.network import IPAddress, NetworkGate, tls_context

__all__ = ["_network", "_network_failure", "_password", "_redact", "_reply_text", "_server_addresses", "_tls"]


# --------------------------------------------------------------------------- password, TLS, network gate


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
