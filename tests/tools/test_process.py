"""The ``process`` family (tools/process.py): real background processes, real SQLite, no mocks.

Every process a test starts is registered with the ``cleanup`` fixture and
SIGKILLed (by process group, only while its PID still has the recorded start
time) when the test ends, pass or fail. Waiting is always a poll on a
condition with a deadline (a marker in the log, a PID gone), never a fixed
sleep. Attack tests end in a classified error and check the far side: the
victim process is still alive, no process or log was created, no secret
reached the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import host_pids
from pydantic import ValidationError

from kasloop.checkpoints.processes import ProcessRecord, ProcessStore
from kasloop.checkpoints import open_database
from kasloop.tools.base import Tool, ToolContext, ToolResources, ToolResult, openai_schema, run_tool
from kasloop.tools.process import (
    PROCESS_TOOLS,
    ProcessIdArgs,
    ProcessListArgs,
    ProcessSettings,
    ProcessStartArgs,
    ProcessTailArgs,
    tail_log,
)

TOOLS: dict[str, Tool] = {tool.name: tool for tool in PROCESS_TOOLS}
PY_DIR = os.path.dirname(sys.executable)
PY_SHELL: dict[str, Any] = {"allow": ["python"], "path": [PY_DIR, "/usr/local/bin", "/usr/bin", "/bin"]}
DEADLINE = 15.0

SERVER = """\
import sys, time
print("server-ready", sys.argv[1:], flush=True)
print("to-stderr", file=sys.stderr, flush=True)
time.sleep(120)
"""

STUBBORN = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild across exec
kid = subprocess.Popen([sys.executable, "-c", "import os, time\\nos.setpgid(0, 0)\\nprint('kid-ready', flush=True)\\ntime.sleep(120)", "kasloop-test-stubborn-kid"],
                       stdout=subprocess.PIPE)
kid.stdout.readline()  # the grandchild has left the process group
print("stubborn-ready", kid.pid, flush=True)
time.sleep(120)
"""


# --------------------------------------------------------------------------- helpers


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, pgid, sid, start ticks) straight from /proc, independent of the module under test."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19])


def alive(pid: int, ticks: int | None = None) -> bool:
    """``pid`` runs (not a zombie) and, when given, started at ``ticks``."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and (ticks is None or stat[3] == ticks)


async def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def log_text(result: ToolResult) -> str:
    path = Path(result.metadata["log_path"])
    rotated = path.with_name(path.name + ".1")
    return "".join(p.read_text(errors="replace") for p in (rotated, path) if p.exists())


class Cleanup:
    """Processes to SIGKILL at the end of the test (by group, only if still the same process)."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int | None]] = []
        self.popens: list[subprocess.Popen[bytes]] = []

    def add(self, pid: int) -> None:
        stat = proc_stat(pid)
        self.entries.append((pid, stat[3] if stat else None))

    def popen(self, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.popens.append(proc)
        return proc

    def run(self) -> None:
        for pid, ticks in self.entries:
            stat = proc_stat(pid)
            if stat is not None and stat[0] != "Z" and stat[3] == ticks:
                try:
                    if stat[1] == pid:
                        os.killpg(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self.popens:
            proc.kill()
            proc.wait()


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    helper = Cleanup()
    try:
        yield helper
    finally:
        helper.run()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "x").write_text("victim")
    (path / "server.py").write_text(SERVER)
    (path / "stubborn.py").write_text(STUBBORN)
    return path


@pytest.fixture
async def resources(tmp_path: Path) -> AsyncIterator[ToolResources]:
    res = ToolResources(home=tmp_path / "home")
    yield res
    await res.aclose()


def make_ctx(ws: Path, resources: ToolResources, *, thread: str = "t1", key: str = "", shell: dict[str, Any] | None = None, **process: Any) -> ToolContext:
    extra: dict[str, Any] = {"shell": dict(PY_SHELL if shell is None else shell)}
    if process:
        extra["process"] = process
    return ToolContext(workspace=ws, thread_id=thread, idempotency_key=key, extra=extra, resources=resources)


async def call(name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return await run_tool(TOOLS[name], args, ctx)


async def start(ctx: ToolContext, cleanup: Cleanup, command: str | list[str], **args: Any) -> ToolResult:
    result = await call("process_start", {"command": command, **args}, ctx)
    assert result.ok, result
    cleanup.add(result.metadata["pid"])
    return result


async def exited(ctx: ToolContext, process_id: str) -> ToolResult:
    """Poll process_status until the process has exited; return that status."""
    box: dict[str, ToolResult] = {}

    async def check() -> bool:
        box["r"] = await call("process_status", {"id": process_id}, ctx)
        return box["r"].metadata.get("status") == "exited"

    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{process_id} did not exit: {box['r']}")
        await asyncio.sleep(0.02)
    return box["r"]


# --------------------------------------------------------------------------- start, status, tail, stop


async def test_start_status_tail_and_stop_a_real_background_process(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    ctx = make_ctx(ws, resources)
    (ws / "sub").mkdir()
    started = await start(ctx, cleanup, ["python", "../server.py", "arg one"], name="web server", cwd="sub")
    pid, pid_id = started.metadata["pid"], started.metadata["id"]
    assert started.output.startswith(f"started {pid_id}: python ../server.py arg one") and started.metadata["pid"] == pid
    assert pid_id.startswith("p-") and len(pid_id) == 8 and str(pid) not in pid_id
    await until(lambda: "server-ready" in log_text(started), "the marker in the log")

    # Really running where and how the jail says: cwd, stdin closed, its own group in a new session.
    state, pgid, sid, _ = proc_stat(pid)  # type: ignore[misc]
    assert os.path.realpath(f"/proc/{pid}/cwd") == str((ws / "sub").resolve())
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2")  # one combined stream
    assert pgid == pid and sid != os.getsid(0)

    status = await call("process_status", {"id": pid_id}, ctx)
    assert status.ok and status.metadata["status"] == "running" and status.metadata["exit_code"] is None
    assert status.output.startswith(f"{pid_id} [web server] running (for ") and str(pid) not in status.output.split(":")[0]

    tail = await call("process_tail", {"id": pid_id}, ctx)
    assert tail.ok, tail
    assert "server-ready ['arg one']" in tail.output and "to-stderr" in tail.output

    listing = await call("process_list", {}, ctx)
    assert listing.ok and pid_id in listing.output and "running" in listing.output
    assert listing.metadata["processes"] == [{"id": pid_id, "status": "running", "exit_code": None}]

    stopped = await call("process_stop", {"id": pid_id}, ctx)
    assert stopped.ok, stopped
    assert stopped.metadata["signal"] == "SIGTERM" and stopped.metadata["exit_code"] == -signal.SIGTERM
    assert "killed by SIGTERM" in stopped.output
    assert not alive(pid)
    after = await call("process_status", {"id": pid_id}, ctx)
    assert after.metadata["status"] == "exited" and "killed by SIGTERM" in after.output
    again = await call("process_stop", {"id": pid_id}, ctx)
    assert again.ok and again.metadata["signal"] is None and "nothing was signalled" in again.output


async def test_exit_codes_are_reported(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    ctx = make_ctx(ws, resources)
    failing = await start(ctx, cleanup, "grep needle x")
    status = await exited(ctx, failing.metadata["id"])
    assert status.metadata["exit_code"] == 1 and "exited with code 1" in status.output
    fine = await start(ctx, cleanup, "echo done")
    status = await exited(ctx, fine.metadata["id"])
    assert status.metadata["exit_code"] == 0 and "exited with code 0" in status.output
    assert "done" in (await call("process_tail", {"id": fine.metadata["id"], "lines": 1}, ctx)).output


async def test_a_process_ignoring_sigterm_gets_sigkill_after_the_grace_with_its_grandchild(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    ctx = make_ctx(ws, resources, kill_grace=0.5)
    started = await start(ctx, cleanup, "python stubborn.py")
    await until(lambda: "stubborn-ready" in log_text(started), "the SIGTERM handler to be installed")
    [kid] = host_pids("kasloop-test-stubborn-kid")
    cleanup.add(kid)
    assert alive(kid) and proc_stat(kid)[1] == kid  # type: ignore[index]  # its own group: killpg alone would miss it
    began = time.monotonic()
    stopped = await call("process_stop", {"id": started.metadata["id"]}, ctx)
    elapsed = time.monotonic() - began
    assert stopped.ok, stopped
    assert stopped.metadata["signal"] == "SIGKILL" and stopped.metadata["exit_code"] == -signal.SIGKILL
    assert "(SIGKILL)" in stopped.output and "killed by SIGKILL" in stopped.output
    assert elapsed >= 0.5
    assert not alive(started.metadata["pid"]) and not alive(kid)


async def test_ten_megabytes_of_output_keep_the_log_capped_and_the_tail_works(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    limit = 65536
    ctx = make_ctx(ws, resources, log_limit_bytes=limit)
    last = 1_500_000
    total = sum(len(str(i)) + 1 for i in range(1, last + 1))
    assert total > 10_000_000
    tracemalloc.start()
    try:
        started = await start(ctx, cleanup, f"seq 1 {last}")
        status = await exited(ctx, started.metadata["id"])
        tail = await call("process_tail", {"id": started.metadata["id"], "lines": 5}, ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status.metadata["exit_code"] == 0
    assert peak < 2_000_000, peak  # kasloop never held the output
    log = Path(started.metadata["log_path"])
    files = [p for p in log.parent.iterdir() if p.name.startswith(log.name)]
    kept = sum(p.stat().st_size for p in files)
    assert kept <= limit and {p.name for p in files} == {log.name, log.name + ".1"}
    assert tail.ok, tail
    assert tail.output.endswith("\n".join(str(i) for i in range(last - 4, last + 1)))
    assert tail.metadata["log_bytes"] == kept and tail.metadata["dropped_bytes"] == total - kept
    assert f"{total - kept} older bytes dropped" in tail.output
    big = await call("process_tail", {"id": started.metadata["id"], "lines": 500}, ctx)
    assert len(big.output) <= TOOLS["process_tail"].output_limit and big.output.endswith(f"{last - 1}\n{last}")


def test_tail_reads_across_the_rotated_file_and_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    (tmp_path / "p.log.1").write_text("one\ntwo\n")
    log.write_text("three\nfour\n")
    assert tail_log(log, 3) == "two\nthree\nfour"
    assert tail_log(log, 10) == "one\ntwo\nthree\nfour"
    log.write_text("x" * 100 + "\nlast line\n")
    assert tail_log(log, 5, budget=20) == "last line"  # the cut first line is not shown
    log.write_bytes(b"bin\x00ary\n")
    assert "binary" in tail_log(log, 5)


LEAVER = """\
import subprocess, sys
kid = subprocess.Popen([sys.executable, "-c", "import time\\nprint('kid-ready', flush=True)\\ntime.sleep(120)", "kasloop-test-leftover"],
                       stdout=subprocess.PIPE)
kid.stdout.readline()
print("leaver-exits", flush=True)
"""


async def test_processes_left_behind_by_an_ended_program_end_with_its_sandbox(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    """The program is the first process of its sandbox's PID namespace: when it ends, whatever it left
    running ends too (nothing is orphaned), and a later stop has nothing left to signal."""
    (ws / "leaver.py").write_text(LEAVER)
    ctx = make_ctx(ws, resources)
    started = await start(ctx, cleanup, "python leaver.py")
    await until(lambda: "leaver-exits" in log_text(started), "the program's last line")
    status = await exited(ctx, started.metadata["id"])
    assert status.metadata["exit_code"] == 0
    await until(lambda: host_pids("kasloop-test-leftover") == [], "the leftover to end with the sandbox")
    stopped = await call("process_stop", {"id": started.metadata["id"]}, ctx)
    assert stopped.ok and stopped.metadata["signal"] is None, stopped


# --------------------------------------------------------------------------- who may stop what


async def test_another_threads_process_cannot_be_stopped_or_read(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    owner = make_ctx(ws, resources, thread="owner")
    other = make_ctx(ws, resources, thread="intruder")
    started = await start(owner, cleanup, "python server.py")
    pid, pid_id = started.metadata["pid"], started.metadata["id"]
    await until(lambda: "server-ready" in log_text(started), "the marker in the log")
    ticks = proc_stat(pid)[3]  # type: ignore[index]
    for name, args in (("process_stop", {"id": pid_id}), ("process_status", {"id": pid_id}), ("process_tail", {"id": pid_id})):
        result = await call(name, args, other)
        assert not result.ok and result.error_kind == "denied", (name, result)
        assert "server-ready" not in result.output
    assert (await call("process_list", {}, other)).metadata["processes"] == []
    assert alive(pid, ticks)  # nothing was signalled
    assert (await call("process_stop", {"id": pid_id}, owner)).ok


async def test_a_pid_not_started_by_the_agent_is_refused_and_that_process_lives(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    victim = cleanup.popen(["sleep", "60"])
    ctx = make_ctx(ws, resources)
    for name in ("process_stop", "process_status", "process_tail"):
        result = await call(name, {"id": str(victim.pid)}, ctx)
        assert not result.ok and result.error_kind == "denied", result
        assert "PID" in result.output
    result = await call("process_stop", {"id": victim.pid}, ctx)  # a number, not a string
    assert not result.ok and result.error_kind == "bad_args"
    assert victim.poll() is None and alive(victim.pid)


async def test_a_reused_pid_is_never_signalled_and_reads_as_exited(tmp_path: Path, ws: Path, cleanup: Cleanup) -> None:
    """A row whose PID now belongs to another program (start time differs): not signalled."""
    victim = cleanup.popen(["sleep", "60"])
    ticks = proc_stat(victim.pid)[3]  # type: ignore[index]
    async with open_database(tmp_path / "kasloop.db") as db:
        resources = ToolResources(home=tmp_path / "home", database=db)
        ctx = make_ctx(ws, resources)
        await ProcessStore(db).add(
            ProcessRecord(
                id="p-0000aa", thread_id="t1", pid=victim.pid, start_ticks=ticks + 1, command=["sleep", "60"],
                log_path=str(tmp_path / "home" / "processes" / "p-0000aa.log"), started_at=time.time(),
            )  # fmt: skip
        )
        status = await call("process_status", {"id": "p-0000aa"}, ctx)
        assert status.ok and status.metadata["status"] == "exited" and "exit code unknown" in status.output
        stopped = await call("process_stop", {"id": "p-0000aa"}, ctx)
        assert stopped.ok and stopped.metadata["signal"] is None and "nothing was signalled" in stopped.output
        await resources.aclose()
    assert victim.poll() is None and alive(victim.pid, ticks)


async def test_a_fabricated_row_without_a_start_time_is_never_signalled(tmp_path: Path, ws: Path, cleanup: Cleanup) -> None:
    """The in-memory store (no database) behaves the same: no start time recorded, no signal."""
    victim = cleanup.popen(["sleep", "60"])
    resources = ToolResources(home=tmp_path / "home")
    ctx = make_ctx(ws, resources)
    assert (await call("process_list", {}, ctx)).ok  # creates the store the tools share
    store = await resources.shared("process_store", _never)
    await store.add(ProcessRecord(id="p-0000bb", thread_id="t1", pid=victim.pid, start_ticks=None, command=["sleep"], log_path=str(tmp_path / "none.log"), started_at=time.time()))
    stopped = await call("process_stop", {"id": "p-0000bb"}, ctx)
    assert stopped.ok and stopped.metadata["signal"] is None
    assert victim.poll() is None and alive(victim.pid)
    await resources.aclose()


async def _never() -> Any:
    raise AssertionError("the process tools should have created the store already")


# --------------------------------------------------------------------------- the jail


@pytest.mark.parametrize(
    ("command", "blamed"),
    [
        ("rm x", "rm"),
        ("sh -c 'rm x'", "sh"),
        (["bash", "-c", "rm x"], "bash"),
        ("env rm x", "rm"),
        ("nice kill 1", "kill"),
        ("setsid sleep 60", "setsid"),
        ("curl http://127.0.0.1:9/", "curl"),
    ],
)
async def test_refused_commands_start_nothing(tmp_path: Path, ws: Path, command: str | list[str], blamed: str) -> None:
    resources = ToolResources(home=tmp_path / "home")
    ctx = make_ctx(ws, resources, shell={})
    result = await call("process_start", {"command": command}, ctx)
    assert not result.ok and result.error_kind == "denied", result
    assert f"`{blamed}`" in result.output
    assert (ws / "x").read_text() == "victim"
    assert not (tmp_path / "home" / "processes").exists()  # no relay, no log
    assert (await call("process_list", {}, ctx)).metadata["processes"] == []
    await resources.aclose()


async def test_python_is_refused_unless_named_in_shell_allow(ws: Path, resources: ToolResources) -> None:
    result = await call("process_start", {"command": "python server.py"}, make_ctx(ws, resources, shell={"path": PY_SHELL["path"]}))
    assert not result.ok and result.error_kind == "denied" and "shell.allow" in result.output


async def test_cwd_outside_the_workspace_is_denied_and_bad_folders_are_bad_args(tmp_path: Path, ws: Path, resources: ToolResources) -> None:
    ctx = make_ctx(ws, resources)
    outside = await call("process_start", {"command": "sleep 60", "cwd": ".."}, ctx)
    assert not outside.ok and outside.error_kind == "denied"
    not_a_folder = await call("process_start", {"command": "sleep 60", "cwd": "x"}, ctx)
    assert not not_a_folder.ok and not_a_folder.error_kind == "bad_args"
    unknown = await call("process_start", {"command": "no-such-program-here"}, make_ctx(ws, resources, shell={"allow": ["*"]}))
    assert not unknown.ok and unknown.error_kind == "bad_args"
    assert (await call("process_list", {}, ctx)).metadata["processes"] == []


async def test_secrets_in_the_environment_do_not_reach_the_log(ws: Path, resources: ToolResources, cleanup: Cleanup, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "tok-5555-do-not-leak"
    monkeypatch.setenv("MYAPP_TEST_SECRET_TOKEN", secret)
    monkeypatch.setenv("MYAPP_TEST_PLAIN", "plain-6666")
    ctx = make_ctx(ws, resources, shell={"env_passthrough": ["MYAPP_TEST_*"]})
    started = await start(ctx, cleanup, "env")
    await exited(ctx, started.metadata["id"])
    tail = await call("process_tail", {"id": started.metadata["id"], "lines": 200}, ctx)
    text = log_text(started)
    assert "PATH=" in text and "MYAPP_TEST_PLAIN=plain-6666" in text  # the passthrough pattern works...
    assert secret not in text and "MYAPP_TEST_SECRET_TOKEN" not in text  # ...but never for secret-looking names
    assert secret not in tail.output and secret not in json.dumps(tail.metadata)
    for path in Path(started.metadata["log_path"]).parent.iterdir():
        assert secret not in path.read_text(errors="replace"), path


# --------------------------------------------------------------------------- the database, retries, limits


async def test_an_idempotent_retry_returns_the_same_process(tmp_path: Path, ws: Path, cleanup: Cleanup) -> None:
    async with open_database(tmp_path / "kasloop.db") as db:
        resources = ToolResources(home=tmp_path / "home", database=db)
        ctx = make_ctx(ws, resources, key="thread-t1:step-3:call-0")
        first = await start(ctx, cleanup, "sleep 60")
        retry = await call("process_start", {"command": "sleep 60"}, ctx)
        assert retry.ok and retry.metadata["id"] == first.metadata["id"] and retry.metadata["pid"] == first.metadata["pid"]
        assert retry.metadata["reused"] is True and "already started" in retry.output
        logs = {p.name for p in (tmp_path / "home" / "processes").iterdir()}
        assert logs == {f"{first.metadata['id']}.log", f"{first.metadata['id']}.state.json"}  # no second program was started
        other_call = await start(make_ctx(ws, resources, key="thread-t1:step-4:call-0"), cleanup, "sleep 60")
        assert other_call.metadata["id"] != first.metadata["id"]
        rows = await db.fetchall("SELECT id, idempotency_key FROM kasloop_processes ORDER BY started_at")
        assert [tuple(r) for r in rows] == [(first.metadata["id"], "thread-t1:step-3:call-0"), (other_call.metadata["id"], "thread-t1:step-4:call-0")]
        await resources.aclose()


async def test_max_running_refuses_more_until_one_is_stopped(ws: Path, resources: ToolResources, cleanup: Cleanup) -> None:
    ctx = make_ctx(ws, resources, max_running=1)
    first = await start(ctx, cleanup, "sleep 60")
    refused = await call("process_start", {"command": "sleep 61"}, ctx)
    assert not refused.ok and refused.error_kind == "denied" and "max_running" in refused.output
    assert len((await call("process_list", {}, ctx)).metadata["processes"]) == 1
    assert (await call("process_stop", {"id": first.metadata["id"]}, ctx)).ok
    await start(ctx, cleanup, "sleep 62")
    other_thread = await start(make_ctx(ws, resources, thread="t2", max_running=1), cleanup, "sleep 63")  # per thread
    assert other_thread.ok


async def test_processes_outlive_the_run_and_a_later_run_manages_them(tmp_path: Path, ws: Path, cleanup: Cleanup) -> None:
    db_file = tmp_path / "kasloop.db"
    async with open_database(db_file) as db:
        resources = ToolResources(home=tmp_path / "home", database=db)
        ctx = make_ctx(ws, resources)
        server = await start(ctx, cleanup, "python server.py first-run")
        quick = await start(ctx, cleanup, "echo quick-done")
        await until(lambda: "server-ready" in log_text(server) and "quick-done" in log_text(quick), "both logs")
        await resources.aclose()
    pid = server.metadata["pid"]
    assert alive(pid)  # closing the run's resources and database stopped nothing

    async with open_database(db_file) as db:
        later = ToolResources(home=tmp_path / "other-home", database=db)  # logs are found by their recorded path
        ctx = make_ctx(ws, later)
        status = await call("process_status", {"id": server.metadata["id"]}, ctx)
        assert status.ok and status.metadata["status"] == "running" and status.metadata["pid"] == pid
        quick_status = await exited(ctx, quick.metadata["id"])
        assert quick_status.metadata["exit_code"] == 0
        tail = await call("process_tail", {"id": server.metadata["id"]}, ctx)
        assert "server-ready ['first-run']" in tail.output
        stopped = await call("process_stop", {"id": server.metadata["id"]}, ctx)
        assert stopped.ok and stopped.metadata["exit_code"] == -signal.SIGTERM
        await later.aclose()
    assert not alive(pid)
    with sqlite3.connect(db_file) as conn:
        row = conn.execute("SELECT thread_id, pid, exit_code, stopped_at IS NOT NULL, command FROM kasloop_processes WHERE id = ?", (server.metadata["id"],)).fetchone()
    assert row == ("t1", pid, -signal.SIGTERM, 1, json.dumps(["python", "server.py", "first-run"]))


LAUNCHER = """\
import asyncio, json, sys
from pathlib import Path
from kasloop.checkpoints import open_database
from kasloop.tools.base import ToolContext, ToolResources, run_tool
from kasloop.tools.process import PROCESS_TOOLS

async def main():
    db_file, home, ws, extra = sys.argv[1:5]
    async with open_database(db_file) as db:
        resources = ToolResources(home=Path(home), database=db)
        ctx = ToolContext(workspace=Path(ws), thread_id="t1", extra=json.loads(extra), resources=resources)
        result = await run_tool(PROCESS_TOOLS[0], {"command": "python server.py from-another-kasloop"}, ctx)
        await resources.aclose()
    print(json.dumps(result.to_json()))

asyncio.run(main())
"""


async def test_a_process_started_by_a_kasloop_process_that_has_exited_is_managed_later(tmp_path: Path, ws: Path, cleanup: Cleanup) -> None:
    """The starter exits (the program is not our child): status, tail and stop still work, exit code included."""
    db_file = tmp_path / "kasloop.db"
    launched = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", LAUNCHER, str(db_file), str(tmp_path / "home"), str(ws), json.dumps({"shell": PY_SHELL})],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    started = json.loads(launched.stdout.strip().splitlines()[-1])
    assert started["ok"], started
    pid = started["metadata"]["pid"]
    cleanup.add(pid)
    assert alive(pid) and proc_stat(pid)[2] != os.getsid(0)  # type: ignore[index]
    async with open_database(db_file) as db:
        resources = ToolResources(home=tmp_path / "home", database=db)
        ctx = make_ctx(ws, resources)
        await until(lambda: "server-ready" in Path(started["metadata"]["log_path"]).read_text(), "the marker in the log")
        tail = await call("process_tail", {"id": started["metadata"]["id"]}, ctx)
        assert "from-another-kasloop" in tail.output
        stopped = await call("process_stop", {"id": started["metadata"]["id"]}, ctx)
        assert stopped.ok and stopped.metadata["signal"] == "SIGTERM"
        assert stopped.metadata["exit_code"] == -signal.SIGTERM  # recorded by the relay, not by a wait() of ours
        await resources.aclose()
    assert not alive(pid)


# --------------------------------------------------------------------------- arguments, config, schema


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("process_start", {}, "command"),
        ("process_start", {"command": 5}, "command"),
        ("process_start", {"command": ["sleep", 5]}, "command"),
        ("process_start", {"command": "sleep 1", "name": 5}, "name"),
        ("process_start", {"command": "sleep 1", "name": "n" * 65}, "name"),
        ("process_start", {"command": "sleep 1", "cwd": 5}, "cwd"),
        ("process_stop", {}, "id"),
        ("process_stop", {"id": None}, "id"),
        ("process_status", {"id": ["p-000000"]}, "id"),
        ("process_tail", {"id": "p-000000", "lines": 0}, "lines"),
        ("process_tail", {"id": "p-000000", "lines": "many"}, "lines"),
        ("process_tail", {"id": "p-000000", "lines": 501}, "lines"),
    ],
)
async def test_wrong_argument_types_are_bad_args_naming_the_field(tmp_path: Path, ws: Path, tool: str, args: dict[str, Any], field: str) -> None:
    resources = ToolResources(home=tmp_path / "home")
    result = await call(tool, args, make_ctx(ws, resources))
    assert not result.ok and result.error_kind == "bad_args", result
    assert f"`{tool}`" in result.output and field in result.output
    assert not (tmp_path / "home" / "processes").exists()
    await resources.aclose()


@pytest.mark.parametrize("given", ["p-000000", "p-zzzzzz", "nonsense", "", "   "])
async def test_unknown_or_malformed_ids_are_bad_args(ws: Path, resources: ToolResources, given: str) -> None:
    for name in ("process_stop", "process_status", "process_tail"):
        result = await call(name, {"id": given}, make_ctx(ws, resources))
        assert not result.ok and result.error_kind == "bad_args", (name, result)
        assert "process_list" in result.output


@pytest.mark.parametrize(
    ("process", "key"),
    [({"max_running": 0}, "max_running"), ({"kill_grace": 100}, "kill_grace"), ({"log_limit_bytes": 10}, "log_limit_bytes"), ({"nope": 1}, "nope")],
)
async def test_a_broken_process_config_is_a_permanent_error_naming_the_key(ws: Path, resources: ToolResources, process: dict[str, Any], key: str) -> None:
    result = await call("process_start", {"command": "sleep 60"}, make_ctx(ws, resources, **process))
    assert not result.ok and result.error_kind == "permanent" and f"`{key}`" in result.output
    assert (await call("process_list", {}, make_ctx(ws, resources))).metadata["processes"] == []
    with pytest.raises(ValidationError):
        ProcessSettings.model_validate(process)


def test_settings_defaults_are_valid_and_cheap() -> None:
    settings = ProcessSettings.model_validate({})
    assert (settings.max_running, settings.kill_grace, settings.log_limit_bytes) == (8, 5.0, 1 << 20)


@pytest.mark.parametrize(
    ("name", "model", "fields", "required"),
    [
        ("process_start", ProcessStartArgs, ["command", "name", "cwd"], {"command"}),
        ("process_stop", ProcessIdArgs, ["id"], {"id"}),
        ("process_status", ProcessIdArgs, ["id"], {"id"}),
        ("process_list", ProcessListArgs, [], set()),
        ("process_tail", ProcessTailArgs, ["id", "lines"], {"id"}),
    ],
)
def test_schema_given_to_the_model_matches_the_args_model(name: str, model: type, fields: list[str], required: set[str]) -> None:
    tool = TOOLS[name]
    function = openai_schema(tool)["function"]
    assert function["name"] == name and function["description"] == tool.description and tool.args_model is model
    params = function["parameters"]
    assert list(params.get("properties", {})) == list(model.model_fields) == fields  # DESIGN §12 order
    assert set(params.get("required", [])) == {n for n, f in model.model_fields.items() if f.is_required()} == required
    for prop in params.get("properties", {}).values():
        assert prop["description"] and "title" not in prop
    if name == "process_tail":
        assert params["properties"]["lines"]["default"] == 50


def test_process_family_names_risks_and_idempotency_are_as_designed() -> None:
    assert [(t.name, t.risk, t.idempotent, t.family) for t in PROCESS_TOOLS] == [
        ("process_start", "high", False, "process"),
        ("process_stop", "high", True, "process"),
        ("process_status", "read", True, "process"),
        ("process_list", "read", True, "process"),
        ("process_tail", "read", True, "process"),
    ]
    assert all(len(t.description) < 120 for t in PROCESS_TOOLS)
    assert TOOLS["process_stop"].timeout > 30 + 3  # longer than the largest kill_grace plus the SIGKILL wait
