"""The tool contract: a typed function plus the metadata gating and act need.

A tool is a pydantic args model (its JSON schema is what the model sees), a
name, a description, a risk, an idempotent flag, a timeout and an output
limit. ``run_tool`` validates, runs with a timeout, classifies every failure
and truncates output head + tail, so no tool raises into the graph.

Which arguments are paths, URLs or hosts comes from the args model itself:
a field declares its kind in its schema metadata,
``Field(description=..., json_schema_extra=arg_meta("path"))`` (or the
literal ``{"kasloop": "path"}``), and :attr:`Tool.path_args`,
:attr:`Tool.url_args` and :attr:`Tool.host_args` are computed from that, so
rules (``kasloop.policy``) and the protected-path check in :func:`run_tool`
see every one, for every tool present and future. A path argument may also
say which files tool it amounts to (``acts_as="files_delete"`` for the
source of a move) and whether it names a whole tree (``tree=True``: moving or
deleting a folder touches everything in it).

A tool family's settings (``tool_settings.<family>`` in kasloop.toml, ``ToolContext.extra[<family>]``) are
one pydantic model per family, a :class:`ToolSettings` subclass: unknown keys and wrong types are refused,
and :meth:`ToolSettings.from_context` turns the first problem into one ``permanent`` line that names the
key and the fix (:class:`SettingsFailure`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

from langgraph.errors import GraphBubbleUp
from pydantic import BaseModel, ConfigDict, ValidationError

from kasloop.policy import PATH_ARGS
from kasloop.protected import ProtectedPaths
from kasloop.state import ToolErrorKind

__all__ = [
    "ARG_KIND_KEY",
    "ArgKind",
    "ArgSpec",
    "BAD_ARGS_TEMPLATE",
    "PROTECTED_TEMPLATE",
    "ReconcileFunc",
    "SettingsFailure",
    "UNKNOWN_TOOL_TEMPLATE",
    "Tool",
    "ToolContext",
    "ToolErrorKind",
    "ToolFailure",
    "ToolResources",
    "ToolResult",
    "ToolSettings",
    "UNTRUSTED_FAMILIES",
    "arg_meta",
    "arg_specs",
    "check_protected",
    "openai_schema",
    "protected_refusal",
    "run_tool",
    "settings_failure",
    "text_safe",
    "truncate",
]

# Text the model reads (kept apart from the messages people read in kasloop.errors).
UNKNOWN_TOOL_TEMPLATE = "Error: `{name}` is not one of your tools. Valid tools: {valid}. Call one of those instead."
BAD_ARGS_TEMPLATE = "Error: invalid arguments for `{name}`: {details}. Please fix your call."
DENIED_TEMPLATE = "Refused by policy: `{name}` may not be called with these arguments ({reason}). Choose another way."
PROTECTED_TEMPLATE = (
    "Refused: `{value}` ({arg}) is kasloop's own state (its home, database, config or a secret file): "
    "no tool may read, write, list, move or delete it. Choose another path."
)

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
    retry: bool = False
    """An earlier attempt of this very call started (a crash before its result was recorded, or a
    transient failure): what it did may already be there, e.g. the file it was writing."""


class ToolFailure(Exception):
    """Raised inside a tool to report a classified failure (message is shown to the model)."""

    def __init__(self, kind: ToolErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class SettingsFailure(ToolFailure):
    """A family's settings table is broken: always ``permanent``, with the family, the key and the problem apart.

    The message is one line: ``shell config `timeout`: Input should be greater than 0; fix
    tool_settings.shell in kasloop.toml``.
    """

    def __init__(self, family: str, key: str, problem: str) -> None:
        where = f" `{key}`" if key else ""
        super().__init__("permanent", f"{family} config{where}: {problem}; fix tool_settings.{family} in kasloop.toml")
        self.family = family
        self.key = key
        self.problem = problem

    def __reduce__(self) -> tuple[type[SettingsFailure], tuple[str, str, str]]:
        return (SettingsFailure, (self.family, self.key, self.problem))


class ToolSettings(BaseModel):
    """Base of every tool family's settings model: the one way a family is configured.

    A family subclasses it, names itself in ``family`` and declares its keys as fields with defaults and
    docstrings (the table may be empty)::

        class ShellSettings(ToolSettings):
            family: ClassVar[str] = "shell"
            timeout: float = Field(default=60.0, gt=0)  # default seconds per call

    and reads its table with ``ShellSettings.from_context(ctx)``. Unknown keys are refused
    (``extra="forbid"``) and values are not coerced (``strict``: ``"yes"`` is not a bool, ``"60"`` not a
    number; an int is still a valid float). A field that should accept another spelling says so itself,
    e.g. ``Field(strict=False)`` for a tuple written as a TOML list. Checks that need the call's context
    read it from the validation context (``info.context["workspace"]``, see :meth:`from_context`).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    family: ClassVar[str] = ""
    """The key of the table in ``tool_settings`` (and in ``ToolContext.extra``)."""

    @classmethod
    def from_mapping(cls, raw: Any, *, workspace: Path | None = None) -> Self:
        """Validate a settings table (``None``: all defaults).

        Raises:
            SettingsFailure: the first problem, in one line naming the key and the fix.
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise SettingsFailure(cls.family, "", f"must be a table of settings, got `{raw!r}`")
        try:
            return cls.model_validate(raw, context={"workspace": workspace})
        except ValidationError as exc:
            raise settings_failure(cls, exc) from None

    @classmethod
    def from_context(cls, ctx: ToolContext) -> Self:
        """The settings of this call: ``ctx.extra[family]`` validated, with ``ctx.workspace`` as context."""
        return cls.from_mapping(ctx.extra.get(cls.family), workspace=ctx.workspace)


def settings_failure(model: type[ToolSettings], error: ValidationError) -> SettingsFailure:
    """The first error of ``error`` as a :class:`SettingsFailure` (an unknown key lists the known ones)."""
    errors = error.errors()
    first = errors[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
        problem = f"unknown key; known keys: {', '.join(model.model_fields)}"
    elif first["type"] == "value_error" and first.get("ctx", {}).get("error") is not None:
        problem = str(first["ctx"]["error"])  # a validator's own sentence, without pydantic's "Value error, "
    else:
        problem = first["msg"]
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more)"
    return SettingsFailure(model.family, key, problem)


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


ArgKind = Literal["path", "url", "host", "text"]
"""What an argument names: a file or folder (``path``), a web address (``url``), a host name or address
(``host``), or nothing of the kind (``text``: declared on purpose, e.g. a mail folder or a file-name glob,
so the check for undeclared path-like arguments knows it was looked at)."""

ARG_KIND_KEY = "kasloop"
"""The key of a field's JSON schema metadata that declares its kind (``{"kasloop": "path"}``)."""

_ACTS_AS_KEY = "kasloop_acts_as"
_TREE_KEY = "kasloop_tree"
_ARG_KINDS = ("path", "url", "host", "text")


def arg_meta(kind: ArgKind, *, acts_as: str | None = None, tree: bool = False) -> dict[str, Any]:
    """The ``json_schema_extra`` of an argument of this kind, for ``Field(..., json_schema_extra=arg_meta("path"))``.

    Args:
        kind: ``path``, ``url``, ``host`` or ``text`` (see :data:`ArgKind`).
        acts_as: for a path: the files tool this argument amounts to for rules (``files_delete`` for the
            source of a move, ``files_write`` for its destination or a screenshot, ``files_read`` for an
            attachment): a rule that denies or asks for that tool on that path applies to this call too.
        tree: for a path: the call acts on the whole tree at that path (moving or deleting a folder), so a
            folder that *contains* a protected path is refused too.
    """
    if kind not in _ARG_KINDS:
        raise ValueError(f"argument kind must be one of {', '.join(_ARG_KINDS)}, got {kind!r}")
    meta: dict[str, Any] = {ARG_KIND_KEY: kind}
    if acts_as:
        meta[_ACTS_AS_KEY] = acts_as
    if tree:
        meta[_TREE_KEY] = True
    return meta


@dataclass(frozen=True)
class ArgSpec:
    """One declared argument: its name in the call (the alias, as the model sends it) and its kind."""

    name: str
    kind: ArgKind
    acts_as: str | None = None
    tree: bool = False


@functools.cache
def arg_specs(args_model: type[BaseModel]) -> tuple[ArgSpec, ...]:
    """The declared arguments of an args model, read from its JSON schema (top-level properties)."""
    try:
        properties = args_model.model_json_schema().get("properties", {})
    except Exception:  # noqa: BLE001 - a model without a JSON schema declares nothing
        return ()
    specs: list[ArgSpec] = []
    for name, prop in properties.items():
        kind = prop.get(ARG_KIND_KEY) if isinstance(prop, dict) else None
        if kind not in _ARG_KINDS:
            continue
        specs.append(ArgSpec(name=name, kind=kind, acts_as=prop.get(_ACTS_AS_KEY) or None, tree=bool(prop.get(_TREE_KEY))))
    return tuple(specs)


def _strip_meta(schema: dict[str, Any]) -> None:
    """Remove kasloop's declarations from a JSON schema's properties (the model does not need them;
    small models pay per token)."""
    models = [schema, *(d for d in schema.get("$defs", {}).values() if isinstance(d, dict))]
    for model in models:
        for prop in model.get("properties", {}).values():
            if isinstance(prop, dict):
                for key in (ARG_KIND_KEY, _ACTS_AS_KEY, _TREE_KEY):
                    prop.pop(key, None)


def _field_names(args_model: type[BaseModel]) -> list[str]:
    """Argument names as the model sends them (aliases where a field has one)."""
    return [info.alias or name for name, info in args_model.model_fields.items()]


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
            tools, whose result is only a receipt, say ``False``) and for a tool with no ``family``.
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
        """Results are outside content: at level 3 a side effect while one is in context needs approval.

        A tool that says nothing (``untrusted=None``) is untrusted when its family reads from outside,
        and when it has no family at all: kasloop cannot know where a user tool's text comes from.
        """
        if self.untrusted is not None:
            return self.untrusted
        return not self.family or self.family in UNTRUSTED_FAMILIES

    @property
    def declares_args(self) -> bool:
        """Whether the args model declares the kind of any argument (see :func:`arg_meta`)."""
        return bool(arg_specs(self.args_model))

    @property
    def arg_specs(self) -> tuple[ArgSpec, ...]:
        """The path, URL, host (and declared plain-text) arguments, from the args model's schema.

        A tool that declares nothing (a user tool written before declarations existed) gets its arguments
        named like paths (``kasloop.policy.PATH_ARGS``) treated as paths.
        """
        declared = arg_specs(self.args_model)
        if declared:
            return declared
        return tuple(ArgSpec(name=name, kind="path") for name in _field_names(self.args_model) if name in PATH_ARGS)

    @property
    def path_args(self) -> tuple[str, ...]:
        """Arguments that name files or folders: rules match them as paths, protected paths are refused."""
        return tuple(spec.name for spec in self.arg_specs if spec.kind == "path")

    @property
    def url_args(self) -> tuple[str, ...]:
        """Arguments that are web addresses (a rule's ``url`` key matches any of them, ``host`` their host)."""
        return tuple(spec.name for spec in self.arg_specs if spec.kind == "url")

    @property
    def host_args(self) -> tuple[str, ...]:
        """Arguments that are host names or addresses (a rule's ``host`` key matches any of them)."""
        return tuple(spec.name for spec in self.arg_specs if spec.kind == "host")

    @property
    def path_acts_as(self) -> dict[str, str]:
        """Path argument → the files tool it amounts to for rules (``files_move``: source → files_delete)."""
        return {spec.name: spec.acts_as for spec in self.arg_specs if spec.kind == "path" and spec.acts_as}

    @property
    def tree_args(self) -> tuple[str, ...]:
        """Path arguments whose whole tree the call acts on (a folder holding a protected path is refused)."""
        return tuple(spec.name for spec in self.arg_specs if spec.kind == "path" and spec.tree)

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.output_limit < 100:
            raise ValueError(f"output_limit must be >= 100, got {self.output_limit}")


def openai_schema(tool: Tool) -> dict[str, Any]:
    """The OpenAI function schema the model sees, generated from the args model."""
    params = tool.args_model.model_json_schema()
    _strip_meta(params)
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


def text_safe(text: str) -> str:
    """``text`` with every lone surrogate written out, so it can be stored as UTF-8 (JSON, checkpoints).

    A file name that is not valid UTF-8 reaches Python as surrogate escapes (``os.fsdecode``); its bytes are
    shown as ``\\xNN``, any other lone surrogate as ``\\uNNNN``.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out: list[str] = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _safe_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` as it is when it is storable as UTF-8 JSON, else with every string made :func:`text_safe`."""
    try:
        json.dumps(metadata, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return _safe_value(metadata)  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        pass  # not JSON at all: the ledger's own serialisation decides
    return metadata


def _safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return text_safe(value)
    if isinstance(value, dict):
        return {_safe_value(k): _safe_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe_value(v) for v in value]
    return value


def _path_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _shown(value: str) -> str:
    shown = text_safe(value)
    return shown if len(shown) <= 200 else shown[:199] + "…"


def check_protected(tool: Tool, args: Mapping[str, Any], ctx: ToolContext) -> ToolResult | None:
    """The refusal of a call that names one of kasloop's protected paths, or None.

    Every path argument of ``tool`` (:attr:`Tool.path_args`) is resolved as the tool would resolve it:
    against ``ctx.workspace`` (absolute paths as they are), ``..`` and symlinks followed; the lexical and
    the resolved spelling are both checked, case-insensitively, and an existing file by inode (a hard link).
    A path argument with ``tree`` (moving or deleting a folder) is also refused when it *holds* a protected
    path. This runs for every tool, whether or not its paths are jailed to the workspace.
    """
    protected = ctx.resources.protected
    if not protected:
        return None
    tree = set(tool.tree_args)
    for name in tool.path_args:
        for value in _path_values(args.get(name)):
            if "\x00" in value:
                continue  # the tool refuses it as bad arguments
            try:
                candidate = Path(value)
                target = candidate if candidate.is_absolute() else Path(ctx.workspace) / candidate
                hit = protected.violation(target, containing=name in tree)
            except (OSError, ValueError):
                continue
            if hit is not None:
                return protected_refusal(value, f"argument `{name}`")
    return None


def protected_refusal(value: str, where: str) -> ToolResult:
    """The ``denied`` result for a call that would touch kasloop's own state at ``value`` (``where``: which argument)."""
    message = PROTECTED_TEMPLATE.format(value=_shown(value), arg=where)
    return ToolResult(ok=False, output=message, error_kind="denied", metadata={"protected": True})


def _finish(result: ToolResult, limit: int) -> ToolResult:
    return ToolResult(
        ok=result.ok, output=truncate(text_safe(result.output), limit), error_kind=result.error_kind, metadata=_safe_metadata(result.metadata)
    )


async def run_tool(tool: Tool, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Validate, refuse protected paths, run with a timeout, classify failures, truncate output.

    Never raises a tool's error; the output is always storable as UTF-8 (see :func:`text_safe`).
    """
    try:
        parsed = tool.args_model.model_validate(args)
    except ValidationError as exc:
        details = text_safe(_validation_details(exc))
        return ToolResult(ok=False, output=BAD_ARGS_TEMPLATE.format(name=tool.name, details=details), error_kind="bad_args")
    try:
        values = parsed.model_dump(by_alias=True)
    except Exception:  # noqa: BLE001 - an exotic args model: check what the model sent
        values = dict(args)
    refused = check_protected(tool, values, ctx)
    if refused is not None:
        return refused
    limit = tool.output_limit
    try:
        outcome = await asyncio.wait_for(tool.func(parsed, ctx), timeout=tool.timeout)
    except GraphBubbleUp:
        raise
    except ToolFailure as exc:
        return _finish(ToolResult(ok=False, output=f"Error: {exc.message}", error_kind=exc.kind), limit)
    except TimeoutError:
        return ToolResult(ok=False, output=f"Error: `{tool.name}` timed out after {tool.timeout:g} s.", error_kind="timeout")
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        return _finish(ToolResult(ok=False, output=f"Error: {type(exc).__name__}: {exc}", error_kind="transient"), limit)
    except Exception as exc:  # noqa: BLE001 - a tool's bug must not crash the loop
        return _finish(ToolResult(ok=False, output=f"Error: {type(exc).__name__}: {exc}", error_kind="permanent"), limit)
    if isinstance(outcome, ToolResult):
        return _finish(outcome, limit)
    text = outcome if isinstance(outcome, str) else json.dumps(outcome, default=str)
    return _finish(ToolResult(ok=True, output=text, metadata={"chars": len(text)}), limit)
