"""The secrets of the approval channels, kept apart from every tool's: the rules in one small module.

An approval channel (webhook, Telegram, email) signs or reads decisions with a secret; a tool that
could use that secret could forge an approval. So an approval secret lives in its own
``KASLOOP_APPROVAL_*`` environment variable, which no tool setting may name, and whose value no other
variable may hold. Config validation (``kasloop.config.schema``), the tool families and the channels all
check through these functions; the module imports nothing of kasloop but its errors, so every layer
can use it without an import circle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kasloop.errors import ConfigError

__all__ = ["APPROVAL_ENV_PREFIX", "approval_secret_problem", "refuse_approval_env", "require_approval_secret", "tool_secret_problem"]

APPROVAL_ENV_PREFIX = "KASLOOP_APPROVAL_"
"""Environment variables of this prefix hold approval channels' secrets; no tool may read one."""


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
