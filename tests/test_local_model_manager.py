"""The local model's installer and server manager, without the model: failure modes and stale state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kasloop.errors import LocalModelError
from kasloop.local_install import LocalPaths, install_server, missing_build_tools
from kasloop.local_server import server_status, start, stop


def test_missing_build_tools_fail_clearly_and_install_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert set(missing_build_tools()) == {"cmake", "make", "a C++ compiler (g++)"}
    paths = LocalPaths(tmp_path / "llm")
    paths.root.mkdir()
    with pytest.raises(LocalModelError, match=r"needs cmake, make, a C\+\+ compiler \(g\+\+\).*apt-get install cmake make g\+\+"):
        install_server(paths, lambda phase, fraction: None, 2)
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
