"""The tool contract: a typed function plus the metadata gating and act need.

A tool is a pydantic args model (its JSON schema is what the model sees), a
name, a description, a risk, an idempotent flag, a timeout and an output
limit. ``run_tool`` validates, runs with a timeout, classifies every failure
and truncates output head + tail, so no tool raises into the graph.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from langgraph.errors import GraphBubbleUp
from pydantic import BaseModel, ValidationError

from kasloop.protected import ProtectedPaths

__all__ = [
    "BAD_ARGS_TEMPLATE",
    "ReconcileFunc",
    "UNKNOWN_TOOL_TEMPLATE",
    "Tool",
    "ToolContext",
    "ToolFailure",
    "ToolResources",
    "ToolResult",
    "UNTRUSTED_FAMILIES",
    "openai_schema",
    "run_tool",
    "truncate",
]

ToolErrorKind = Literal["transient", "bad_args", "denied", "permanent", "timeout", "outcome_unknown"]

# Text the model reads (kept apart from the messages people read in kasloop.errors).
UNKNOWN_TOOL_TEMPLATE = "Error: `{name}` is not one of your tools. Valid tools: {valid}. Call one of those instead."
BAD_ARGS_TEMPLATE = "Error: invalid arguments for `{name}`: {details}. Please fix your call."
DENIED_TEMPLATE = "Refused by policy: `{name}` may not be called with these arguments ({reason}). Choose another way."

UNTRUSTED_FAMILIES = frozenset({"http", "browser", "email", "telegram", "webhook"})
"""Families whose results come from outside (anyone can write a web page, a mail or a chat message)."""

DEFAULT_OUTPUT_LIMIT = 4000
DEFAULT_HEAD = 2000
DEFAULT_TAIL = 1000


_log = logging.getLogger("kasloop.tools")
T = TypeVar("T")


class ToolResources:
    """What the tools of one agent share across calls, and close together at shutdown.

    A tool call is short, but some things a tool needs are not: one browser per
    agent is reused by every browser call, and the process family must find the
    processes it started in an earlier run. So an agent owns one
    ``ToolResources``: a state folder (``home``), the kasloop database when
    there is one, and named long-lived objects created on first use by
    :meth:`shared` and closed, newest first, by :meth:`aclose`.

    Args:
        home: folder for tool state (process logs); a fresh temporary folder when omitted.
        database: the open kasloop ``Database`` (``None`` for a graph without one).
        protected: paths no tool may touch (``kasloop.protected``); default: ``home`` itself.
    """

    def __init__(self, *, home: Path | None = None, database: Any = None, protected: ProtectedPaths | None = None) -> None:
        self._home = home
        self.database = database
        self.protected = protected if protected is not None else ProtectedPaths(() if home is None else (home,))
        """kasloop's own files (home, database, config, secret files): no tool may touch them."""
        self._objects: dict[str, Any] = {}
        self._closers: list[tuple[str, Callable[[Any], Awaitable[None]]]] = []
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def home(self) -> Path:
        if self._home is None:
            self._home = Path(tempfile.mkdtemp(prefix="kasloop-tools-"))
        self._home.mkdir(parents=True, exist_ok=True)
        return self._home

    async def shared(
        self, key: str, factory: Callable[[], Awaitable[T]], close: Callable[[T], Awaitable[None]] | None = None
    ) -> T:
        """The object stored under ``key``, created by ``factory`` on first use (once, even under concurrency)."""
        if key in self._objects:
            return self._objects[key]  # type: ignore[no-any-return]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._objects:
                obj = await factory()
                self._objects[key] = obj
                if close is not None:
                    self._closers.append((key, close))
        return self._objects[key]  # type: ignore[no-any-return]

    async def discard(self, key: str) -> None:
        """Close and forget one shared object (a crashed browser), so the next call creates a new one."""
        obj = self._objects.pop(key, None)
        for index, (name, close) in enumerate(self._closers):
            if name == key:
                del self._closers[index]
                if obj is not None:
                    await _close_quietly(name, close, obj)
                break

    async def aclose(self) -> None:
        """Close every shared object, newest first; a failing close is logged, not raised."""
        while self._closers:
            key, close = self._closers.pop()
            obj = self._objects.pop(key, None)
            if obj is not None:
                await _close_quietly(key, close, obj)
        self._objects.clear()


async def _close_quietly(key: str, close: Callable[[Any], Awaitable[None]], obj: Any) -> None:
    try:
        await close(obj)
    except Exception as exc:  # noqa: BLE001 - shutdown must close everything else too
        _log.warning("closing tool resource %s failed: %s", key, exc)


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """What a tool may know about its run: its jail, its idempotency key, its settings and shared resources."""

    workspace: Path
    thread_id: str = "default"
    idempotency_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    resources: ToolResources = field(default_factory=ToolResources)
    state: Mapping[str, Any] = field(default_factory=dict)
    """The calling agent's state, read-only: for tools that run agents (``delegate`` needs the usage
    so far, to hand a specialist only the budget that is left)."""
    run: Any = None
    """The calling agent's ``RunContext`` (its policy, read-only), for the same tools."""


class ToolFailure(Exception):
    """Raised inside a tool to report a classified failure (message is shown to the model)."""

    def __init__(self, kind: ToolErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """What act records and what the model sees."""

    ok: bool
    output: str
    error_kind: ToolErrorKind | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "output": self.output, "error_kind": self.error_kind, "metadata": self.metadata}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolResult:
        return cls(ok=data["ok"], output=data["output"], error_kind=data.get("error_kind"), metadata=data.get("metadata") or {})


ToolFunc = Callable[[Any, ToolContext], Awaitable["str | ToolResult"]]
ReconcileFunc = Callable[[Any, ToolContext], Awaitable["bool | None"]]
"""``async (args, ctx) -> True | False | None``: after a crash, did the call with this idempotency key take effect?"""


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A tool: typed arguments, a risk, and an async function.

    Args:
        name: ``family_verb``, unique in the registry.
        description: one sentence for the model (keep it short: small models pay per token).
        args_model: pydantic model of the arguments.
        func: ``async (args, ctx) -> str | ToolResult``; raise ``ToolFailure`` for classified errors.
        risk: ``read`` (no side effect), ``low`` (reversible, in the workspace), ``high``, ``critical``.
        idempotent: running it twice with the same arguments has the effect of running it once.
        timeout: seconds before the call is cancelled and reported as ``timeout``.
        output_limit: characters of output the model sees (head + tail beyond it).
        reconcile: for a non-idempotent tool, ``async (args, ctx) -> bool | None`` that finds out whether
            an interrupted call took effect (``ctx.idempotency_key`` is the key that call used): ``True``
            it did, ``False`` it certainly did not (act runs it), ``None`` cannot tell (outcome unknown).
            E.g. ``email_send`` looks for its Message-ID in the sent-mail folder.
        alternates: tools to try instead when this one fails for good (e.g. ``http_get`` → ``browser_open``):
            self_diagnose runs the first one the thread may call without asking, with the arguments
            both tools share.
        untrusted: whether results carry outside content (a page, a mail, a chat message) that may hold
            injected instructions; ``None``: yes for the families in ``UNTRUSTED_FAMILIES`` (their sending
            tools, whose result is only a receipt, say ``False``).
    """

    name: str
    description: str
    args_model: type[BaseModel]
    func: ToolFunc
    risk: Literal["read", "low", "high", "critical"]
    idempotent: bool
    timeout: float = 30.0
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    family: str = ""
    reconcile: ReconcileFunc | None = None
    untrusted: bool | None = None
    alternates: tuple[str, ...] = ()

    @property
    def returns_untrusted(self) -> bool:
        """Results are outside content: at level 3 a side effect while one is in context needs approval."""
        return self.untrusted if self.untrusted is not None else self.family in UNTRUSTED_FAMILIES

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.output_limit < 100:
            raise ValueError(f"output_limit must be >= 100, got {self.output_limit}")


def openai_schema(tool: Tool) -> dict[str, Any]:
    """The OpenAI function schema the model sees, generated from the args model."""
    params = tool.args_model.model_json_schema()
    params.pop("title", None)
    for prop in params.get("properties", {}).values():
        prop.pop("title", None)
    return {"type": "function", "function": {"name": tool.name, "description": tool.description, "parameters": params}}


def truncate(text: str, limit: int = DEFAULT_OUTPUT_LIMIT) -> str:
    """Keep the head and the tail of long output, with a marker saying how much was cut.

    The split keeps the default 2:1 head-to-tail ratio (2,000 + 1,000 of a
    4,000 limit), leaving room for the marker.
    """
    if len(text) <= limit:
        return text
    head = limit * DEFAULT_HEAD // DEFAULT_OUTPUT_LIMIT
    tail = limit * DEFAULT_TAIL // DEFAULT_OUTPUT_LIMIT
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[-tail:]}"


def _validation_details(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


async def run_tool(tool: Tool, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Validate, run with a timeout, classify failures, truncate output. Never raises a tool's error."""
    try:
        parsed = tool.args_model.model_validate(args)
    except ValidationError as exc:
        return ToolResult(ok=False, output=BAD_ARGS_TEMPLATE.format(name=tool.name, details=_validation_details(exc)), error_kind="bad_args")
    try:
        outcome = await asyncio.wait_for(tool.func(parsed, ctx), timeout=tool.timeout)
    except GraphBubbleUp:
        raise
    except ToolFailure as exc:
        return ToolResult(ok=False, output=truncate(f"Error: {exc.message}", tool.output_limit), error_kind=exc.kind)
    except TimeoutError:
        return ToolResult(ok=False, output=f"Error: `{tool.name}` timed out after {tool.timeout:g} s.", error_kind="timeout")
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        return ToolResult(ok=False, output=f"Error: {type(exc).__name__}: {exc}", error_kind="transient")
    except Exception as exc:  # noqa: BLE001 - a tool's bug must not crash the loop
        return ToolResult(ok=False, output=truncate(f"Error: {type(exc).__name__}: {exc}", tool.output_limit), error_kind="permanent")
    if isinstance(outcome, ToolResult):
        return ToolResult(ok=outcome.ok, output=truncate(outcome.output, tool.output_limit), error_kind=outcome.error_kind, metadata=outcome.metadata)
    text = outcome if isinstance(outcome, str) else json.dumps(outcome, default=str)
    return ToolResult(ok=True, output=truncate(text, tool.output_limit), metadata={"chars": len(text)})
