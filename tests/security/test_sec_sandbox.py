"""The command sandbox is the security boundary (tools/sandbox.py), not the shell allowlist.

Every attack here runs twice: inside the sandbox (the default), where it must fail
to reach anything outside the workspace, and with ``sandbox = "none"``, where the
very same command does reach it. The second run is the positive control: it proves
that the harness would see the break, and that it is the sandbox that stops it.
Real bubblewrap, real subprocesses, a real kasloop CLI, real servers on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import call, cli_runner, host_pids, write_script, wait_until

from kasloop.safety.protected import ProtectedPaths
from kasloop.tools.base import ToolContext, ToolResources, ToolResult, run_tool
from kasloop.tools.registry import all_tools
from kasloop.tools.sandbox import bwrap_argv, reap_orphans, sandbox_problem

TOOLS = all_tools()
PY_DIR = os.path.dirname(sys.executable)
SEARCH = [PY_DIR, "/usr/local/bin", "/usr/bin", "/bin"]
SECRET = "kasloop-sandbox-secret-7f3a9c2e51"
DEADLINE = 20.0

def test_the_sandbox_is_available_here() -> None:
    """CI installs bubblewrap (.ci/run); without it every other test here would prove nothing."""
    assert sandbox_problem() is None


# --------------------------------------------------------------------------- helpers


class Home:
    """A workspace holding kasloop's state the way the default config has it (``.`` with ``.kasloop/``
    and ``kasloop.toml`` inside), plus a folder outside the workspace."""

    def __init__(self, root: Path) -> None:
        self.ws = root / "ws"
        self.ws.mkdir()
        self.state = self.ws / ".kasloop"
        self.state.mkdir()
        self.db = self.state / "kasloop.db"
        self.db.write_text(SECRET + " in the database")
        self.config = self.ws / "kasloop.toml"
        self.config.write_text(f'autonomy = 3\n# {SECRET} in the config\n')
        self.outside = root / "outside"
        self.outside.mkdir()
        self.protected = ProtectedPaths((self.state, self.config))

    def ctx(self, *, sandbox: str = "bwrap", allow: list[str] | None = None, network: bool = False, **process: Any) -> ToolContext:
        shell: dict[str, Any] = {"allow": ["*", *(allow or [])], "path": SEARCH, "kill_grace": 0.3, "sandbox": sandbox, "network": network}
        resources = ToolResources(home=self.state / "tools", protected=self.protected)
        return ToolContext(workspace=self.ws, resources=resources, extra={"shell": shell, "process": process})


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


async def shell(ctx: ToolContext, command: str | list[str], **extra: Any) -> ToolResult:
    return await run_tool(TOOLS["shell_run"], {"command": command, **extra}, ctx)


def kill_all(token: str) -> None:
    for pid in host_pids(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- kasloop's own state is hidden

READ_STATE = [
    pytest.param("cat .kasloop/kasloop.db", id="cat-db"),
    pytest.param("cat kasloop.toml", id="cat-config"),
    pytest.param("grep -r kasloop-sandbox-secret .", id="grep-workspace"),
    pytest.param(["sh", "-c", "cat $(find {root} -name kasloop.db 2>/dev/null)"], id="find-db"),
    pytest.param(["sh", "-c", "cd .. && cat ws/.kasloop/kasloop.db"], id="parent-folder"),
    pytest.param(["ln", "-s", ".kasloop/kasloop.db", "via-link"], id="symlink-then-read"),
    pytest.param(["python", "-c", "print(open('.kasloop/kasloop.db').read())"], id="python-open"),
]


@pytest.mark.parametrize("command", READ_STATE)
async def test_kasloops_state_cannot_be_read_from_the_sandbox(home: Home, command: str | list[str]) -> None:
    if isinstance(command, list):
        command = [part.format(root=home.ws.parent) for part in command]
    reread = ["cat", "via-link"] if "via-link" in command else None
    inside = await shell(home.ctx(allow=["sh", "python", "ln"]), command)
    if reread:
        inside = await shell(home.ctx(), reread)
    assert SECRET not in inside.output, inside.output
    (home.ws / "via-link").unlink(missing_ok=True)
    control = await shell(home.ctx(sandbox="none", allow=["sh", "python", "ln"]), command)
    if reread:
        control = await shell(home.ctx(sandbox="none"), reread)
    assert SECRET in control.output, control.output  # the harness sees a leak when there is one


WRITE_STATE = [
    pytest.param(["sh", "-c", "echo x > .kasloop/kasloop.db"], ".kasloop/kasloop.db", id="overwrite-db"),
    pytest.param(["sh", "-c", "echo 'autonomy = 4' > kasloop.toml"], "kasloop.toml", id="overwrite-config"),
    pytest.param(["python", "-c", "import os; os.remove('.kasloop/kasloop.db')"], ".kasloop/kasloop.db", id="remove-db"),
    pytest.param(["python", "-c", "import shutil; shutil.rmtree('.kasloop')"], ".kasloop/kasloop.db", id="rmtree-home"),
]


@pytest.mark.parametrize(("command", "victim"), WRITE_STATE)
async def test_kasloops_state_cannot_be_changed_from_the_sandbox(home: Home, command: list[str], victim: str) -> None:
    before = (home.ws / victim).read_bytes()
    await shell(home.ctx(allow=["sh", "python"]), command)
    assert (home.ws / victim).read_bytes() == before
    control = await shell(home.ctx(sandbox="none", allow=["sh", "python"]), command)
    assert control.ok
    assert not (home.ws / victim).exists() or (home.ws / victim).read_bytes() != before


async def test_a_config_file_created_where_there_was_none_is_removed(tmp_path: Path) -> None:
    """``kasloop.toml`` does not exist yet, so nothing can be mounted over it: a program that creates it
    gets a refusal and the file is gone; any other new file stays (the control)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    resources = ToolResources(home=tmp_path / "home", protected=ProtectedPaths((ws / "kasloop.toml", tmp_path / "home")))
    ctx = ToolContext(workspace=ws, resources=resources, extra={"shell": {"allow": ["*", "sh"], "path": SEARCH}})
    result = await shell(ctx, ["sh", "-c", "printf 'autonomy = 4\\n' > kasloop.toml; echo kept > other.toml"])
    assert not result.ok and result.error_kind == "denied" and "kasloop's own state" in result.output
    assert not (ws / "kasloop.toml").exists()
    assert (ws / "other.toml").read_text() == "kept\n"


# --------------------------------------------------------------------------- the rest of the machine

WRITE_OUTSIDE = [
    pytest.param(["sh", "-c", "echo pwned > {outside}/marker"], id="sh-redirect"),
    pytest.param(["python", "-c", "open('{outside}/marker', 'w').write('pwned')"], id="python-write"),
    pytest.param(["sh", "-c", "cd /tmp && echo pwned > {outside}/marker"], id="via-tmp"),
    pytest.param(["find", ".", "-maxdepth", "0", "-exec", "sh", "-c", "echo pwned > {outside}/marker", ";"], id="find-exec"),
    pytest.param(["xargs", "-0", "sh", "-c", "echo pwned > {outside}/marker"], id="xargs"),
    pytest.param(["env", "sh", "-c", "echo pwned > {outside}/marker"], id="env-wrapper"),
    pytest.param(["timeout", "5", "sh", "-c", "echo pwned > {outside}/marker"], id="timeout-wrapper"),
    pytest.param(["nice", "sh", "-c", "echo pwned > {outside}/marker"], id="nice-wrapper"),
]


@pytest.mark.parametrize("template", WRITE_OUTSIDE)
async def test_nothing_outside_the_workspace_can_be_written(home: Home, template: list[str]) -> None:
    command = [part.format(outside=home.outside) for part in template]
    await shell(home.ctx(allow=["sh", "python"]), command)
    assert not (home.outside / "marker").exists()
    control = await shell(home.ctx(sandbox="none", allow=["sh", "python"]), command)
    assert control.ok and (home.outside / "marker").exists(), control.output


EVIL = """\
import os, pathlib
pathlib.Path("{outside}/marker").write_text("pwned")
print(pathlib.Path("{db}").read_text())
"""


async def test_pydoc_running_a_workspace_module_is_contained(home: Home) -> None:
    """``shell.allow = ["*"]`` lets ``pydoc3 ./evil.py`` import (run) a file the model wrote: the allowlist
    cannot see that, the sandbox contains it."""
    (home.ws / "evil.py").write_text(EVIL.format(outside=home.outside, db=home.db))
    inside = await shell(home.ctx(), ["pydoc3", "./evil.py"])
    assert not (home.outside / "marker").exists() and SECRET not in inside.output
    control = await shell(home.ctx(sandbox="none"), ["pydoc3", "./evil.py"])
    assert (home.outside / "marker").exists() and SECRET in control.output


async def test_an_editor_shell_escape_is_contained(home: Home) -> None:
    """``vim.basic -Nes '+!cmd'`` is not on any opaque list (its name is not ``vim``): with ``"*"`` it runs."""
    command = ["vim.basic", "-Nes", f"+!echo pwned > {home.outside}/marker; cat {home.db}", "+qa!"]
    inside = await shell(home.ctx(), command)
    assert not (home.outside / "marker").exists() and SECRET not in inside.output
    await shell(home.ctx(sandbox="none"), command)
    assert (home.outside / "marker").exists()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["env", "-S", "sh -c 'echo pwned'"], id="env-S"),
        pytest.param(["sort", "--compress-program=sh", "x"], id="sort-compress-program"),
        pytest.param(["find", ".", "-exec", "{}", ";"], id="find-exec-found-files"),
        pytest.param(["less", "x"], id="pager"),
        pytest.param(["sh", "-c", "id"], id="shell-not-named"),
    ],
)
async def test_the_allowlist_still_refuses_what_it_parses(home: Home, command: list[str]) -> None:
    """Policy stays a layer in front of the sandbox: with ``"*"`` but no opaque program named, these are
    refused before anything starts (control: ``ls`` under the same policy runs)."""
    ctx = ToolContext(workspace=home.ws, resources=ToolResources(protected=home.protected), extra={"shell": {"allow": ["*"], "path": SEARCH}})
    refused = await shell(ctx, command)
    assert not refused.ok and refused.error_kind == "denied", refused.output
    assert (await shell(ctx, "ls")).ok


async def test_no_network_unless_the_settings_share_it(home: Home) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reached")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/from-sandbox"
    fetch = ["python", "-c", f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read())"]
    try:
        isolated = await shell(home.ctx(allow=["python"]), fetch)
        assert "reached" not in isolated.output and hits == []
        shared = await shell(home.ctx(allow=["python"], network=True), fetch)
        assert "reached" in shared.output and hits == ["/from-sandbox"]
    finally:
        server.shutdown()
        server.server_close()


async def test_host_sockets_in_run_and_tmp_are_out_of_reach(home: Home, tmp_path: Path) -> None:
    """A service's Unix socket (a database, a container runtime) is reachable on a read-only file system;
    ``/tmp`` and ``/run`` are fresh in the sandbox, so sockets there are not."""
    import socket

    path = Path("/tmp") / f"kasloop-test-{os.getpid()}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    probe = ["python", "-c", f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r}); print('connected')"]
    try:
        inside = await shell(home.ctx(allow=["python"]), probe)
        assert "connected" not in inside.output
        control = await shell(home.ctx(allow=["python"], sandbox="none"), probe)
        assert "connected" in control.output
    finally:
        listener.close()
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- secrets in /proc and the environment


async def test_kasloops_environment_is_not_readable_through_proc(home: Home) -> None:
    """kasloop's own process (here a stand-in started with a secret in its environment) is invisible:
    the sandbox has its own PID namespace and its own ``/proc``."""
    victim = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, "KASLOOP_TEST_API_KEY": SECRET}, stdin=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: SECRET.encode() in Path(f"/proc/{victim.pid}/environ").read_bytes(), "the stand-in to start")
        direct = ["sh", "-c", f"tr '\\0' '\\n' < /proc/{victim.pid}/environ"]
        for command in (["sh", "-c", "cat /proc/*/environ | tr '\\0' '\\n'; env"], direct):
            inside = await shell(home.ctx(allow=["sh"]), command)
            assert SECRET not in inside.output, inside.output
        control = await shell(home.ctx(allow=["sh"], sandbox="none"), direct)
        assert SECRET in control.output, control.output
    finally:
        victim.kill()
        victim.wait()


def test_a_prompt_injected_model_cannot_read_kasloops_environment_through_the_cli(tmp_path: Path) -> None:
    """The reported attack, as a model would drive it: ``find /proc -name environ -exec grep`` with the
    default-allowed programs at level 4, through the real CLI. Control: ``sandbox = "none"``.
    (The variable is not one kasloop knows as a secret, so redaction does not hide it: only the sandbox does.)"""
    runner = cli_runner(tmp_path, env={"DEPLOY_NOTE": "tk-" + SECRET})
    command = ["find", "/proc", "-maxdepth", "2", "-name", "environ", "-exec", "grep", "-a", "-o", "tk-kasloop[a-z0-9-]*", "{}", ";"]
    write_script(tmp_path / "s.jsonl", [{"tool_calls": [call("shell_run", command=command)]}, {"content": "done"}])
    (tmp_path / "kasloop.toml").write_text('autonomy = 4\ntools = ["shell"]\n')
    result = runner("run", "read env", "--model", "scripted:s.jsonl", "--json")
    assert result.code == 0, result
    history = runner("history", result.json()["thread"], "--json")
    assert [e for e in history.json() if e["kind"] == "tool"][0]["ok"] is True, history.out
    assert SECRET not in history.out
    (tmp_path / "kasloop.toml").write_text('autonomy = 4\ntools = ["shell"]\n[tool_settings.shell]\nsandbox = "none"\n')
    write_script(tmp_path / "s2.jsonl", [{"tool_calls": [call("shell_run", command=command)]}, {"content": "done"}])
    unsandboxed = runner("run", "read env", "--model", "scripted:s2.jsonl", "--json")
    assert unsandboxed.code == 0, unsandboxed
    assert "warning: the command sandbox is OFF" in unsandboxed.err.splitlines()[0]
    leaked = runner("history", unsandboxed.json()["thread"], "--json")
    assert SECRET in leaked.out  # without the sandbox, kasloop's own environment comes back


# --------------------------------------------------------------------------- children never outlive kasloop

SLEEPER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]]); time.sleep(300)"
"""A program and its child, each with a token in its command line (``sleep`` takes no extra words)."""

ORPHAN_DRIVER = """\
import asyncio, sys
from pathlib import Path
from kasloop.safety.protected import ProtectedPaths
from kasloop.tools.base import ToolContext, ToolResources, run_tool
from kasloop.tools.registry import all_tools
import os
ws, sandbox, token = Path(sys.argv[1]), sys.argv[2], os.environ["ORPHAN_TOKEN"]
ctx = ToolContext(workspace=ws, resources=ToolResources(home=ws.parent / "home"),
                  extra={"shell": {"allow": ["*", "python"], "sandbox": sandbox, "path": sys.argv[4:]}})
asyncio.run(run_tool(all_tools()["shell_run"], {"command": ["python", "-c", sys.argv[3], token], "timeout": 300}, ctx))
"""


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_shell_child_dies_with_kasloop_killed_by_sigkill(tmp_path: Path, sandbox: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    token = f"kasloop-orphan-{sandbox}-{os.getpid()}"
    driver = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_DRIVER, str(ws), sandbox, SLEEPER, *SEARCH], stdin=subprocess.DEVNULL, env={**os.environ, "ORPHAN_TOKEN": token}
    )
    try:
        wait_until(lambda: len(host_pids(token)) == 2, "the command and its child to start")
        driver.kill()
        driver.wait()
        if sandbox == "bwrap":
            wait_until(lambda: host_pids(token) == [], "the sandbox to die with kasloop")
        else:
            # The control: without the sandbox they survive kill -9 (what the issue reported).
            assert len(host_pids(token)) == 2
    finally:
        driver.kill()
        kill_all(token)


def test_resume_reaps_a_recorded_sandbox_whose_kasloop_is_gone(tmp_path: Path) -> None:
    """``--die-with-parent`` is the first line of defence; records are the second: a sandbox whose kasloop
    died (here started without ``--die-with-parent`` to stand for one that escaped it) is killed when an
    agent opens the home again, and a sandbox of a live kasloop is left alone (the control)."""
    from kasloop.tools.sandbox import bwrap_executable

    ws = tmp_path / "ws"
    ws.mkdir()
    folder = tmp_path / "records"
    folder.mkdir()
    bwrap = bwrap_executable()
    assert bwrap is not None
    orphan_token, live_token = f"kasloop-reap-orphan-{os.getpid()}", f"kasloop-reap-live-{os.getpid()}"

    def sandbox(token: str) -> subprocess.Popen[bytes]:
        argv = bwrap_argv(bwrap, ["python", "-c", SLEEPER, token], workspace=ws, cwd=ws, protected=ProtectedPaths(), search_path=SEARCH)
        return subprocess.Popen([a for a in argv if a != "--die-with-parent"], start_new_session=True, env={"PATH": os.pathsep.join(SEARCH)})

    orphan, live = sandbox(orphan_token), sandbox(live_token)
    gone_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_owner.wait()
    try:
        wait_until(lambda: len(host_pids(orphan_token)) == 2 and len(host_pids(live_token)) == 2, "both sandboxes to start")
        (folder / f"{orphan.pid}.json").write_text(json.dumps({"pid": orphan.pid, "ticks": _ticks(orphan.pid), "owner": gone_owner.pid, "owner_ticks": 1}))
        (folder / f"{live.pid}.json").write_text(json.dumps({"pid": live.pid, "ticks": _ticks(live.pid), "owner": os.getpid(), "owner_ticks": _ticks(os.getpid())}))
        assert reap_orphans(folder) == [orphan.pid]
        orphan.wait(timeout=DEADLINE)
        wait_until(lambda: host_pids(orphan_token) == [], "the orphan's program to end")
        assert host_pids(live_token) and not (folder / f"{orphan.pid}.json").exists() and (folder / f"{live.pid}.json").exists()
    finally:
        orphan.kill()
        live.kill()
        kill_all(orphan_token)
        kill_all(live_token)


def _ticks(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rfind(b")") + 2 :].split()[19])


# --------------------------------------------------------------------------- processes: own sandbox, lifetime


async def test_a_background_process_is_sandboxed_too(home: Home) -> None:
    ctx = home.ctx(allow=["sh"])
    command = ["sh", "-c", f"cat {home.db}; echo pwned > {home.outside}/marker; echo finished"]
    started = await run_tool(TOOLS["process_start"], {"command": command}, ctx)
    assert started.ok, started.output
    log = Path(started.metadata["log_path"])
    wait_until(lambda: log.exists() and "finished" in log.read_text(), "the program to finish")
    assert SECRET not in log.read_text() and not (home.outside / "marker").exists()
    control = await run_tool(TOOLS["process_start"], {"command": command}, home.ctx(allow=["sh"], sandbox="none"))
    control_log = Path(control.metadata["log_path"])
    wait_until(lambda: control_log.exists() and "finished" in control_log.read_text(), "the control to finish")
    assert SECRET in control_log.read_text() and (home.outside / "marker").exists()


async def test_a_background_process_is_stopped_after_its_lifetime(home: Home) -> None:
    token, keeper_token = f"kasloop-lifetime-{os.getpid()}", f"kasloop-keeper-{os.getpid()}"
    ctx = home.ctx(allow=["python"], max_lifetime=0.5, kill_grace=0.5)
    started = await run_tool(TOOLS["process_start"], {"command": ["python", "-c", SLEEPER, token]}, ctx)
    assert started.ok, started.output
    keeper = await run_tool(TOOLS["process_start"], {"command": ["python", "-c", SLEEPER, keeper_token]}, home.ctx(allow=["python"]))
    try:
        wait_until(lambda: len(host_pids(token)) == 2 or not host_pids(token), "the first program to start")
        wait_until(lambda: len(host_pids(keeper_token)) == 2 and not host_pids(token), "the lifetime to end the first process")
        status = await run_tool(TOOLS["process_status"], {"id": started.metadata["id"]}, ctx)
        assert status.metadata["status"] == "exited", status.output
        assert host_pids(keeper_token), "a process without a lifetime keeps running (the control)"
    finally:
        await run_tool(TOOLS["process_stop"], {"id": keeper.metadata["id"]}, home.ctx(allow=["python"]))
        kill_all(token)
        kill_all(keeper_token)


# --------------------------------------------------------------------------- no sandbox: refuse, naming the fix


def test_without_bubblewrap_shell_and_process_tools_refuse_naming_the_fix(tmp_path: Path) -> None:
    runner = cli_runner(tmp_path, env={"KASLOOP_BWRAP": str(tmp_path / "no-bwrap")})
    (tmp_path / "kasloop.toml").write_text('autonomy = 4\ntools = ["shell", "process"]\n')
    write_script(
        tmp_path / "s.jsonl",
        [{"tool_calls": [call("shell_run", command="ls"), call("process_start", command="sleep 5")]}, {"content": "done"}],
    )
    result = runner("run", "list", "--model", "scripted:s.jsonl", "--json")
    history = runner("history", result.json()["thread"], "--json")
    tool_events = [e for e in history.json() if e["kind"] == "tool"]
    assert {e["tool"] for e in tool_events} == {"shell_run", "process_start"} and not any(e["ok"] for e in tool_events), history.out
    assert all("apt-get install bubblewrap" in e["output"] for e in tool_events), history.out
    status = runner("status")
    assert "command sandbox: unavailable" in status.out
    # The control: the same run with bubblewrap available runs both.
    ok_runner = cli_runner(tmp_path)
    write_script(tmp_path / "s2.jsonl", [{"tool_calls": [call("shell_run", command="ls")]}, {"content": "done"}])
    again = ok_runner("run", "list", "--model", "scripted:s2.jsonl", "--json")
    events = [e for e in ok_runner("history", again.json()["thread"], "--json").json() if e["kind"] == "tool"]
    assert events and events[0]["ok"] is True


def test_status_says_when_a_person_turned_the_sandbox_off(tmp_path: Path) -> None:
    runner = cli_runner(tmp_path)
    assert "command sandbox: on (bubblewrap" in runner("status").out
    (tmp_path / "kasloop.toml").write_text('[tool_settings.shell]\nsandbox = "none"\n')
    assert 'command sandbox: OFF (sandbox = "none"' in runner("status").out


def test_a_bad_sandbox_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    runner = cli_runner(tmp_path)
    (tmp_path / "kasloop.toml").write_text('tools = ["shell"]\n[tool_settings.shell]\nsandbox = "off"\n')
    result = runner("run", "x", "--model", "scripted:none.jsonl")
    assert result.code == 2 and "sandbox" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_bwrap_argv_hides_every_existing_protected_path(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".kasloop").mkdir(parents=True)
    (ws / "kasloop.toml").write_text("")
    elsewhere = tmp_path / "secret.key"
    elsewhere.write_text("k")
    argv = bwrap_argv("bwrap", ["ls"], workspace=ws, cwd=ws, protected=ProtectedPaths((ws / ".kasloop", ws / "kasloop.toml", elsewhere, tmp_path / "missing")))
    text = " ".join(argv)
    assert f"--tmpfs {ws / '.kasloop'} --remount-ro {ws / '.kasloop'}" in text
    assert f"--ro-bind /dev/null {ws / 'kasloop.toml'}" in text and f"--ro-bind /dev/null {elsewhere}" in text
    assert str(tmp_path / "missing") not in text
    assert "--unshare-net" in argv and "--die-with-parent" in argv and argv.index("--bind") < argv.index("--tmpfs", argv.index("--bind"))


def test_the_sandbox_process_starts_with_a_clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bubblewrap's own first process (PID 1 in the sandbox) keeps the environment it was started with:
    that must be the scrubbed one, or ``/proc/1/environ`` would hand kasloop's secrets to the program."""
    import asyncio

    monkeypatch.setenv("KASLOOP_TEST_TOKEN", SECRET)
    home = Home(tmp_path)
    result = asyncio.run(shell(home.ctx(allow=["sh"]), ["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"]))
    assert result.ok and "PATH=" in result.output and SECRET not in result.output


async def test_the_users_credential_stores_are_hidden(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """``~/.ssh``, ``~/.aws``, ``~/.netrc``... are on the readable root file system; the sandbox hides them.
    (The fake home is outside ``/tmp``, which the sandbox replaces anyway, so only the hiding can stop it.)"""
    import shutil
    import tempfile

    base = Path.home() / ".cache"
    base.mkdir(exist_ok=True)
    fake_home = Path(tempfile.mkdtemp(prefix="kasloop-test-home-", dir=base))
    try:
        (fake_home / ".ssh").mkdir()
        (fake_home / ".ssh" / "id_ed25519").write_text(SECRET + " private key")
        (fake_home / ".netrc").write_text(f"machine example.org password {SECRET}")
        monkeypatch.setenv("HOME", str(fake_home))
        command = ["sh", "-c", f"cat {fake_home}/.ssh/id_ed25519 {fake_home}/.netrc"]
        inside = await shell(home.ctx(allow=["sh"]), command)
        assert SECRET not in inside.output, inside.output
        control = await shell(home.ctx(allow=["sh"], sandbox="none"), command)
        assert control.output.count(SECRET) == 2, control.output
    finally:
        shutil.rmtree(fake_home, ignore_errors=True)


def test_deleting_a_thread_stops_its_background_processes_and_removes_its_rows(tmp_path: Path) -> None:
    """``process_start`` programs outlive runs on purpose, but not their thread: ``kasloop delete`` stops
    them, then removes the thread's checkpoints and rows. Another thread's process keeps running (the control)."""
    import sqlite3

    runner = cli_runner(tmp_path)
    (tmp_path / "kasloop.toml").write_text(f'autonomy = 4\ntools = ["process"]\n[tool_settings.shell]\nallow = ["python"]\npath = {json.dumps(SEARCH)}\n')
    tokens = {name: f"kasloop-delete-{name}-{os.getpid()}" for name in ("doomed", "kept")}
    for name, token in tokens.items():
        write_script(tmp_path / f"{name}.jsonl", [{"tool_calls": [call("process_start", command=["python", "-c", SLEEPER, token])]}, {"content": "started"}])
        started = runner("run", "start it", "--thread", name, "--model", f"scripted:{name}.jsonl")
        assert started.code == 0, started
    try:
        wait_until(lambda: all(len(host_pids(t)) == 2 for t in tokens.values()), "both programs to run")
        deleted = runner("delete", "doomed", "--json")
        assert deleted.code == 0, deleted
        assert len(deleted.json()["processes_stopped"]) == 1
        wait_until(lambda: host_pids(tokens["doomed"]) == [], "the deleted thread's program to stop")
        assert len(host_pids(tokens["kept"])) == 2
        conn = sqlite3.connect(tmp_path / ".kasloop" / "kasloop.db")
        try:
            for table in ("kasloop_threads", "kasloop_events", "kasloop_ledger", "checkpoints", "kasloop_processes"):
                left = conn.execute(f"SELECT count(*) FROM {table} WHERE thread_id = 'doomed'").fetchone()[0]
                kept = conn.execute(f"SELECT count(*) FROM {table} WHERE thread_id = 'kept'").fetchone()[0]
                assert left == 0 and kept > 0, (table, left, kept)
        finally:
            conn.close()
        again = runner("delete", "doomed")
        assert again.code == 2 and "No thread `doomed`" in again.err
    finally:
        runner("delete", "kept")
        for token in tokens.values():
            kill_all(token)


async def test_a_program_in_a_virtualenv_under_tmp_still_runs(tmp_path: Path) -> None:
    """``/tmp`` is fresh in the sandbox; a search-path folder there (a virtualenv, as in a CI clone) is bound
    back read-only, so the very program the policy checked runs, as its virtualenv's interpreter."""
    import venv

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(symlinks=True, with_pip=False).create(env_dir)
    ws = tmp_path / "ws"
    ws.mkdir()
    ctx = ToolContext(workspace=ws, extra={"shell": {"allow": ["python"], "path": [str(env_dir / "bin"), "/usr/bin", "/bin"]}})
    result = await shell(ctx, ["python", "-c", "import sys; print(sys.prefix); open(sys.prefix + '/marker', 'w')"])
    assert f"{env_dir}\n" in result.output, result.output
    assert not (env_dir / "marker").exists()  # bound back read-only: a program cannot change its interpreter
