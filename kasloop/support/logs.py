"""Structured logs: one JSON object per line, so a daemon's log can be grepped, tailed and shipped.

Why a formatter and not a new logging stack: kasloop logs through the standard
``logging`` module under the ``"kasloop"`` logger, so applications keep their
own handlers; ``configure`` only adds one JSON handler to that logger.

Each line carries ``ts`` (ISO 8601, UTC), ``level``, ``logger`` and
``message``; an event logged with ``log_event`` adds ``thread``, ``step``,
``kind`` and the event's own fields under ``data``. Event fields are nested
rather than merged because they may use any name (``args``, ``name``,
``message``...), which would clash with ``LogRecord`` attributes or with the
line's own keys. Other ``extra=`` values a caller passes appear at the top level.
``LogRecord`` already has a ``thread`` attribute (the OS thread id), which
``extra=`` may not overwrite, so the thread id travels as ``extra={"thread_id": ...}``
and is written as ``thread``.

Every line is redacted as a whole before it is written
(``kasloop.safety.secrets.known_secrets``: every secret this process knows, in every
encoding): the message, the event's data, ``extra=`` values of any type and
tracebacks, whatever logger the record came from.

Why not python-json-logger or structlog (issue 16, item 8): the line's shape is
kasloop's own, and a library would have to be overridden at every step.
python-json-logger merges ``extra=`` over the line's own keys (here an extra
named ``level`` or ``ts`` becomes ``extra_level``), writes other timestamps
(microseconds, ``+00:00``) and leaves U+2028 and its kin unescaped; keeping
this format means replacing its ``add_fields`` (the fields),
``process_log_record`` (the redaction, which runs on the whole line after a
round trip through JSON) and ``jsonify_log_record`` (the line breaks): all it
does. structlog is another logging stack (bound loggers, processor chains, a
global configuration the application owns), while kasloop logs through the
standard ``logging`` module so that applications keep their handlers; it
would still need the same custom processors. The formatter below is 30 lines
of standard library.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import IO, Any

from kasloop.errors import ConfigError
from kasloop.safety.secrets import known_secrets

__all__ = ["EVENTS_LOGGER", "JsonFormatter", "configure", "log_event"]

EVENTS_LOGGER = "kasloop.events"

# Attributes every LogRecord has (plus the two that ``Formatter.format`` adds): anything else came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}
_EVENT_KEYS = {"thread_id": "thread", "step": "step", "kind": "kind"}  # extra= name -> JSON key
_OWN_KEYS = frozenset({"ts", "level", "logger", "message", "exc", "stack", "data", *_EVENT_KEYS.values()})
# ``json.dumps(ensure_ascii=False)`` escapes U+0000..U+001F but leaves these, and ``str.splitlines`` (and
# several log shippers) break lines on them; escaping them keeps "one object per line" true for every reader.
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_MARK = "_kasloop_json_handler"


def _text(value: str) -> str:
    for char, escaped in _LINE_BREAKS.items():
        value = value.replace(char, escaped)
    return value


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (non-ASCII kept readable; values JSON cannot hold become strings)."""

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, name in _EVENT_KEYS.items():
            if key in extras:
                line[name] = extras.pop(key)
        data = extras.pop("data", None)
        for key, value in extras.items():
            line[key if key not in _OWN_KEYS else f"extra_{key}"] = value
        if data is not None:
            line["data"] = data
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        redactor = known_secrets()
        if redactor:  # through JSON first: values of any type become the strings that will be written
            line = redactor.deep(json.loads(json.dumps(line, ensure_ascii=False, default=str)))
        return _text(json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":")))


def _level(level: int | str) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ConfigError(f"Unknown log level `{level}`; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL.")
    return number


def configure(level: int | str = "INFO", stream: IO[str] | None = None, *, propagate: bool = False) -> logging.Handler:
    """Send the ``kasloop`` logger's records to ``stream`` (default: stderr) as JSON lines; returns the handler.

    Idempotent: a second call replaces the handler the first one installed (new level, new stream)
    instead of adding another, so every record is written once. ``propagate=False`` (the default)
    keeps root handlers an application installed from printing kasloop's records a second time,
    in another format.
    """
    number = _level(level)
    logger = logging.getLogger("kasloop")
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _MARK, True)
    logger.addHandler(handler)
    logger.setLevel(number)
    logger.propagate = propagate
    return handler


def _message(kind: str, data: Mapping[str, Any]) -> str:
    """A short human line for the event; the full fields are in ``data``."""
    if kind == "tool":
        state = "ok" if data.get("ok") else f"failed ({data.get('error_kind') or 'error'})"
        return f"tool {data.get('tool', '?')} {state}"
    if kind == "decide":
        calls = data.get("calls") or []
        return f"decide: {len(calls)} call(s)" if calls else "decide: no call, goal done"
    if kind == "approval_decision":
        said = f" ({data['reason']})" if data.get("reason") else ""
        return f"approval {data.get('approval_id', '?')}: {data.get('decision', '?')}{said}"
    if kind in ("error", "self_diagnose"):
        return f"{kind}: {str(data.get('message', ''))[:200]}"
    return kind


def log_event(thread: str, step: int, kind: str, data: Mapping[str, Any] | None = None) -> None:
    """Log one event-log row through ``kasloop.events`` at INFO (filter by ``kind``, not by level)."""
    fields = dict(data or {})
    logging.getLogger(EVENTS_LOGGER).info(_message(kind, fields), extra={"thread_id": thread, "step": step, "kind": kind, "data": fields})
