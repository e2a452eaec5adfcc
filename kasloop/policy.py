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
from pathlib import Path
from typing import Any, Literal

from kasloop.config import PolicyRule, Risk, RuleAction

__all__ = ["PATH_ARGS", "TAINTED_REASON", "Gate", "arg_hash", "canonical_args", "gate_call", "matching_rule_action"]

PATH_ARGS = frozenset({"path", "src", "dest", "destination", "cwd", "directory"})
"""Argument names holding workspace paths: rules match their canonical form."""

Gate = Literal["allow", "ask", "deny"]

_STRICTNESS: dict[RuleAction, int] = {"allow": 0, "ask": 1, "deny": 2}


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
        except (ValueError, OSError):
            pass  # outside the workspace: the tool's jail refuses it; match the normalised text
    return posixpath.normpath(value).removeprefix("./")


def canonical_args(args: dict[str, Any], workspace: Path | None = None) -> dict[str, Any]:
    """Arguments as rules see them: path arguments normalised (``./a/../b`` → ``b``).

    With ``workspace``, paths are also resolved (symlinks, absolute paths inside
    it) to the workspace-relative path the tool will touch, so no spelling of
    a path evades a rule about it.
    """
    return {
        key: _canonical_path(value, workspace) if key in PATH_ARGS and isinstance(value, str) and value else value
        for key, value in args.items()
    }


def _rule_matches(rule: PolicyRule, tool: str, args: dict[str, Any]) -> bool:
    if not fnmatch.fnmatchcase(tool, rule.tool):
        return False
    for name, pattern in rule.args.items():
        if name not in args or not fnmatch.fnmatchcase(_arg_text(args[name]), pattern):
            return False
    return True


def matching_rule_action(
    rules: list[PolicyRule], tool: str, args: dict[str, Any], *, workspace: Path | None = None
) -> RuleAction | None:
    """The strictest action among the rules that match this call (deny > ask > allow), or None.

    Path arguments are compared in canonical form (see ``canonical_args``).
    """
    if not rules:
        return None
    canonical = canonical_args(args, workspace)
    actions = [rule.action for rule in rules if _rule_matches(rule, tool, canonical)]
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
