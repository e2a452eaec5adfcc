"""The CLI in real subprocesses: exit codes, JSON, approvals across processes, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CLIResult, call, cli_runner, db_fingerprint, write_script

Kasloop = Callable[..., CLIResult]


def test_run_approve_in_another_process_completes_and_tool_runs_once(
    tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Kasloop
) -> None:
    model = script(
        {"content": "log", "tool_calls": [call("files_append", path="log.txt", content="line\n")]},
        {"content": "delete", "tool_calls": [call("files_delete", path="old.txt")]},
        {"content": "finished"},
    )
    (workspace / "old.txt").write_text("old")
    first = kasloop("run", "clean up", "--model", model, "--workspace", str(workspace), "--autonomy", "3", "--json")
    assert first.code == 10, first
    data = first.json()
    assert data["status"] == "waiting_approval" and data["output"] == ""
    [request] = data["approvals"]
    assert set(request) >= {"approval_id", "thread", "tool", "args", "risk", "reason", "arg_hash", "created_at", "expires_at"}

    listed = kasloop("approvals", "--json")
    assert listed.code == 0 and [a["approval_id"] for a in listed.json()] == [request["approval_id"]]

    second = kasloop("approve", request["approval_id"], "--json")
    assert second.code == 0, second
    assert second.json()["status"] == "done" and second.json()["output"] == "finished"
    assert not (workspace / "old.txt").exists()
    assert (workspace / "log.txt").read_text() == "line\n", "the append before the pause ran exactly once"

    status = kasloop("status", data["thread"], "--json")
    assert status.code == 0 and status.json()["status"] == "done"
    history = kasloop("history", data["thread"], "--json")
    kinds = [e["kind"] for e in history.json()]
    assert kinds.count("tool") == 2 and "approval_decision" in kinds
    assert [e["tool"] for e in history.json() if e["kind"] == "tool"] == ["files_append", "files_delete"]


def test_no_resume_then_resume(tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Kasloop) -> None:
    model = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="A")]}, {"content": "done"})
    first = kasloop("run", "write a", "--model", model, "--workspace", str(workspace), "--autonomy", "2", "--json")
    assert first.code == 10, first
    approval = first.json()["approvals"][0]["approval_id"]
    recorded = kasloop("approve", approval, "--no-resume")
    assert recorded.code == 0, recorded
    assert not (workspace / "a.txt").exists()
    resumed = kasloop("resume", first.json()["thread"], "--json")
    assert resumed.code == 0, resumed
    assert (workspace / "a.txt").read_text() == "A"


def test_reject_via_cli_tells_the_model(tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Kasloop) -> None:
    model = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="A")]}, {"content": "ok, not writing"})
    first = kasloop("run", "write a", "--model", model, "--workspace", str(workspace), "--autonomy", "2", "--json")
    rejected = kasloop("reject", first.json()["approvals"][0]["approval_id"], "--reason", "not today", "--json")
    assert rejected.code == 0 and rejected.json()["output"] == "ok, not writing"
    assert not (workspace / "a.txt").exists()


def test_human_output_and_exit_code_of_a_finished_run(workspace: Path, script: Callable[..., str], kasloop: Kasloop) -> None:
    model = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="A")]}, {"content": "wrote a.txt"})
    done = kasloop("run", "write a", "--model", model, "--workspace", str(workspace), "--autonomy", "4")
    assert done.code == 0, done
    assert "done" in done.out and "wrote a.txt" in done.out


@pytest.fixture(scope="module")
def waiting_thread(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One home with a thread waiting for approval, shared by the error cases (none may change it)."""
    folder = tmp_path_factory.mktemp("waiting")
    (folder / "ws").mkdir()
    (folder / "ws" / "x.txt").write_text("x")
    script = write_script(folder / "s.jsonl", [{"content": "", "tool_calls": [call("files_delete", path="x.txt")]}, {"content": "done"}])
    run = cli_runner(folder)
    first = run("run", "delete x", "--model", f"scripted:{script}", "--workspace", "ws", "--json")
    assert first.code == 10, first
    return {"approval": first.json()["approvals"][0]["approval_id"], "model": f"scripted:{script}", "folder": folder, "run": run}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("approve", "ap-0000000000"), "No approval `ap-0000000000`"),
        (("reject", "ap-unknown"), "No approval `ap-unknown`"),
        (("approve", "{approval}", "--edit", "{not json"), "--edit is not valid JSON"),
        (("approve", "{approval}", "--edit", "[1, 2]"), "--edit must be a JSON object"),
        (("approve", "{approval}", "--edit", '{"path": 5}'), "Edited arguments for `files_delete` are invalid"),
        (("run", "go", "--tools", "files,teleport"), "Unknown tool `teleport`"),
        (("run", "go", "--autonomy", "7"), "Autonomy level `7` does not exist"),
        (("run", "go", "--autonomy", "1"), "kasloop starts at 2"),
        (("run", "go", "--autonomy", "0"), "kasloop starts at 2"),
        (("run", "go", "--model", "scripted:missing.jsonl"), "missing.jsonl` does not exist"),
        (("run", "go", "--model", "banana"), "Unknown model spec `banana`"),
        (("resume", "t-nope"), "No thread `t-nope`"),
        (("history", "t-nope"), "No thread `t-nope`"),
        (("run", "   ", "--model", "{model}"), "The goal is empty"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_change_nothing(waiting_thread: dict[str, Any], args: tuple[str, ...], message: str) -> None:
    kasloop = waiting_thread["run"]
    db = waiting_thread["folder"] / ".kasloop" / "kasloop.db"
    before = db_fingerprint(db)
    result = kasloop(*(a.format(**waiting_thread) if a in ("{approval}", "{model}") else a for a in args))
    assert result.code == 2, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result
    assert message in lines[0] and "Traceback" not in result.err
    assert db_fingerprint(db) == before
    assert (waiting_thread["folder"] / "ws" / "x.txt").exists()
    assert kasloop("approvals", "--json").json()[0]["approval_id"] == waiting_thread["approval"], "the approval is not lost"


def test_config_file_errors_name_the_key(tmp_path: Path, kasloop: Kasloop) -> None:
    (tmp_path / "kasloop.toml").write_text("autonomy = 3\n[budgets]\nmax_steps = 0\n")
    result = kasloop("run", "go")
    assert result.code == 2 and "budgets.max_steps" in result.err and "must be >= 1" in result.err
    (tmp_path / "kasloop.toml").write_text("autonomi = 3\n")
    result = kasloop("run", "go")
    assert result.code == 2 and "`autonomi`" in result.err and "not a known setting" in result.err
    (tmp_path / "kasloop.toml").write_text("autonomy = \n")
    result = kasloop("run", "go")
    assert result.code == 2 and "not valid TOML" in result.err


def test_script_running_out_exits_1_with_a_clear_message(workspace: Path, script: Callable[..., str], kasloop: Kasloop) -> None:
    model = script({"content": "", "tool_calls": [call("files_list")]})
    result = kasloop("run", "list", "--model", model, "--workspace", str(workspace), "--autonomy", "4")
    assert result.code == 1, result
    assert "has 1 turns and turn 2 was asked for" in result.err and "Traceback" not in result.err


def test_demo_runs_and_explains(tmp_path: Path, kasloop: Kasloop) -> None:
    result = kasloop("demo", "--dir", str(tmp_path / "demo"))
    assert result.code == 0, result
    assert "paused" in result.out and "files_delete" in result.out and "done" in result.out
    assert (tmp_path / "demo" / "workspace" / "report.md").exists()
    assert not (tmp_path / "demo" / "workspace" / "draft.txt").exists()
