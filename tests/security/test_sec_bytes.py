"""Bytes are not text: input that is not UTF-8 is a one-line usage error (exit 2), never "Internal error".

Through the real CLI in a fresh process: a scripted model file, ``kasloop.toml``
(found in the folder or given with ``--config``), the goal, a ``tell``
message, a thread id and a ``KASLOOP_*`` variable, each holding bytes that
are not UTF-8 (raw bytes in argv and the environment, as a shell passes
them). Each case has a positive control: the same input as valid UTF-8
(non-ASCII included) works, so the harness would see a wrongly refused input.
A refused input changes nothing in the database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLIResult, db_fingerprint, write_script

BAD = b"caf\xe9 \xff\xfe"  # Latin-1 text and stray bytes: not UTF-8
GOOD = "café ünïcode ✓".encode()


def run_cli(folder: Path, *args: str | bytes, env: dict[bytes, bytes] | None = None) -> CLIResult:
    """``python -m kasloop ARGS`` with ``args`` passed as raw bytes where given (a shell hands bytes to a program)."""
    full_env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    full_env |= {b"KASLOOP_HOME": os.fsencode(folder / ".kasloop"), b"COLUMNS": b"200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "kasloop", *args], cwd=folder, env=full_env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    return CLIResult(subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")))


def assert_refused(result: CLIResult, *words: str) -> None:
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "not valid UTF-8" in lines[0], result
    assert "Internal error" not in result.err and "Traceback" not in result.err
    for word in words:
        assert word in lines[0], (word, result)


def script_file(folder: Path, name: str = "s.jsonl") -> str:
    write_script(folder / name, [{"content": "done"}])
    return f"scripted:{folder / name}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "ws").mkdir()
    return tmp_path


def run_args(folder: Path, goal: str | bytes = "say done", *extra: str | bytes) -> list[str | bytes]:
    return ["run", goal, "--model", script_file(folder), "--tools", "files", "--workspace", "ws", *extra]


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("text", [BAD, GOOD], ids=["not-utf8", "control-utf8"])
def test_a_scripted_model_file_that_is_not_utf8(folder: Path, text: bytes) -> None:
    script = folder / "s.jsonl"
    script.write_bytes(b'{"content": "' + text + b'"}\n')
    result = run_cli(folder, "run", "say it", "--model", f"scripted:{script}", "--tools", "files", "--workspace", "ws")
    if text is BAD:
        assert_refused(result, "s.jsonl", "line 1", "0xe9")
    else:
        assert result.code == 0 and GOOD.decode() in result.out, result


def test_the_bad_line_of_a_script_is_named(folder: Path) -> None:
    script = folder / "s.jsonl"
    script.write_bytes(b'{"content": "", "tool_calls": [{"name": "files_list", "args": {}}]}\n\n{"content": "' + BAD + b'"}\n')
    assert_refused(run_cli(folder, "run", "say it", "--model", f"scripted:{script}", "--tools", "files", "--workspace", "ws"), "line 3")


def test_control_a_script_with_a_byte_order_mark_is_read(folder: Path) -> None:
    script = folder / "s.jsonl"
    script.write_bytes(b"\xef\xbb\xbf" + '{"content": "ok ✓"}\n'.encode())
    result = run_cli(folder, "run", "say it", "--model", f"scripted:{script}", "--tools", "files", "--workspace", "ws")
    assert result.code == 0 and "ok ✓" in result.out, result


@pytest.mark.parametrize("text", [BAD, GOOD], ids=["not-utf8", "control-utf8"])
def test_kasloop_toml_that_is_not_utf8(folder: Path, text: bytes) -> None:
    (folder / "kasloop.toml").write_bytes(b"autonomy = 3\n# " + text + b"\nmax_messages = 40\n")
    result = run_cli(folder, *run_args(folder))
    if text is BAD:
        assert_refused(result, "kasloop.toml", "line 2")
        assert not (folder / ".kasloop" / "kasloop.db").exists(), "nothing ran"
    else:
        assert result.code == 0, result


def test_a_config_file_given_with_config_that_is_not_utf8(folder: Path) -> None:
    (folder / "other.toml").write_bytes(b'model = "' + BAD + b'"\n')
    assert_refused(run_cli(folder, *run_args(folder, "say done", "--config", "other.toml")), "other.toml", "line 1")


# --------------------------------------------------------------------------- the command line and the environment


@pytest.mark.parametrize("goal", [b"\xff\xfe goal " + BAD, GOOD], ids=["not-utf8", "control-utf8"])
def test_a_goal_that_is_not_utf8(folder: Path, goal: bytes) -> None:
    result = run_cli(folder, *run_args(folder, goal, "--json"))
    if goal is GOOD:
        assert result.code == 0 and result.json()["status"] == "done", result
    else:
        assert_refused(result, "argument 2", "\\xff\\xfe goal")
        assert not (folder / ".kasloop").exists(), "nothing was stored"


@pytest.mark.parametrize("text", [BAD, GOOD], ids=["not-utf8", "control-utf8"])
def test_a_tell_message_that_is_not_utf8(folder: Path, text: bytes) -> None:
    write_script(folder / "s.jsonl", [{"content": "first"}, {"content": "second"}])
    first = run_cli(folder, "run", "say first", "--model", f"scripted:{folder / 's.jsonl'}", "--tools", "files", "--workspace", "ws", "--thread", "t")
    assert first.code == 0, first
    db = folder / ".kasloop" / "kasloop.db"
    before = db_fingerprint(db)
    result = run_cli(folder, "tell", "t", text)
    if text is BAD:
        assert_refused(result, "argument 3")
        assert db_fingerprint(db) == before, "the inbox was not written"
    else:
        assert result.code == 0, result
        assert db_fingerprint(db) != before


def test_a_thread_id_that_is_not_utf8(folder: Path) -> None:
    assert_refused(run_cli(folder, *run_args(folder, "say done", "--thread", b"t-\xff")), "\\xff")


@pytest.mark.parametrize("value", [BAD, GOOD], ids=["not-utf8", "control-utf8"])
def test_a_kasloop_variable_that_is_not_utf8(folder: Path, value: bytes) -> None:
    (folder / os.fsdecode(value)).mkdir()
    result = run_cli(folder, "run", "say done", "--model", script_file(folder), "--tools", "files", env={b"KASLOOP_WORKSPACE": value})
    if value is BAD:
        assert_refused(result, "KASLOOP_WORKSPACE")
    else:
        assert result.code == 0, result
