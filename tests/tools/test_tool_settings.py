"""One way to configure a tool family (tools/base.py ``ToolSettings``), and one error-kind type.

The shell and process families read their ``tool_settings`` table through a ``ToolSettings``
model: unknown keys and wrong types are refused with one ``permanent`` line naming the key and
the fix, at a tool call and when the config is loaded. The tool error kinds are declared once
(``kasloop.state.ToolErrorKind``) and the state's kinds are built from them.
"""

from __future__ import annotations

import ast
import pickle
import typing
from pathlib import Path
from typing import Any

import pytest

from kasloop.errors import ConfigError
from kasloop.state import ErrorInfo, ErrorKind, ToolErrorKind
from kasloop.tools.base import SettingsFailure, ToolContext, ToolFailure, ToolResult, ToolSettings, run_tool
from kasloop.tools.process import PROCESS_TOOLS, ProcessSettings
from kasloop.tools.registry import check_tool_settings
from kasloop.tools.sandbox import SANDBOX_MODES
from kasloop.tools.shell import SHELL_TOOLS, ShellPolicy, ShellSettings

REPO = Path(__file__).resolve().parents[2]
SHELL = SHELL_TOOLS[0]
PROCESS_START = next(t for t in PROCESS_TOOLS if t.name == "process_start")
FAMILIES: list[type[ToolSettings]] = [ShellSettings, ProcessSettings]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def one_line(message: str) -> None:
    assert "\n" not in message and message.strip() == message, repr(message)


# --------------------------------------------------------------------------- the settings models


@pytest.mark.parametrize("model", FAMILIES, ids=lambda m: m.family)
def test_every_family_model_forbids_unknown_keys_and_has_only_defaults(model: type[ToolSettings]) -> None:
    assert issubclass(model, ToolSettings)
    assert model.model_config.get("extra") == "forbid" and model.model_config.get("strict") is True
    assert model.family and all(not field.is_required() for field in model.model_fields.values())
    assert model.from_mapping(None) == model.from_mapping({}) == model()


def test_the_shell_sandbox_choices_are_the_sandbox_modes() -> None:
    assert typing.get_args(ShellSettings.model_fields["sandbox"].annotation) == SANDBOX_MODES


@pytest.mark.parametrize(
    ("family", "raw", "key", "problem"),
    [
        ("shell", {"nope": 1}, "nope", "unknown key; known keys: allow, allow_defaults, deny, path"),
        ("shell", {"allow": "ls"}, "allow", "valid list"),
        ("shell", {"allow": ["ls", 5]}, "allow.1", "valid string"),
        ("shell", {"allow_defaults": "yes"}, "allow_defaults", "valid boolean"),
        ("shell", {"network": 1}, "network", "valid boolean"),
        ("shell", {"timeout": "60"}, "timeout", "valid number"),
        ("shell", {"timeout": True}, "timeout", "valid number"),
        ("shell", {"timeout": 0}, "timeout", "greater than 0"),
        ("shell", {"max_timeout": 10_000}, "max_timeout", "less than or equal to 600"),
        ("shell", {"sandbox": "docker"}, "sandbox", "'bwrap' or 'none'"),
        ("shell", {"path": ["relative/bin"]}, "path", "absolute folders outside the workspace, got `relative/bin`"),
        ("shell", {"path": ["{ws}/bin"]}, "path", "absolute folders outside the workspace"),
        ("process", {"nope": 1}, "nope", "unknown key; known keys: max_running, kill_grace, log_limit_bytes, max_lifetime"),
        ("process", {"max_running": "8"}, "max_running", "valid integer"),
        ("process", {"max_running": 8.5}, "max_running", "valid integer"),
        ("process", {"max_running": 0}, "max_running", "greater than or equal to 1"),
        ("process", {"kill_grace": 100}, "kill_grace", "less than or equal to 30"),
        ("process", {"max_lifetime": False}, "max_lifetime", "valid number"),
    ],
)
async def test_a_bad_key_or_value_is_one_permanent_line_naming_the_key_and_the_fix(
    ws: Path, family: str, raw: dict[str, Any], key: str, problem: str
) -> None:
    if "path" in raw:
        raw = {"path": [entry.replace("{ws}", str(ws)) for entry in raw["path"]]}
    model = {"shell": ShellSettings, "process": ProcessSettings}[family]
    with pytest.raises(SettingsFailure) as info:
        model.from_context(ToolContext(workspace=ws, extra={family: raw}))
    failure = info.value
    assert isinstance(failure, ToolFailure) and failure.kind == "permanent"
    assert (failure.family, failure.key) == (family, key) and problem in failure.problem, failure.message
    assert failure.message.startswith(f"{family} config `{key}`: ") and failure.message.endswith(f"; fix tool_settings.{family} in kasloop.toml")
    one_line(failure.message)

    # The same line reaches the model from a tool call, and nothing runs.
    tool = SHELL if family == "shell" else PROCESS_START
    result = await run_tool(tool, {"command": "true"}, ToolContext(workspace=ws, extra={family: raw}))
    assert result == ToolResult(ok=False, output=f"Error: {failure.message}", error_kind="permanent")

    # And loading a config with it fails at once, in one line.
    with pytest.raises(ConfigError) as loaded:
        check_tool_settings({family: raw}, ws)
    one_line(str(loaded.value))
    assert f"tool_settings.{family}" in str(loaded.value) and key.split(".")[0] in str(loaded.value)


def test_more_than_one_problem_says_how_many_more() -> None:
    with pytest.raises(SettingsFailure) as info:
        ShellSettings.from_mapping({"allow": 3, "timeout": "x", "nope": 1})
    assert info.value.problem.endswith("(and 2 more)"), info.value.message


@pytest.mark.parametrize("raw", ["allow = ls", ["ls"], 5])
def test_a_table_that_is_not_a_table_is_refused(ws: Path, raw: Any) -> None:
    with pytest.raises(SettingsFailure) as info:
        ShellPolicy.from_context(ToolContext(workspace=ws, extra={"shell": raw}))
    assert info.value.kind == "permanent" and "must be a table of settings" in info.value.message
    one_line(info.value.message)


def test_a_settings_failure_pickles_with_its_fields() -> None:
    failure = SettingsFailure("shell", "timeout", "Input should be greater than 0")
    copy = pickle.loads(pickle.dumps(failure))
    assert (copy.kind, copy.family, copy.key, copy.problem, copy.message) == (
        failure.kind, failure.family, failure.key, failure.problem, failure.message
    )  # fmt: skip


def test_good_shell_settings_become_the_same_policy_as_before(ws: Path) -> None:
    """Lists may be tuples (Python callers), ints count as seconds, caps and clamps are applied."""
    raw = {
        "allow": ("jq", "*"), "allow_defaults": False, "deny": ["ls"], "path": ["/usr/bin", "/bin"],
        "env_passthrough": ["LC_*"], "timeout": 900, "max_timeout": 120, "kill_grace": 99, "sandbox": "none", "network": True,
    }  # fmt: skip
    policy = ShellPolicy.from_context(ToolContext(workspace=ws, extra={"shell": raw, "http": {"token_env": "MY_TOKEN"}}))
    assert policy.allow == frozenset({"jq"}) and policy.allow_any and policy.named == frozenset({"jq"})
    assert "ls" in policy.deny and "rm" in policy.deny
    assert policy.search_path == ("/usr/bin", "/bin") and policy.env_passthrough == ("LC_*",)
    assert (policy.timeout, policy.max_timeout, policy.kill_grace) == (120.0, 120.0, 30.0)
    assert policy.sandbox == "none" and policy.network is True and "MY_TOKEN" in policy.own_secrets
    default = ShellPolicy.from_context(ToolContext(workspace=ws))
    assert (default.timeout, default.max_timeout, default.kill_grace, default.sandbox, default.network) == (60.0, 600.0, 2.0, "bwrap", False)
    assert default.search_path and all(Path(p).is_absolute() for p in default.search_path)


# --------------------------------------------------------------------------- one error-kind type


def test_the_tool_error_kinds_are_the_state_kinds_without_model() -> None:
    tool_kinds, kinds = typing.get_args(ToolErrorKind), typing.get_args(ErrorKind)
    assert kinds == (*tool_kinds, "model")
    assert typing.get_type_hints(ErrorInfo)["kind"] == ErrorKind
    from kasloop.tools import base

    assert base.ToolErrorKind is ToolErrorKind and "ToolErrorKind" in base.__all__


def _declared_kinds(path: Path) -> list[str]:
    """Module-level names bound to a ``Literal[...]`` that spells error kinds out in ``path``."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(getattr(node, "value", None), ast.Subscript):
            text = ast.unparse(node.value)
            if text.startswith("Literal[") and "'permanent'" in text:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [ast.unparse(t) for t in targets]
    return found


def test_error_kinds_are_spelled_out_once_in_the_whole_package() -> None:
    declared = {
        str(path.relative_to(REPO)): names
        for folder in ("kasloop", "tools", "nodes", "graphs", "checkpoints")
        for path in sorted((REPO / folder).rglob("*.py"))
        if (names := _declared_kinds(path))
    }
    assert declared == {"kasloop/state.py": ["ToolErrorKind"]}, "import ToolErrorKind from kasloop.tools.base instead"
