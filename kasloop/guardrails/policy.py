"""Deterministic gating: which tool calls run, which wait for a human, which are refused.

No model is consulted here. The inputs are the thread's autonomy level, the
tool's declared risk, the configured rules and whether untrusted content was
read this cycle; nothing the model writes or a tool returns can change them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from kasloop.config.schema import PolicyRule, Risk, RuleAction

__all__ = [
    "GENERIC_ARG_KEYS",
    "PATH_ARGS",
    "TAINTED_REASON",
    "CallShape",
    "Gate",
    "arg_hash",
    "call_shape",
    "canonical_args",
    "gate_call",
    "matching_rule_action",
    "use_builtin_tools",
]

PATH_ARGS = frozenset({"path", "src", "source", "dest", "destination", "cwd", "directory"})
"""Argument names treated as workspace paths for a tool that declares none (``Tool.path_args`` is the rule)."""

GENERIC_ARG_KEYS = frozenset({"path", "url", "host"})
"""Rule ``args`` keys that stand for a kind of argument: ``path`` matches any path argument of the call,
``url`` any URL argument, ``host`` any host argument and the host of any URL argument."""

Gate = Literal["allow", "ask", "deny"]

_STRICTNESS: dict[RuleAction, int] = {"allow": 0, "ask": 1, "deny": 2}


_builtin_tools: Callable[[], Mapping[str, Any]] | None = None


def use_builtin_tools(lookup: Callable[[], Mapping[str, Any]]) -> None:
    """Where :func:`call_shape` looks a tool name up: ``kasloop.tools.registry`` passes its ``all_tools``
    when it is imported (which importing ``kasloop`` always does).

    Passed in, not imported: the tools import this module (``Tool.path_args`` defaults to :data:`PATH_ARGS`),
    so it is below them and must not import them.
    """
    global _builtin_tools
    _builtin_tools = lookup


@dataclass(frozen=True)
class CallShape:
    """Which arguments of one tool are paths, URLs and hosts, and which files tool each path amounts to."""

    name: str
    path_args: tuple[str, ...] = ()
    url_args: tuple[str, ...] = ()
    host_args: tuple[str, ...] = ()
    acts_as: Mapping[str, str] = field(default_factory=dict)


def call_shape(tool: Any, args: Mapping[str, Any] | None = None) -> CallShape:
    """The shape of a call to ``tool``: a ``Tool`` (its declared arguments), or a tool name.

    A name is looked up among kasloop's built-in tools (see :func:`use_builtin_tools`); an unknown name
    (a user tool) gets the arguments named in :data:`PATH_ARGS` as paths and ``url``/``host`` by name.
    """
    if isinstance(tool, str):
        known = _builtin_tools().get(tool) if _builtin_tools is not None else None
        if known is None:
            present = set(args or {})
            return CallShape(
                name=tool,
                path_args=tuple(sorted(PATH_ARGS & present)),
                url_args=("url",) if "url" in present else (),
                host_args=("host",) if "host" in present else (),
            )
        tool = known
    return CallShape(
        name=tool.name,
        path_args=tuple(tool.path_args),
        url_args=tuple(tool.url_args),
        host_args=tuple(tool.host_args),
        acts_as=dict(tool.path_acts_as),
    )


def arg_hash(tool: str, args: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of tool + args: what an approval is bound to."""
    canonical = json.dumps({"tool": tool, "args": args}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _arg_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _canonical_path(value: str, workspace: Path | None) -> str:
    if workspace is not None:
        root = workspace.resolve()
        try:
            target = (Path(value) if Path(value).is_absolute() else root / value).resolve()
            return target.relative_to(root).as_posix()
        except (ValueError, OSError, RuntimeError):
            pass  # outside the workspace: the tool's jail refuses it; match the normalised text
    return posixpath.normpath(value).removeprefix("./")


def _canonical_value(value: Any, workspace: Path | None) -> Any:
    if isinstance(value, str) and value:
        return _canonical_path(value, workspace)
    if isinstance(value, list):
        return [_canonical_path(v, workspace) if isinstance(v, str) and v else v for v in value]
    return value


def canonical_args(
    args: Mapping[str, Any], workspace: Path | None = None, *, path_args: Iterable[str] | None = None
) -> dict[str, Any]:
    """Arguments as rules see them: path arguments normalised (``./a/../b`` → ``b``).

    ``path_args`` names the path arguments (``Tool.path_args``; default :data:`PATH_ARGS`); a list of
    paths is normalised item by item. With ``workspace``, paths are also resolved (symlinks, absolute
    paths inside it) to the workspace-relative path the tool will touch, so no spelling of a path
    evades a rule about it.
    """
    names = PATH_ARGS if path_args is None else frozenset(path_args)
    return {key: _canonical_value(value, workspace) if key in names else value for key, value in args.items()}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _host(url: str) -> str | None:
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


def _values(key: str, shape: CallShape, args: Mapping[str, Any]) -> list[str] | None:
    """The strings a rule's ``key`` is matched against in this call, or None when the call has none.

    A generic key (``path``, ``url``, ``host``) stands for every argument of that kind; any other key is
    the argument of that name (each item of a list of paths).
    """
    if key == "path" and shape.path_args:
        found = [v for name in shape.path_args for v in _strings(args.get(name))]
        return found or None
    if key == "url" and shape.url_args:
        found = [v for name in shape.url_args for v in _strings(args.get(name))]
        return found or None
    if key == "host" and (shape.host_args or shape.url_args):
        hosts = [v.lower().rstrip(".") for name in shape.host_args for v in _strings(args.get(name))]
        hosts += [h for name in shape.url_args for v in _strings(args.get(name)) if (h := _host(v))]
        return hosts or None
    if key not in args:
        return None
    if key in shape.path_args and isinstance(args[key], list):
        return _strings(args[key]) or None
    return [_arg_text(args[key])]


def _rule_matches(rule: PolicyRule, name: str, args: Mapping[str, Any], shape: CallShape) -> bool:
    """Whether ``rule`` matches the call. Where a key stands for several values (every path of a move,
    every attachment), a deny or ask rule matches when any of them matches, an allow rule only when all
    do: an allow must cover everything the call touches."""
    if not fnmatch.fnmatchcase(name, rule.tool):
        return False
    for key, pattern in rule.args.items():
        values = _values(key, shape, args)
        if values is None:
            return False
        hits = [fnmatch.fnmatchcase(v, pattern) for v in values]
        if not (all(hits) if rule.action == "allow" else any(hits)):
            return False
    return True


def _landing(shape: CallShape, canonical: dict[str, Any], workspace: Path | None) -> dict[str, Any]:
    """A move's destination that is an existing folder means the file lands inside it: rules see that path."""
    sources = [v for name, acts in shape.acts_as.items() if acts == "files_delete" for v in _strings(canonical.get(name))]
    if workspace is None or not sources:
        return canonical
    root = workspace.resolve()
    landed = dict(canonical)
    for name, acts in shape.acts_as.items():
        if acts != "files_write" or not isinstance(canonical.get(name), str):
            continue
        folder = root / canonical[name]
        try:
            is_folder = folder.is_dir() and not folder.is_symlink()
        except OSError:
            is_folder = False
        if is_folder:
            landed[name] = posixpath.normpath(posixpath.join(canonical[name], posixpath.basename(sources[0])))
    return landed


def matching_rule_action(
    rules: list[PolicyRule], tool: Any, args: Mapping[str, Any], *, workspace: Path | None = None
) -> RuleAction | None:
    """The strictest action among the rules that match this call (deny > ask > allow), or None.

    ``tool`` is the ``Tool`` called (or its name: kasloop's built-in tools are looked up, others fall
    back to :data:`PATH_ARGS`). Every path argument is compared in canonical form (see
    ``canonical_args``); a rule's ``path`` key matches any path argument (``files_move``'s ``source``
    and ``destination`` alike), ``url`` any URL argument, ``host`` any host or URL's host.

    A path argument that amounts to another files tool is also judged as that tool: a move is a
    ``files_delete`` of its source and a ``files_write`` of its destination, an attachment a
    ``files_read``; a deny or ask rule on those applies (an allow rule on them never loosens this call).
    """
    if not rules:
        return None
    shape = call_shape(tool, args)
    canonical = _landing(shape, canonical_args(args, workspace, path_args=shape.path_args), workspace)
    actions = [rule.action for rule in rules if _rule_matches(rule, shape.name, canonical, shape)]
    for arg, acts_as in shape.acts_as.items():
        if acts_as == shape.name:
            continue
        as_shape = CallShape(name=acts_as, path_args=("path",))
        for value in _strings(canonical.get(arg)):
            as_args = {"path": value}
            actions += [
                rule.action for rule in rules if rule.action != "allow" and _rule_matches(rule, acts_as, as_args, as_shape)
            ]
    if not actions:
        return None
    return max(actions, key=_STRICTNESS.__getitem__)


TAINTED_REASON = "a side effect after untrusted content was read"


def gate_call(
    *,
    autonomy: int,
    risk: Risk,
    rule_action: RuleAction | None = None,
    tainted: bool = False,
) -> tuple[Gate, str]:
    """Decide one call: ``allow``, ``ask`` or ``deny``, with the reason a human will see.

    Rules beat levels: ``deny`` is final everywhere, ``ask`` always asks, ``allow``
    runs without asking unless, at level 3, it is a side effect after untrusted
    content was read. Without a rule, level 2 asks for everything, level 3 asks
    for ``high``/``critical`` risk and for side effects after untrusted content,
    level 4 asks for nothing.
    """
    side_effect = risk != "read"
    if rule_action == "deny":
        return "deny", "refused by a deny rule in the policy"
    if rule_action == "ask":
        return "ask", "an `ask` rule in the policy matches this call"
    if autonomy == 3 and tainted and side_effect:
        return "ask", TAINTED_REASON
    if rule_action == "allow":
        return "allow", "an `allow` rule in the policy matches this call"
    if autonomy == 2:
        return "ask", "autonomy level 2 (copilot) approves every tool call"
    if autonomy == 3 and risk in ("high", "critical"):
        return "ask", f"risk `{risk}` needs approval at autonomy level 3"
    return "allow", f"risk `{risk}` runs without approval at autonomy level {autonomy}"
