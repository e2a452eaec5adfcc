"""Small things a newcomer reaches for first: the version and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from conftest import cli_runner


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = cli_runner(tmp_path)("--version")
    assert result.code == 0 and result.out.strip() == f"kasloop {version('kasloop')}"
    assert not (tmp_path / ".kasloop").exists()  # nothing opened, nothing written


def test_shell_completion_is_available(tmp_path: Path) -> None:
    """The installed ``kasloop`` command prints the completion script for the shell it runs in (bash here)."""
    script = Path(sys.executable).parent / "kasloop"
    result = subprocess.run(["bash", "-c", f"'{script}' --show-completion; true"], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "SHELL": "/bin/bash"}, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "_kasloop_completion()" in result.stdout and "complete -o default -F _kasloop_completion kasloop" in result.stdout


def test_help_shows_config_tables_literally(tmp_path: Path) -> None:
    """Rich markup would swallow ``[team.NAME]``; the help must show where in kasloop.toml to look."""
    result = cli_runner(tmp_path)("run", "--help", env={"COLUMNS": "200"})
    assert result.code == 0
    assert "[team.NAME] table of kasloop.toml" in result.out and "[collaboration.NAME] table of kasloop.toml" in result.out


def test_approval_ids_stay_whole_on_80_columns_and_in_pipes(tmp_path: Path) -> None:
    import re

    from conftest import call, write_script

    runner = cli_runner(tmp_path)
    (tmp_path / "ws").mkdir()
    long = "a-very-long-file-name-that-takes-up-the-whole-line-" * 3 + ".md"
    write_script(tmp_path / "s.jsonl", [{"tool_calls": [call("files_write", path=long, content="x" * 300)]}])
    started = runner("run", "write it", "--autonomy", "2", "--workspace", "ws", "--model", "scripted:s.jsonl", "--json")
    approval = started.json()["approvals"][0]["approval_id"]
    thread = started.json()["thread"]
    for columns in ("80", "60"):
        listed = runner("approvals", env={"COLUMNS": columns})  # stdout is a pipe here
        assert listed.code == 0
        assert approval in listed.out, listed.out
        assert re.search(rf"(?<![0-9a-f]){re.escape(approval)}(?![0-9a-f])", listed.out)
        assert thread in listed.out and "files_write" in listed.out, "the thread id and the tool stay whole too"


async def test_live_progress_names_the_node_running_now(tmp_path: Path) -> None:
    """On a terminal the spinner reads ``step N · <node running now> · last tool X``: drawn as each node starts,
    so while a node runs the line on screen names it (never the last one finished, never ``__interrupt__``)."""
    import io
    import re
    from typing import Any

    from langchain_core.callbacks import AsyncCallbackHandler
    from rich.console import Console

    from conftest import call, write_script
    from kasloop import Agent, AgentConfig
    from kasloop.cli.run import LiveProgress

    line = re.compile(r"step (\d+) · (\S+) · last tool (\S+)")
    screen = io.StringIO()
    progress = LiveProgress(True, "model: scripted", console=Console(file=screen, force_terminal=True, width=80))

    class Screen(AsyncCallbackHandler):
        """When a graph node really begins, read the last line drawn on the terminal."""

        def __init__(self) -> None:
            self.seen: list[tuple[str, str]] = []

        async def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            name = kwargs.get("name")
            if name and (kwargs.get("metadata") or {}).get("langgraph_node") == name:
                drawn = line.findall(screen.getvalue())
                self.seen.append((name, drawn[-1][1] if drawn else "nothing drawn"))

    (tmp_path / "ws").mkdir()
    model = write_script(tmp_path / "s.jsonl", [{"tool_calls": [call("files_write", path="a.txt", content="a")]}, {"content": "wrote a.txt"}])
    watcher = Screen()
    agent = Agent(AgentConfig(autonomy=2, model=f"scripted:{model}", tools=["files"], workspace=tmp_path / "ws"),
                  home=tmp_path / ".kasloop", progress=progress, callbacks=[watcher])
    with progress:
        waiting = await agent.run("write a.txt", thread_id="t")
        done = await agent.approve(waiting.approvals[0]["approval_id"])

    assert waiting.status == "waiting_approval" and done.status == "done"
    assert watcher.seen and all(node == drawn for node, drawn in watcher.seen), watcher.seen
    drawn = line.findall(screen.getvalue())
    running = [node for i, (_, node, _) in enumerate(drawn) if i == 0 or drawn[i - 1][1] != node]
    assert running == ["perceive", "decide", "human_approval", "act", "perceive", "decide"], running
    assert ("1", "act", "files_write") in drawn, "while act runs, the tool it runs is named"
    assert "__" not in screen.getvalue()
    assert screen.getvalue().count("model: scripted") == 1


def test_kasloop_run_on_a_terminal_shows_the_running_node(tmp_path: Path) -> None:
    """The real command with stderr on a pseudo-terminal: the spinner names each node as it starts."""
    import pty
    import re
    import select

    from conftest import call, write_script

    (tmp_path / "ws").mkdir()
    write_script(tmp_path / "s.jsonl", [{"tool_calls": [call("files_write", path="a.txt", content="a")]}, {"content": "wrote a.txt"}])
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kasloop", "run", "write a.txt", "--autonomy", "4", "--workspace", "ws", "--tools", "files",
         "--model", "scripted:s.jsonl"],
        cwd=tmp_path, env={**os.environ, "KASLOOP_HOME": str(tmp_path / ".kasloop"), "COLUMNS": "80"},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
    )
    os.close(slave)
    terminal = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            assert ready, "kasloop run printed nothing for 120 s"
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            terminal += data
    finally:
        os.close(master)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.wait(timeout=60) == 0, stdout
    assert "wrote a.txt" in stdout and "last tool" not in stdout, "the spinner is on stderr only"
    drawn = re.findall(r"step (\d+) · (\S+) · last tool (\S+)", terminal.decode())
    running = [node for i, (_, node, _) in enumerate(drawn) if i == 0 or drawn[i - 1][1] != node]
    assert running == ["perceive", "decide", "act", "perceive", "decide"], terminal
    assert ("1", "act", "files_write") in drawn
