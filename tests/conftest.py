"""Shared fixtures: scripted models, a kasloop CLI in a real subprocess, database fingerprints."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# No test may reach a real model provider: an accidental OpenAI call goes to a closed local port.
os.environ.pop("OPENAI_API_KEY", None)
os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
for key in [k for k in os.environ if k.startswith("KASLOOP_")]:
    os.environ.pop(key)


def write_script(path: Path, turns: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in turns))
    return path


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def script(tmp_path: Path) -> Callable[..., str]:
    """``script(turn, turn, ...)`` → a ``scripted:PATH`` spec."""
    counter = {"n": 0}

    def make(*turns: dict[str, Any]) -> str:
        counter["n"] += 1
        path = write_script(tmp_path / f"script{counter['n']}.jsonl", list(turns))
        return f"scripted:{path}"

    return make


class CLIResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def cli_runner(folder: Path) -> Callable[..., CLIResult]:
    """Run ``python -m kasloop ARGS`` in a fresh process, cwd = folder, home = folder/.kasloop."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CLIResult:
        full_env = {**os.environ, "KASLOOP_HOME": str(folder / ".kasloop"), "COLUMNS": "200", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "kasloop", *args],
            cwd=cwd or folder, env=full_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        return CLIResult(proc)

    return run


@pytest.fixture
def kasloop(tmp_path: Path) -> Callable[..., CLIResult]:
    return cli_runner(tmp_path)


def db_fingerprint(path: Path) -> list[str]:
    """Every row of every table, as SQL text: equal fingerprints mean nothing changed."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()
