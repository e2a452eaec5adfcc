"""Every tool family is selectable from ``kasloop run --tools`` and reaches the model's schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kasloop.tools.registry import FAMILIES
from conftest import CLIResult, call, write_script


def test_run_with_every_family_offers_their_tools_and_runs_one(tmp_path: Path, workspace: Path, kasloop: Callable[..., CLIResult]) -> None:
    script = write_script(tmp_path / "plan.jsonl", [
        {"tool_calls": [call("process_list")]},
        {"tool_calls": [call("telegram_send", chat_id=1, text="hi")]},
        {"content": "checked"},
    ])
    families = ",".join(FAMILIES)
    result = kasloop("run", "look around", "--model", f"scripted:{script}", "--tools", families,
                     "--workspace", str(workspace), "--autonomy", "3", "--json")
    assert result.code == 10, result.err  # process_list ran; telegram_send (high) waits for a human at level 3
    [request] = result.json()["approvals"]
    assert request["tool"] == "telegram_send" and request["risk"] == "high"
    history = kasloop("history", result.json()["thread"], "--json").json()
    [listed] = [e for e in history if e["kind"] == "tool"]
    assert listed["tool"] == "process_list" and listed["ok"], listed


def test_an_unknown_family_is_one_line_naming_the_valid_ones(tmp_path: Path, kasloop: Callable[..., CLIResult]) -> None:
    result = kasloop("run", "x", "--model", "scripted:none.jsonl", "--tools", "files,ftp")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "`ftp`" in result.err and all(family in result.err for family in FAMILIES)
