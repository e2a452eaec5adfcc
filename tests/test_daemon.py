"""``kasloop daemon``: real processes, real signals, one SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import CLIResult, call, wait_until


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "KASLOOP_HOME": str(tmp_path / ".kasloop")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "kasloop", "daemon", *args], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def status_of(kasloop: Callable[..., CLIResult], thread: str) -> dict[str, object]:
    result = kasloop("status", thread, "--json")
    assert result.code == 0, result.err
    return result.json()  # type: ignore[no-any-return]


def sleeping(marker: str) -> bool:
    """Whether a ``sleep MARKER`` process runs now (found through /proc)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[:2] == [b"sleep", marker.encode()] or (len(cmdline) > 1 and cmdline[0].endswith(b"/sleep") and cmdline[1] == marker.encode()):
                return True
    return False


def finished_thread(kasloop: Callable[..., CLIResult], workspace: Path, model: str) -> str:
    first = kasloop("run", "get ready", "--model", model, "--workspace", str(workspace), "--autonomy", "4", "--tools", "files,shell", "--json")
    assert first.code == 0, first.err
    return str(first.json()["thread"])


def test_once_serves_told_threads_and_leaves_idle_ones_alone(tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]) -> None:
    told = finished_thread(kasloop, workspace, script({"content": "ready"}, {"tool_calls": [call("files_write", path="a.txt", content="A")]}, {"content": "wrote a"}))
    idle = finished_thread(kasloop, workspace, script({"content": "idle and done"}))  # no turn left: a visit would fail
    assert kasloop("tell", told, "write a.txt").code == 0
    once = kasloop("daemon", "--once", "--interval", "1")
    assert once.code == 0, once.err
    assert (workspace / "a.txt").read_text() == "A"
    assert status_of(kasloop, told)["status"] == "done" and status_of(kasloop, idle)["status"] == "done"
    assert "Daemon: stopped" in kasloop("status").out
    daemon = status_of(kasloop, told)["daemon"]
    assert daemon["stopped_at"] is not None and daemon["cycles"] == 1 and daemon["errors"] == 0


def test_daemon_reads_the_inbox_refuses_a_second_instance_and_stops_on_sigterm(
    tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult], start_daemon: Callable[..., subprocess.Popen[str]]
) -> None:
    model = script(
        {"content": "ready"},
        {"tool_calls": [call("files_write", path="first.txt", content="1")]},
        {"content": "first done"},
        {"tool_calls": [call("files_write", path="second.txt", content="2")]},
        {"content": "second done"},
    )
    thread = finished_thread(kasloop, workspace, model)
    daemon = start_daemon("--interval", "0.1")
    wait_until(lambda: "Daemon: pid" in kasloop("status").out, "the daemon's first heartbeat")
    second = kasloop("daemon", "--once")
    assert second.code == 2 and f"pid {daemon.pid}" in second.err and len(second.err.strip().splitlines()) == 1, second.err
    assert kasloop("tell", thread, "write first.txt").code == 0
    wait_until(lambda: status_of(kasloop, thread)["output"] == "first done", "the first message to be served")
    assert kasloop("tell", thread, "write second.txt").code == 0
    wait_until(lambda: status_of(kasloop, thread)["output"] == "second done", "the second message to be served")
    assert (workspace / "first.txt").read_text() == "1" and (workspace / "second.txt").read_text() == "2"
    inbox = [e for e in kasloop("history", thread, "--json").json() if e["kind"] == "inbox"]
    assert [e["text"] for e in inbox] == ["write first.txt", "write second.txt"], "in order, once each"
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert "Daemon: stopped" in kasloop("status").out


def test_sigterm_during_a_tool_call_finishes_the_node_exits_0_and_resume_completes(
    tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult], start_daemon: Callable[..., subprocess.Popen[str]]
) -> None:
    marker = "2.718"
    model = script({"content": "ready"}, {"tool_calls": [call("shell_run", command=f"sleep {marker}")]}, {"content": "slept"})
    thread = finished_thread(kasloop, workspace, model)
    assert kasloop("tell", thread, "sleep a while").code == 0
    daemon = start_daemon("--interval", "0.1")
    wait_until(lambda: sleeping(marker), "the tool's sleep process")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.stderr.read() if daemon.stderr else ""
    assert not sleeping(marker), "the daemon waited for the node (and its tool) to finish"
    tools = [e for e in kasloop("history", thread, "--json").json() if e["kind"] == "tool"]
    assert [(e["tool"], e["ok"]) for e in tools] == [("shell_run", True)], "the tool's result was recorded before exit"
    assert status_of(kasloop, thread)["status"] == "running", "stopped between nodes, not finished"
    resumed = kasloop("resume", thread, "--json")
    assert resumed.code == 0 and resumed.json()["output"] == "slept", resumed.err
    tools = [e for e in kasloop("history", thread, "--json").json() if e["kind"] == "tool"]
    assert len(tools) == 1, "resume continued after the tool; it did not run it again"


def test_a_thread_driven_by_one_process_is_busy_for_another(tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]) -> None:
    import fcntl
    import hashlib

    thread = finished_thread(kasloop, workspace, script({"content": "ready"}, {"content": "again"}))
    assert kasloop("tell", thread, "again").code == 0
    lock = tmp_path / ".kasloop" / "kasloop.db.locks" / (hashlib.sha256(f"thread:{thread}".encode()).hexdigest()[:24] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = kasloop("resume", thread)
        assert busy.code == 2 and "being driven by another process" in busy.err
    assert kasloop("resume", thread, "--json").json()["output"] == "again"


def test_interval_must_be_positive(kasloop: Callable[..., CLIResult]) -> None:
    bad = kasloop("daemon", "--interval", "0")
    assert bad.code == 2 and "--interval must be > 0" in bad.err


def test_a_thread_waiting_for_a_human_is_left_alone_even_with_new_messages(
    tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]
) -> None:
    (workspace / "old.txt").write_text("x")
    model = script({"tool_calls": [call("files_delete", path="old.txt")]}, {"content": "done"})
    first = kasloop("run", "delete old.txt", "--model", model, "--workspace", str(workspace), "--autonomy", "3", "--json")
    assert first.code == 10, first.err
    thread = first.json()["thread"]
    assert kasloop("tell", thread, "and hurry").code == 0
    before = status_of(kasloop, thread)
    assert kasloop("daemon", "--once").code == 0
    after = status_of(kasloop, thread)
    assert after["status"] == "waiting_approval" and after["updated_at"] == before["updated_at"] and after["unread"] == 1
    assert (workspace / "old.txt").exists()


def test_a_budget_raised_without_resuming_is_continued_by_the_daemon_and_a_kept_one_is_left_alone(
    workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]
) -> None:
    def paused(name: str) -> tuple[str, str]:
        (workspace / name).mkdir()
        model = script({"tool_calls": [call("files_write", path="a.txt", content="A")]}, {"tool_calls": [call("files_write", path="b.txt", content="B")]}, {"content": "both"})
        run = kasloop("run", "write a and b", "--model", model, "--workspace", str(workspace / name), "--autonomy", "3", "--max-steps", "1", "--json")
        assert run.code == 11, run.err
        [request] = run.json()["approvals"]
        assert request["kind"] == "budget"
        return str(run.json()["thread"]), str(request["approval_id"])

    granted, granted_id = paused("granted")
    kept, kept_id = paused("kept")
    approved = kasloop("approve", granted_id, "--edit", '{"value": 10}', "--no-resume")
    assert approved.code == 0 and status_of(kasloop, granted)["status"] == "paused_budget", "recorded and raised, not resumed"
    assert not (workspace / "granted" / "b.txt").exists()
    assert kasloop("reject", kept_id).code == 11
    before = status_of(kasloop, kept)
    assert kasloop("daemon", "--once").code == 0
    assert status_of(kasloop, granted)["status"] == "done" and (workspace / "granted" / "b.txt").read_text() == "B"
    after = status_of(kasloop, kept)
    assert after["status"] == "paused_budget" and after["updated_at"] == before["updated_at"], "a kept budget is not driven again"
