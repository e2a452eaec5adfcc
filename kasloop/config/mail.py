"""How to reach a mail server: the SMTP and IMAP settings tables.

The email tools (:mod:`kasloop.tools.email`: ``[tool_settings.email.smtp]`` and ``[tool_settings.email.imap]``)
and the approvals mailbox (:class:`kasloop.config.schema.EmailApprovals`: ``approval_channels.email.imap``) validate
their tables with the same models, so they live here, below both: pydantic only, no tool, no connection.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["CONTROL_CHARS", "DEFAULT_TIMEOUT", "ImapSettings", "Security", "ServerSettings", "SmtpSettings"]

Security = Literal["starttls", "ssl", "plain"]

DEFAULT_TIMEOUT = 30.0
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
"""ASCII control characters (CR and LF among them): never part of a header, a host name or a login."""

_SMTP_PORTS = {"starttls": 587, "ssl": 465, "plain": 25}
_IMAP_PORTS = {"starttls": 143, "ssl": 993, "plain": 143}


class ServerSettings(BaseModel):
    """What an SMTP and an IMAP server table share."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, description="Server host name or address.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Port; default depends on security.")
    security: Security = "starttls"
    username: str | None = Field(default=None, description="Login name; no login when unset (SMTP only).")
    password_env: str = Field(default="", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable holding the password.")
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=600, description="Seconds per network operation.")
    ca_file: str | None = Field(default=None, description="PEM bundle of CAs to trust instead of the system's.")

    @field_validator("host", "username")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters")
        return value


class SmtpSettings(ServerSettings):
    """``[tool_settings.email.smtp]``: the outgoing server."""

    security: Security = "starttls"
    password_env: str = Field(default="KASLOOP_SMTP_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @property
    def effective_port(self) -> int:
        return self.port or _SMTP_PORTS[self.security]


class ImapSettings(ServerSettings):
    """``[tool_settings.email.imap]``: the mailbox server (also the approvals mailbox, ``approval_channels.email.imap``)."""

    security: Security = "ssl"
    password_env: str = Field(default="KASLOOP_IMAP_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @property
    def effective_port(self) -> int:
        return self.port or _IMAP_PORTS[self.security]
