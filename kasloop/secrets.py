"""Secret redaction: configured secrets never reach the model, the event log, the checkpoints or the logs.

kasloop knows which secrets an agent has: the OpenAI key, and every
environment variable a tool setting names (``password_env``, ``token_env``,
``secret_env``, with their defaults), plus any listed in ``secret_env``. Their
values are replaced by ``[redacted:NAME]`` wherever text enters kasloop's
records: tool results (before the ledger, the event log and the model see
them), model replies and the arguments of proposed calls (so a model that was
tricked into writing a secret into an email sends the placeholder instead),
inbox messages, and log records of the ``kasloop`` loggers.

Values shorter than :data:`MIN_SECRET_CHARS` are ignored: redacting "abc"
everywhere would mangle ordinary text and protect nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from kasloop.config import AgentConfig

__all__ = ["DEFAULT_SECRET_ENVS", "MIN_SECRET_CHARS", "Redactor", "RedactingFilter", "protect_logs", "secret_names"]

MIN_SECRET_CHARS = 6
DEFAULT_SECRET_ENVS = (
    "OPENAI_API_KEY",
    "KASLOOP_SMTP_PASSWORD",
    "KASLOOP_IMAP_PASSWORD",
    "KASLOOP_TELEGRAM_TOKEN",
    "KASLOOP_WEBHOOK_SECRET",
)
"""Variables the built-in tools and models read by default."""

T = TypeVar("T")


def _env_names(settings: Any) -> Iterable[str]:
    """Values of every ``*_env`` key in a (nested) tool-settings table."""
    if isinstance(settings, Mapping):
        for key, value in settings.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(value, str) and value:
                yield value
            else:
                yield from _env_names(value)
    elif isinstance(settings, list):
        for item in settings:
            yield from _env_names(item)


def secret_names(config: AgentConfig) -> list[str]:
    """Environment variables holding this agent's secrets."""
    names = [*DEFAULT_SECRET_ENVS, *_env_names(config.tool_settings), *config.secret_env]
    return list(dict.fromkeys(names))


class Redactor:
    """Replaces known secret values with ``[redacted:NAME]`` in text and in JSON-like values."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        pairs = [(value, name) for name, value in secrets.items() if value and len(value) >= MIN_SECRET_CHARS]
        self._pairs = sorted(dict(pairs).items(), key=lambda pair: -len(pair[0]))

    @classmethod
    def for_config(cls, config: AgentConfig, environ: Mapping[str, str] | None = None) -> Redactor:
        env = os.environ if environ is None else environ
        secrets = {name: env[name] for name in secret_names(config) if env.get(name)}
        if config.openai.api_key is not None:
            secrets["openai.api_key"] = config.openai.api_key.get_secret_value()
        return cls(secrets)

    def merged(self, other: Redactor) -> Redactor:
        both = Redactor({})
        both._pairs = sorted(dict([*self._pairs, *other._pairs]).items(), key=lambda pair: -len(pair[0]))
        return both

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def text(self, text: str) -> str:
        for value, name in self._pairs:
            if value in text:
                text = text.replace(value, f"[redacted:{name}]")
        return text

    def deep(self, value: T) -> T:
        """``value`` with every string inside it (dict keys included) redacted."""
        if not self._pairs:
            return value
        if isinstance(value, str):
            return self.text(value)  # type: ignore[return-value]
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}  # type: ignore[return-value]
        if isinstance(value, list | tuple):
            return type(value)(self.deep(v) for v in value)  # type: ignore[return-value]
        return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's final message (install it on the ``kasloop`` logger's handlers
    or on the logger itself)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            message = record.getMessage()
            cleaned = self.redactor.text(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_LOG_FILTER = RedactingFilter(Redactor({}))
LOGGERS = ("kasloop", "kasloop.tools", "kasloop.tools.browser", "kasloop.tools.telegram", "kasloop.runtime")
"""kasloop's loggers (a logger's filters do not apply to its children's records, so each gets one)."""


def protect_logs(redactor: Redactor) -> None:
    """Redact ``redactor``'s secrets from every record of kasloop's loggers (for every agent in this process)."""
    _LOG_FILTER.redactor = _LOG_FILTER.redactor.merged(redactor)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)
