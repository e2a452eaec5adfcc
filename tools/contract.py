"""The tool contract: a typed function plus the metadata gating and act need.

A tool is a pydantic args model (its JSON schema is what the model sees), a
name, a description, a risk, an idempotent flag, a timeout and an output
limit (:class:`Tool`); it gets a :class:`ToolContext` and answers with a
:class:`ToolResult` or raises a :class:`ToolFailure`. Running one (validation,
timeout, classification, truncation) is :mod:`kasloop.tools.run`; a family's
settings are :mod:`kasloop.tools.settings`; both build on the types here.

Which arguments are paths, URLs or hosts comes from the args model itself:
a field declares its kind in its schema metadata,
``Field(description=..., json_schema_extra=arg_meta("path"))`` (or the
literal ``{"kasloop": "path"}``), and :attr:`Tool.path_args`,
:attr:`Tool.url_args` and :attr:`Tool.host_args` are computed from that, so
rules (``kasloop.guardrails.policy``) and the protected-path check in
:func:`kasloop.tools.run.run_tool` see every one, for every tool present and
future. A path argument may also say which files tool it amounts to
(``acts_as="files_delete"`` for the source of a move) and whether it names a
whole tree (``tree=True``: moving or deleting a folder touches everything in it).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from kasloop.guardrails.policy import PATH_ARGS
from kasloop.state import ToolErrorKind
from kasloop.tools.resources import ToolResources

__all__ = [
    "ARG_KIND_KEY",
    "DEFAULT_OUTPUT_LIMIT",
    "ArgKind",
    "ArgSpec",
    "ReconcileFunc",
    "Tool",
    "ToolContext",
    "ToolFailure",
    "ToolFunc",
    "ToolResult",
    "UNTRUSTED_FAMILIES",
    "arg_meta",
    "arg_specs",
    "openai_schema",
]

UNTRUSTED_FAMILIES = frozenset({"http", "browser", "email", "telegram", "webhook"})
"""Families whose results come from outside (anyone can write a web page, a mail or a chat message)."""

DEFAULT_OUTPUT_LIMIT = 4000


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
        observes: whether calling it again may return something new (a status, a file, a page), so a repeat
            is a poll, never refused as a repeat (see ``kasloop.nodes.observations``); ``None``: yes for risk ``read``.
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
    observes: bool | None = None

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
        named like paths (``kasloop.guardrails.policy.PATH_ARGS``) treated as paths.
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
