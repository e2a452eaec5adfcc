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
    for columns in ("80", "60"):
        listed = runner("approvals", env={"COLUMNS": columns})  # stdout is a pipe here
        assert listed.code == 0
        assert approval in listed.out, listed.out
        assert re.search(rf"(?<![0-9a-f]){re.escape(approval)}(?![0-9a-f])", listed.out)
