"""The process family's log relay (tools/process_relay.py) is a real, stdlib-only script run by path.

``process_start`` runs ``python -I -S <process_relay.py> <id>``: the file must import nothing outside
the standard library (``-S``: no site-packages), must work when started exactly like that (checked
with ``-X importtime``, which lists every module the interpreter really imported), must be what the
running relay's command line names, and must ship in the wheel. Real processes, no mocks; every wait
is a poll with a deadline.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import test_packaging

from kasloop.tools import process_relay
from kasloop.tools.base import ToolContext, ToolResources, run_tool
from kasloop.tools.process import PROCESS_TOOLS, RELAY_PATH

TOOLS = {tool.name: tool for tool in PROCESS_TOOLS}
installed = test_packaging.installed  # the module's wheel-in-a-fresh-venv fixture


def stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def test_the_relay_is_the_file_that_process_runs() -> None:
    assert RELAY_PATH == Path(process_relay.__file__).resolve() and RELAY_PATH.is_file()


def test_the_relay_imports_only_the_standard_library() -> None:
    tree = ast.parse(RELAY_PATH.read_text())
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import of {node.module!r}: the relay runs as a script"
            imported.append(node.module or "")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("__import__", "exec", "eval"):
            pytest.fail(f"the relay calls {node.func.id}(): its imports must be plain to be checked")  # type: ignore[attr-defined]
    assert imported and all(stdlib(name) for name in imported), imported
    assert "kasloop" not in {name.split(".")[0] for name in imported}
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "main" in functions
    assert any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body), "no `if __name__ == '__main__':`"


def test_the_relay_run_by_path_isolated_imports_only_stdlib_and_records_the_exit(tmp_path: Path) -> None:
    """Start the relay exactly as process_start does, with a program that prints and exits 3."""
    log = tmp_path / "p-abcdef.log"
    config = {
        "argv": ["sh", "-c", "echo relay-out; echo relay-err >&2; exit 3"], "executable": "/bin/sh", "cwd": str(tmp_path),
        "env": {"PATH": "/usr/bin:/bin"}, "log": str(log), "state": str(log.with_suffix(".state.json")),
        "limit": 1 << 20, "lifetime": None, "kill_grace": 1.0, "sandboxed": False,
    }  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", str(RELAY_PATH), "p-abcdef"],
        input=json.dumps(config).encode(), capture_output=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    reply = json.loads(proc.stdout.decode().splitlines()[0])
    assert isinstance(reply["pid"], int) and isinstance(reply["start_ticks"], int)
    modules = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.decode().splitlines() if line.startswith("import time:") and "|" in line]
    modules = [m for m in modules if m != "imported package"]
    assert "json" in modules and "subprocess" in modules  # the list is real
    foreign = [m for m in modules if not stdlib(m)]
    assert foreign == [] and "site" not in modules and "typing" not in modules, foreign or modules
    state = json.loads(log.with_suffix(".state.json").read_text())
    assert state["returncode"] == 3 and state["done"] is True and state["pid"] == reply["pid"]
    assert log.read_text().splitlines() == ["relay-out", "relay-err"] and state["total"] == len("relay-out\nrelay-err\n")


def relay_cmdline(state_file: Path) -> list[str]:
    """The command line of the relay recorded in ``state_file``, read from /proc."""
    pid = json.loads(state_file.read_text())["relay_pid"]
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


async def test_the_running_relay_command_line_names_the_file(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    resources = ToolResources(home=tmp_path / "home")
    ctx = ToolContext(workspace=ws, thread_id="t1", extra={"shell": {"sandbox": "none"}}, resources=resources)
    started = await run_tool(TOOLS["process_start"], {"command": "sleep 60"}, ctx)
    assert started.ok, started
    pid = started.metadata["pid"]
    ticks = process_relay.ticks(pid)
    try:
        cmdline = relay_cmdline(Path(started.metadata["log_path"]).with_suffix(".state.json"))
        assert cmdline == [sys.executable, "-I", "-S", str(RELAY_PATH), started.metadata["id"]]
        stopped = await run_tool(TOOLS["process_stop"], {"id": started.metadata["id"]}, ctx)
        assert stopped.ok and stopped.metadata["exit_code"] == -signal.SIGTERM, stopped
    finally:
        if ticks is not None and process_relay.ticks(pid) == ticks:  # still our program: its own group
            os.killpg(pid, signal.SIGKILL)
        await resources.aclose()


WHEEL_CHECK = """\
import asyncio, json, sys, tempfile
from pathlib import Path
from kasloop.tools.base import ToolContext, ToolResources, run_tool
from kasloop.tools.process import PROCESS_TOOLS, RELAY_PATH

async def main():
    tools = {t.name: t for t in PROCESS_TOOLS}
    root = Path(tempfile.mkdtemp())
    (root / "ws").mkdir()
    ctx = ToolContext(workspace=root / "ws", extra={"shell": {"sandbox": "none"}}, resources=ToolResources(home=root / "home"))
    started = await run_tool(tools["process_start"], {"command": "sleep 60"}, ctx)
    assert started.ok, started
    try:
        state = json.loads(Path(started.metadata["log_path"]).with_suffix(".state.json").read_text())
        cmdline = Path(f"/proc/{state['relay_pid']}/cmdline").read_bytes().rstrip(b"\\0").decode().split("\\0")
    finally:
        stopped = await run_tool(tools["process_stop"], {"id": started.metadata["id"]}, ctx)
    print(json.dumps({"relay": str(RELAY_PATH), "cmdline": cmdline, "stopped": stopped.ok}))

asyncio.run(main())
"""


def test_the_relay_ships_in_the_wheel_and_runs_from_it(installed: test_packaging.Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        assert "kasloop/tools/process_relay.py" in zf.namelist()
    proc = test_packaging._python(installed, WHEEL_CHECK)
    test_packaging._check(proc, "process_start from the installed wheel")
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    relay = Path(seen["relay"])
    assert relay.is_relative_to(installed.site_packages / "kasloop" / "tools") and relay.name == "process_relay.py"
    assert seen["cmdline"][1:] == ["-I", "-S", str(relay), seen["cmdline"][-1]] and seen["stopped"] is True
