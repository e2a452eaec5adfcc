"""Rules see every path argument (issue 14, item 3).

Reproduction: a deny rule on ``files_delete keep/*`` and an ask rule on ``files_* *.toml`` were dodged
with ``files_move``, whose ``source``/``destination`` no rule looked at: move ``keep/payroll.csv`` to
``tmp/`` and delete it there; move a staged file onto ``app.toml``.

What holds now (kasloop/guardrails/policy.py, ``Tool.path_args`` from the args schema): a rule's ``path`` key
matches any path argument of the call, in canonical workspace-relative form; a move is also judged as a
``files_delete`` of its source and a ``files_write`` of where it lands; an attachment as a
``files_read``; a screenshot as a ``files_write``. Each case has a control: the same call without the
rule (or on another path) is not caught, so a passing case is not a rule that matches everything.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tool_args import args_for as shared_args_for

from kasloop import PolicyRule
from kasloop.guardrails.policy import canonical_args, matching_rule_action
from kasloop.tools.base import Tool
from kasloop.tools.registry import all_tools
from conftest import call, cli_runner

TOOLS = all_tools()
PATH_PAIRS = [(tool.name, arg) for tool in TOOLS.values() for arg in tool.path_args]
SAMPLES: dict[str, Any] = {
    "content": "x", "command": "true", "to": "someone@example.org", "subject": "s", "body": "b",
    "source": "free/a.txt", "destination": "free/b.txt", "path": "free/a.txt", "cwd": "free",
}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    for folder in ("keep", "tmp", "conf", "free", "guarded"):
        (root / folder).mkdir(parents=True)
    (root / "keep" / "payroll.csv").write_text("alice,100\n")
    (root / "staged.txt").write_text("autonomy = 4\n")
    (root / "app.toml").write_text("autonomy = 3\n")
    (root / "link").symlink_to(root / "keep")
    return root


def args_for(tool: Tool, arg: str, value: str) -> dict[str, Any]:
    return shared_args_for(tool, arg, value, SAMPLES)


def action(rules: list[PolicyRule], tool: str, args: dict[str, Any], ws: Path | None = None) -> str | None:
    return matching_rule_action(rules, TOOLS[tool], args, workspace=ws)


# --------------------------------------------------------------------------- the reproduction, both directions


DENY_KEEP = [PolicyRule(tool="files_delete", action="deny", args={"path": "keep/*"})]
ASK_TOML = [PolicyRule(tool="files_*", action="ask", args={"path": "*.toml"})]


@pytest.mark.parametrize("source", ["keep/payroll.csv", "./keep/payroll.csv", "tmp/../keep/payroll.csv", "link/payroll.csv", "{ws}/keep/payroll.csv"])
def test_a_move_out_of_a_delete_denied_path_is_denied(ws: Path, source: str) -> None:
    move = {"source": source.format(ws=ws), "destination": "tmp/payroll.csv"}
    assert action(DENY_KEEP, "files_move", move, ws) == "deny"
    assert action([], "files_move", move, ws) is None  # control: no rule, nothing to match
    assert action(DENY_KEEP, "files_move", {"source": "staged.txt", "destination": "tmp/s.txt"}, ws) is None  # control: another path


@pytest.mark.parametrize("destination", ["app.toml", "./app.toml", "tmp/../app.toml", "{ws}/app.toml", "conf"])
def test_a_move_onto_an_ask_path_asks(ws: Path, destination: str) -> None:
    """Moving onto ``app.toml`` (or into a folder, where it lands as ``conf/staged.toml``) is a write there."""
    source = "staged.toml" if destination == "conf" else "staged.txt"
    (ws / source).write_text("x")
    move = {"source": source, "destination": destination.format(ws=ws), "overwrite": True}
    assert action(ASK_TOML, "files_move", move, ws) == "ask"
    assert action([], "files_move", move, ws) is None
    assert action(ASK_TOML, "files_move", {"source": "staged.txt", "destination": "tmp/notes.txt"}, ws) is None


def test_a_move_out_of_an_ask_path_asks_too(ws: Path) -> None:
    assert action(ASK_TOML, "files_move", {"source": "app.toml", "destination": "tmp/app.txt"}, ws) == "ask"


def test_a_move_into_a_folder_is_judged_where_the_file_lands(ws: Path) -> None:
    rules = [PolicyRule(tool="files_write", action="deny", args={"path": "conf/*"})]
    assert action(rules, "files_move", {"source": "staged.txt", "destination": "conf"}, ws) == "deny"
    assert action(rules, "files_move", {"source": "staged.txt", "destination": "tmp"}, ws) is None  # control


# --------------------------------------------------------------------------- every tool, every path argument


@pytest.mark.parametrize(("tool_name", "arg"), PATH_PAIRS)
def test_a_path_rule_matches_every_path_argument_of_every_tool(ws: Path, tool_name: str, arg: str) -> None:
    tool = TOOLS[tool_name]
    guarded, free = args_for(tool, arg, "guarded/x.txt"), args_for(tool, arg, "free/x.txt")
    by_kind = [PolicyRule(tool=tool_name, action="deny", args={"path": "guarded/*"})]
    by_name = [PolicyRule(tool=tool_name, action="deny", args={arg: "guarded/*"})]
    assert action(by_kind, tool_name, guarded, ws) == "deny"
    assert action(by_name, tool_name, guarded, ws) == "deny"
    assert action(by_kind, tool_name, {**guarded, arg: guarded[arg]}, None) == "deny"  # without a workspace too
    # Controls: the same rules on another path, and the same call without them.
    assert action(by_kind, tool_name, free, ws) is None and action(by_name, tool_name, free, ws) is None
    assert action([], tool_name, guarded, ws) is None


@pytest.mark.parametrize(("tool_name", "arg"), [(t, a) for t, a in PATH_PAIRS if TOOLS[t].path_acts_as.get(a, t) != t])
def test_a_path_argument_is_judged_as_the_files_tool_it_amounts_to(ws: Path, tool_name: str, arg: str) -> None:
    """An attachment is a read, a screenshot or a move's destination a write, a move's source a delete."""
    tool = TOOLS[tool_name]
    acts_as = tool.path_acts_as[arg]
    rules = [PolicyRule(tool=acts_as, action="deny", args={"path": "guarded/*"})]
    assert action(rules, tool_name, args_for(tool, arg, "guarded/x.txt"), ws) == "deny"
    assert action(rules, tool_name, args_for(tool, arg, "free/x.txt"), ws) is None  # control


def test_an_allow_rule_must_cover_every_path_the_call_touches(ws: Path) -> None:
    allow_tmp = [PolicyRule(tool="files_move", action="allow", args={"path": "tmp/*"})]
    (ws / "tmp" / "a.txt").write_text("a")
    assert action(allow_tmp, "files_move", {"source": "tmp/a.txt", "destination": "keep/payroll.csv"}, ws) is None
    assert action(allow_tmp, "files_move", {"source": "tmp/a.txt", "destination": "tmp/b.txt"}, ws) == "allow"  # control
    # An allow on what a path amounts to never loosens the call itself.
    allow_delete = [PolicyRule(tool="files_delete", action="allow")]
    assert action(allow_delete, "files_move", {"source": "tmp/a.txt", "destination": "tmp/b.txt"}, ws) is None
    assert action(allow_delete, "files_delete", {"path": "tmp/a.txt"}, ws) == "allow"  # control


def test_a_list_of_paths_is_matched_item_by_item(ws: Path) -> None:
    deny = [PolicyRule(tool="files_read", action="deny", args={"path": "keep/*"})]
    send = {"to": "a@example.org", "subject": "s", "body": "b"}
    assert action(deny, "email_send", {**send, "attachments": ["free/a.txt", "./keep/payroll.csv"]}, ws) == "deny"
    assert action(deny, "email_send", {**send, "attachments": ["free/a.txt"]}, ws) is None  # control
    assert canonical_args({"attachments": ["./keep/../keep/payroll.csv"]}, ws, path_args=["attachments"]) == {"attachments": ["keep/payroll.csv"]}


@pytest.mark.parametrize(("tool_name", "extra"), [("http_get", {}), ("http_post", {}), ("webhook_post", {"payload": {}}), ("browser_open", {})])
def test_host_and_url_rules_match_every_url_argument(tool_name: str, extra: dict[str, Any]) -> None:
    deny_host = [PolicyRule(tool="*", action="deny", args={"host": "*.internal"})]
    ask_url = [PolicyRule(tool="*", action="ask", args={"url": "https://pay.example.org/*"})]
    assert TOOLS[tool_name].url_args == ("url",)
    assert action(deny_host, tool_name, {"url": "http://DB.Internal:8080/x", **extra}) == "deny"
    assert action(ask_url, tool_name, {"url": "https://pay.example.org/send", **extra}) == "ask"
    assert action(deny_host, tool_name, {"url": "https://example.org/", **extra}) is None  # control
    assert action(ask_url, tool_name, {"url": "https://example.org/send", **extra}) is None  # control


def test_a_tool_name_is_looked_up_and_an_unknown_tool_falls_back_to_path_names(ws: Path) -> None:
    move = {"source": "keep/payroll.csv", "destination": "tmp/p.csv"}
    assert matching_rule_action(DENY_KEEP, "files_move", move, workspace=ws) == "deny"
    rules = [PolicyRule(tool="my_*", action="deny", args={"path": "keep/*"})]
    assert matching_rule_action(rules, "my_copy", {"source": "./keep/payroll.csv", "destination": "x"}, workspace=ws) == "deny"
    assert matching_rule_action(rules, "my_copy", {"source": "free/a", "destination": "x"}, workspace=ws) is None  # control


# --------------------------------------------------------------------------- the reproduction, through the CLI


RULES_TOML = """autonomy = 4
tools = ["files"]

[[rules]]
tool = "files_delete"
action = "deny"
args = { path = "keep/*" }

[[rules]]
tool = "files_*"
action = "ask"
args = { path = "*.toml" }
"""


def project(tmp_path: Path, with_rules: bool) -> tuple[Path, Callable[..., Any]]:
    folder = tmp_path / ("ruled" if with_rules else "open")
    (folder / "keep").mkdir(parents=True)
    (folder / "tmp").mkdir()
    (folder / "keep" / "payroll.csv").write_text("alice,100\n")
    (folder / "staged.txt").write_text("mode = 'open'\n")
    (folder / "app.toml").write_text("mode = 'safe'\n")
    (folder / "kasloop.toml").write_text(RULES_TOML if with_rules else 'autonomy = 4\ntools = ["files"]\n')
    return folder, cli_runner(folder)


def gates(folder: Path) -> list[str]:
    conn = sqlite3.connect(folder / ".kasloop" / "kasloop.db")
    try:
        rows = conn.execute("SELECT data FROM kasloop_events WHERE kind = 'decide' ORDER BY id").fetchall()
    finally:
        conn.close()
    return [c["gate"] for (data,) in rows for c in json.loads(data).get("calls", [])]


@pytest.mark.parametrize("with_rules", [True, False], ids=["ruled", "control-no-rules"])
def test_repro_move_then_delete_does_not_dodge_the_deny_rule(tmp_path: Path, script: Callable[..., str], with_rules: bool) -> None:
    folder, kasloop = project(tmp_path, with_rules)
    ran = kasloop("run", "--model", script(
        {"content": "", "tool_calls": [call("files_move", source="keep/payroll.csv", destination="tmp/")]},
        {"content": "", "tool_calls": [call("files_delete", path="tmp/payroll.csv")]},
        {"content": "done"},
    ), "get rid of the payroll")
    assert ran.code == 0, ran
    if with_rules:
        assert gates(folder)[0] == "deny"
        assert (folder / "keep" / "payroll.csv").read_text() == "alice,100\n"
    else:
        assert gates(folder) == ["allow", "allow"]
        assert not (folder / "keep" / "payroll.csv").exists() and not (folder / "tmp" / "payroll.csv").exists()


@pytest.mark.parametrize("with_rules", [True, False], ids=["ruled", "control-no-rules"])
def test_repro_moving_a_staged_file_onto_a_toml_asks(tmp_path: Path, script: Callable[..., str], with_rules: bool) -> None:
    folder, kasloop = project(tmp_path, with_rules)
    ran = kasloop("run", "--model", script(
        {"content": "", "tool_calls": [call("files_move", source="staged.txt", destination="app.toml", overwrite=True)]},
        {"content": "done"},
    ), "swap the config")
    if with_rules:
        assert ran.code == 10, ran  # waiting for a person
        assert gates(folder) == ["ask"]
        assert (folder / "app.toml").read_text() == "mode = 'safe'\n" and (folder / "staged.txt").exists()
    else:
        assert ran.code == 0, ran
        assert (folder / "app.toml").read_text() == "mode = 'open'\n"
