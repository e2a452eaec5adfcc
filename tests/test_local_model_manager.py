"""The local model's installer and server manager, without the model: failure modes, stale state, and a
server that stays warm between commands (a stand-in ``llama-server`` that answers ``/health``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kasloop.errors import LocalModelError
from kasloop.models.local_install import LocalPaths, Stages, install_server, missing_build_tools
from kasloop.models.local_server import server_status, start, stop
from kasloop.tools.procfs import proc_stat

ROOT = Path(__file__).resolve().parent.parent


def test_missing_build_tools_fail_clearly_and_install_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert set(missing_build_tools()) == {"cmake", "make", "a C++ compiler (g++)"}
    paths = LocalPaths(tmp_path / "llm")
    paths.root.mkdir()
    with pytest.raises(LocalModelError, match=r"needs cmake, make, a C\+\+ compiler \(g\+\+\).*apt-get install cmake make g\+\+"):
        install_server(paths, Stages(None, 3), 2)
    assert list(paths.root.iterdir()) == [], "nothing half-installed"


def test_cli_install_without_cmake_exits_with_one_line(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin), "KASLOOP_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "kasloop", "local-model", "install"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "needs cmake" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "llm" / "server").exists() and not (tmp_path / "cache" / "llm" / "model").exists()


def test_start_without_install_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="kasloop local-model install"):
        start(LocalPaths(tmp_path / "llm"))


def test_stale_state_with_a_reused_pid_is_detected_and_that_process_is_never_killed(tmp_path: Path) -> None:
    paths = LocalPaths(tmp_path / "llm")
    paths.root.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        paths.state.write_text(json.dumps({"pid": bystander.pid, "port": 1, "start_ticks": 12345}))
        status = server_status(paths)
        assert status["running"] is False and status["stale_state"] is True
        assert stop(paths) is False
        assert bystander.poll() is None, "a process that merely reused the pid is left alone"
        assert not paths.state.exists()
    finally:
        bystander.stdin.close()  # type: ignore[union-attr]
        bystander.wait(timeout=10)


# -- a server that stays warm between commands --------------------------------------------------------

FAKE_SERVER = """\
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Health).serve_forever()
"""


@pytest.fixture
def fake_install(tmp_path: Path) -> Iterator[tuple[Path, LocalPaths]]:
    """A cache whose "llama-server" is a small Python HTTP server answering ``/health`` like the real one."""
    cache = tmp_path / "cache"
    paths = LocalPaths(cache / "llm")
    paths.model.parent.mkdir(parents=True)
    paths.model.write_bytes(b"GGUF")
    paths.server.parent.mkdir(parents=True)
    paths.server.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    paths.server.chmod(0o755)
    try:
        yield cache, paths
    finally:
        stop(paths)


def _cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KASLOOP_CACHE": str(cache), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "kasloop", "local-model", *args], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_a_server_started_by_one_command_stays_warm_for_the_next_until_stopped(fake_install: tuple[Path, LocalPaths]) -> None:
    cache, paths = fake_install
    first = _cli(cache, "start")
    assert first.returncode == 0, first.stderr
    assert "Local model server ready in " in first.stdout and "keeps running for later runs" in first.stdout
    pid = json.loads(paths.state.read_text())["pid"]
    # The command that started it has exited; the server lives on in its own session, healthy.
    status = server_status(paths)
    assert status["running"] and status["healthy"] and status["pid"] == pid
    assert os.getsid(pid) == pid, "in a session of its own: a terminal closing or make finishing does not end it"

    again = _cli(cache, "start", "--json")
    assert again.returncode == 0, again.stderr
    info = json.loads(again.stdout)
    assert info["already_running"] is True and info["pid"] == pid, "the next command reuses the warm server"
    assert "healthy" in _cli(cache, "status").stdout

    stopped = _cli(cache, "stop")
    assert stopped.returncode == 0 and "Stopped the local model server." in stopped.stdout
    assert proc_stat(pid) is None or proc_stat(pid).state == "Z"  # type: ignore[union-attr]
    assert not paths.state.exists()
    assert _cli(cache, "stop").stdout.strip() == "The local model server was not running."


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_starts_the_server_after_installing_and_before_the_demo() -> None:
    plan = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    commands = [line for line in plan if "kasloop " in line]
    assert [c.split("kasloop ", 1)[1] for c in commands[-3:]] == ["local-model install", "local-model start", "demo --local"]
    tests = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "local-model start" not in tests, "make test leaves starting and stopping the server to its tests"
