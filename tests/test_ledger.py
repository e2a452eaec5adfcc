"""The act ledger: a resumed thread never re-executes a call whose result is recorded.

A real process is killed between a tool's intent row and its result row; a
second process resumes the thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kasloop.checkpoints import EventLog, Ledger, open_database
from conftest import call, write_script

HERE = Path(__file__).parent


# Every test runs on both backends (``db_url``: a SQLite file, or a fresh database on the test PostgreSQL).
pytestmark = pytest.mark.usefixtures("db_url")


def agent_process(tmp_path: Path, workspace: Path, script: Path, autonomy: int, idempotent: bool | str, *args: str) -> subprocess.CompletedProcess[str]:
    kind = idempotent if isinstance(idempotent, str) else ("1" if idempotent else "0")
    db = os.environ["KASLOOP_TEST_DB"]
    return subprocess.run(
        [sys.executable, str(HERE / "crash_agent.py"), str(tmp_path / ".kasloop"), str(workspace), str(script), str(autonomy), kind, *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "KASLOOP_TEST_DB": db}, stdin=subprocess.DEVNULL,
    )


async def ledger_rows(tmp_path: Path) -> list[tuple[str, bool]]:
    async with open_database(os.environ["KASLOOP_TEST_DB"]) as db:
        return [(e.tool, e.result is not None) for e in await Ledger(db).entries("crashy")]


@pytest.mark.parametrize("autonomy", [3, 4])
async def test_idempotent_call_is_rerun_recorded_call_is_reused(tmp_path: Path, workspace: Path, autonomy: int) -> None:
    script = write_script(tmp_path / "s.jsonl", [
        {"content": "", "tool_calls": [call("files_append", path="log.txt", content="A\n"), call("crash_once")]},
        {"content": "all done"},
    ])
    crashed = agent_process(tmp_path, workspace, script, autonomy, True, "run", "append then fragile")
    assert crashed.returncode == 37, crashed.stderr
    assert await ledger_rows(tmp_path) == [("files_append", True), ("crash_once", False)]

    resumed = agent_process(tmp_path, workspace, script, autonomy, True, "resume", "crashy")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "done"
    assert (workspace / "log.txt").read_text() == "A\n", "the recorded append was reused, not re-executed"
    runs = (workspace / "crash_runs.txt").read_text().split()
    assert len(runs) == 2 and runs[0] == runs[1], "the idempotent call re-ran under the same idempotency key"
    assert await ledger_rows(tmp_path) == [("files_append", True), ("crash_once", True)]


async def test_non_idempotent_call_with_unknown_outcome_is_not_rerun_and_goes_to_a_human(tmp_path: Path, workspace: Path) -> None:
    script = write_script(tmp_path / "s.jsonl", [
        {"content": "", "tool_calls": [call("files_append", path="log.txt", content="A\n"), call("crash_once")]},
        {"content": "all done"},
    ])
    crashed = agent_process(tmp_path, workspace, script, 3, False, "run", "go")
    assert crashed.returncode == 37, crashed.stderr
    resumed = agent_process(tmp_path, workspace, script, 3, False, "resume", "crashy")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "waiting_approval"
    [request] = result["approvals"]
    assert request["kind"] == "escalation" and request["tool"] == "crash_once"
    assert "may or may not have taken effect" in request["reason"]
    assert len((workspace / "crash_runs.txt").read_text().split()) == 1, "never silently run twice"
    assert (workspace / "log.txt").read_text() == "A\n"


async def test_non_idempotent_unknown_outcome_at_level_4_is_reported_to_the_model(tmp_path: Path, workspace: Path) -> None:
    script = write_script(tmp_path / "s.jsonl", [
        {"content": "", "tool_calls": [call("crash_once")]},
        {"content": "I will check before retrying"},
    ])
    assert agent_process(tmp_path, workspace, script, 4, False, "run", "go").returncode == 37
    resumed = agent_process(tmp_path, workspace, script, 4, False, "resume", "crashy")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "done"
    assert len((workspace / "crash_runs.txt").read_text().split()) == 1


@pytest.mark.parametrize(("kind", "runs_after"), [("L1", 2), ("L0", 1)])
async def test_a_langchain_tool_interrupted_by_a_crash_is_rerun_only_when_declared_idempotent(
    tmp_path: Path, workspace: Path, kind: str, runs_after: int
) -> None:
    """The ledger treats a LangChain tool like any other: declared idempotent, it runs again after a crash;
    declaring nothing, it is not idempotent and its outcome is unknown (the model is told, at level 4)."""
    script = write_script(tmp_path / "s.jsonl", [{"content": "", "tool_calls": [call("crash_once")]}, {"content": "finished"}])
    assert agent_process(tmp_path, workspace, script, 4, kind, "run", "go").returncode == 37
    resumed = agent_process(tmp_path, workspace, script, 4, kind, "resume", "crashy")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "done"
    assert len((workspace / "crash_runs.txt").read_text().split()) == runs_after
    async with open_database(os.environ["KASLOOP_TEST_DB"]) as db:
        events = await EventLog(db).history("crashy")
    [tool_event] = [e for e in events if e["kind"] == "tool"]
    assert tool_event["ok"] is (kind == "L1") and (kind == "L1" or tool_event["error_kind"] == "outcome_unknown")


@pytest.mark.parametrize(("kind", "runs_after"), [("r", 1), ("n", 2)])
async def test_an_interrupted_call_is_reconciled_by_its_tool(tmp_path: Path, workspace: Path, kind: str, runs_after: int) -> None:
    """A tool that can check (e.g. email in the sent folder) settles "outcome unknown": done, or safe to run."""
    script = write_script(tmp_path / "s.jsonl", [{"content": "", "tool_calls": [call("crash_once")]}, {"content": "finished"}])
    assert agent_process(tmp_path, workspace, script, 3, kind, "run", "go").returncode == 37
    resumed = agent_process(tmp_path, workspace, script, 3, kind, "resume", "crashy")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "done", "no human needed: the tool settled it"
    assert len((workspace / "crash_runs.txt").read_text().split()) == runs_after
    async with open_database(os.environ["KASLOOP_TEST_DB"]) as db:
        events = await EventLog(db).history("crashy")
    [check] = [e for e in events if e["kind"] == "reconcile"]
    assert check["took_effect"] is (kind == "r")
    [tool_event] = [e for e in events if e["kind"] == "tool"]
    assert tool_event["ok"] is True and tool_event["reused"] is (kind == "r")
