"""The ``shell`` family (tools/shell.py): real subprocesses in a workspace under pytest's tmp_path.

Each attack test ends in a classified error and checks that nothing happened:
the victim file ``x`` is still there and the workspace is otherwise unchanged.
Tests that need Python in the child allow it explicitly (``python`` is opaque,
so refused by default) and search this interpreter's folder first.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from conftest import host_pids

from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult, openai_schema, run_tool
from kasloop.tools.registry import select_tools
from kasloop.tools.shell import DEFAULT_ALLOW, DEFAULT_DENY, SHELL_TOOLS, STDERR_KEEP, STDOUT_KEEP, ShellPolicy, ShellRunArgs, check_command

SHELL: Tool = SHELL_TOOLS[0]
PY_DIR = os.path.dirname(sys.executable)
PYTHON_CFG: dict[str, Any] = {"allow": ["python"], "path": [PY_DIR, "/usr/local/bin", "/usr/bin", "/bin"], "kill_grace": 0.3}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "x").write_text("victim")
    return path


def tree(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            found[rel] = "link" if full.is_symlink() else "dir" if full.is_dir() else "file:" + full.read_bytes().hex()
    return found


async def shell(ws: Path, command: str | list[str], *, cfg: dict[str, Any] | None = None, **args: Any) -> ToolResult:
    ctx = ToolContext(workspace=ws, extra={"shell": cfg} if cfg is not None else {})
    return await run_tool(SHELL, {"command": command, **args}, ctx)


def streams(result: ToolResult) -> tuple[str, str]:
    """(stdout, stderr) parsed back out of the rendered output."""
    match = re.search(r"--- stdout \(\d+ bytes\) ---\n(.*)\n--- stderr \(\d+ bytes\) ---\n(.*)\Z", result.output, re.S)
    assert match, result.output
    return match.group(1), match.group(2)


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


# --------------------------------------------------------------------------- running programs


async def test_allowed_command_returns_stdout_stderr_and_exit_code_separately(ws: Path) -> None:
    (ws / "a.txt").write_text("hay\nneedle\nhay\n")
    result = await shell(ws, "grep -n needle a.txt missing.txt")
    assert result.ok and result.error_kind is None, result
    assert result.output.startswith("exit code 2\n")
    out, err = streams(result)
    assert out == "a.txt:2:needle\n"
    assert err == "grep: missing.txt: No such file or directory\n"
    meta = result.metadata
    assert meta["exit_code"] == 2 and meta["argv"] == ["grep", "-n", "needle", "a.txt", "missing.txt"]
    assert meta["stdout_bytes"] == len(out) and meta["stderr_bytes"] == len(err)
    assert meta["stdout_dropped"] == 0 and meta["stderr_dropped"] == 0


async def test_zero_and_nonzero_exits_are_both_results(ws: Path) -> None:
    ok = await shell(ws, "echo hello")
    assert ok.ok and ok.metadata["exit_code"] == 0 and streams(ok) == ("hello\n", "")
    nomatch = await shell(ws, "grep nothing-like-this x")  # grep: 1 = no match, not a failure
    assert nomatch.ok and nomatch.error_kind is None and nomatch.metadata["exit_code"] == 1
    assert nomatch.output.startswith("exit code 1\n")


async def test_argv_list_keeps_spaces_and_quotes_verbatim(ws: Path) -> None:
    result = await shell(ws, ["echo", "a  b", "'quoted'", '"$HOME"'])
    assert result.ok and streams(result)[0] == "a  b 'quoted' \"$HOME\"\n"
    split = await shell(ws, "echo 'a  b' \"c d\"")
    assert streams(split)[0] == "a  b c d\n"


async def test_wrappers_run_allowed_programs(ws: Path) -> None:
    for command in ("env echo hi", "env -i echo hi", "nice -n 5 echo hi", "timeout 5 echo hi", "xargs echo hi", "env nice timeout 5 echo hi"):
        result = await shell(ws, command)
        assert result.ok and streams(result)[0] == "hi\n", (command, result)


async def test_find_with_exec_of_an_allowed_program_runs(ws: Path) -> None:
    (ws / "sub").mkdir()
    (ws / "sub" / "f.txt").write_text("inside f\n")
    result = await shell(ws, ["find", "sub", "-name", "*.txt", "-exec", "cat", "{}", ";"])
    assert result.ok and streams(result)[0] == "inside f\n"


async def test_binary_output_is_described_not_dumped(ws: Path) -> None:
    result = await shell(ws, "head -c 300 /dev/zero")
    assert result.ok
    assert "[binary output, 300 bytes; not shown]" in result.output and "\x00" not in result.output


# --------------------------------------------------------------------------- policy: attacks end in "denied" and change nothing


@pytest.mark.parametrize(
    ("command", "blamed"),
    [
        ("rm x", "`rm` is on the shell denylist"),
        (["rm", "-rf", "."], "`rm` is on the shell denylist"),
        ("/bin/rm x", "`rm` is on the shell denylist"),
        ("shred -u x", "`shred` is on the shell denylist"),
        ("sudo rm x", "`sudo` is on the shell denylist"),
        ("curl http://127.0.0.1:9/", "`curl` is on the shell denylist"),
        ("kill -9 1", "`kill` is on the shell denylist"),
        # behind wrappers
        ("env rm x", "env → rm"),
        ("env -i rm x", "env → rm"),
        ("env -u HOME FOO=1 rm x", "env → rm"),
        ("env -- rm x", "env → rm"),
        ("/usr/bin/env rm x", "env → rm"),
        ("env env env rm x", "env → env → env → rm"),
        ("nice rm x", "nice → rm"),
        ("nice -n 5 rm x", "nice → rm"),
        ("nice -10 rm x", "nice → rm"),
        ("nice --adjustment=3 rm x", "nice → rm"),
        ("timeout 5 rm x", "timeout → rm"),
        ("timeout -s KILL -k 1 5 rm x", "timeout → rm"),
        ("timeout --kill-after=1 --preserve-status 5 rm x", "timeout → rm"),
        ("xargs rm x", "xargs → rm"),
        ("xargs -0 -r rm x", "xargs → rm"),
        ("xargs -I{} rm x", "xargs → rm"),
        ("xargs -n 1 env rm x", "xargs → env → rm"),
        (["find", ".", "-name", "x", "-exec", "rm", "{}", ";"], "find → rm"),
        (["find", ".", "-execdir", "env", "rm", "{}", "+"], "find → env → rm"),
        # shells and interpreters: refused unless named in shell.allow
        ("sh -c 'rm x'", "`sh` runs commands kasloop cannot inspect"),
        ("bash -c 'rm x'", "`bash` runs commands kasloop cannot inspect"),
        ("dash -c 'rm x'", "`dash` runs commands kasloop cannot inspect"),
        ("env sh -c 'rm x'", "env → sh"),
        ("nice bash -c 'rm x'", "nice → bash"),
        ("timeout 5 sh -c 'rm x'", "timeout → sh"),
        ("xargs sh -c 'rm x'", "xargs → sh"),
        (["find", ".", "-exec", "sh", "-c", "rm x", ";"], "find → sh"),
        ("python3 -c \"import os; os.remove('x')\"", "`python3` runs commands kasloop cannot inspect"),
        ("python -c \"import os; os.system('rm x')\"", "`python` runs commands kasloop cannot inspect"),
        ("env python3 -c \"import os; os.remove('x')\"", "env → python3"),
        ("perl -e 'unlink \"x\"'", "`perl` runs commands kasloop cannot inspect"),
        ("awk 'BEGIN { system(\"rm x\") }'", "`awk` runs commands kasloop cannot inspect"),
        ("sed -i d x", "`sed` runs commands kasloop cannot inspect"),
        ("busybox rm x", "`busybox` is not on the shell allowlist"),
        ("env busybox sh -c 'rm x'", "env → busybox"),
        # wrapper options that would change what runs or where
        ("env -S 'rm x'", "option `-S`"),
        ("env --split-string='rm x'", "option `--split-string=rm x`"),
        ("env -C / ls", "option `-C`"),
        ("env PATH=. ls", "may not set `PATH`"),
        ("env LD_PRELOAD=./evil.so ls", "may not set `LD_PRELOAD`"),
        ("xargs -a list.txt env", "option `-a`"),
        (["find", ".", "-exec", "{}", ";"], "would run the files it finds as programs"),
        ("xargs -I{} {} x", "would run a program chosen at run time"),
        ("find . -delete", "action `-delete`"),
        ("find . -fprint out.txt", "action `-fprint`"),
        ("sort --compress-program=rm x", "option `--compress-program=rm`"),
        ("sort --compress=rm x", "option `--compress=rm`"),
        ("sort -o x x", "option `-o`"),
        ("date -s 2000-01-01", "option `-s`"),
        # not on the allowlist at all
        ("cp x y", "`cp` is not on the shell allowlist"),
        ("env mv x y", "`mv` is not on the shell allowlist (reached through env → mv)"),
    ],
)
async def test_refused_commands_are_denied_and_change_nothing(ws: Path, command: str | list[str], blamed: str) -> None:
    (ws / "list.txt").write_text("rm\nx\n")
    before = tree(ws)
    result = await shell(ws, command)
    assert not result.ok and result.error_kind == "denied", result
    assert blamed in result.output, result.output
    assert result.output.startswith("Error: ")
    assert tree(ws) == before


async def test_deny_always_wins_and_defaults_can_be_narrowed(ws: Path) -> None:
    before = tree(ws)
    for cfg in ({"allow": ["rm"]}, {"allow": ["*"]}, {"allow": ["rm"], "allow_defaults": False}):
        result = await shell(ws, "rm x", cfg=cfg)
        assert not result.ok and result.error_kind == "denied" and "denylist" in result.output, (cfg, result)
    cat = await shell(ws, "cat x", cfg={"deny": ["cat"]})
    assert not cat.ok and cat.error_kind == "denied" and "`cat` is on the shell denylist" in cat.output
    narrowed = await shell(ws, "ls", cfg={"allow": ["echo"], "allow_defaults": False})
    assert not narrowed.ok and narrowed.error_kind == "denied" and "allowed: echo." in narrowed.output
    assert tree(ws) == before


async def test_a_shell_runs_only_when_named_and_a_wildcard_does_not_name_it(ws: Path) -> None:
    wildcard = await shell(ws, "sh -c 'echo $((40+2))'", cfg={"allow": ["*"]})
    assert not wildcard.ok and wildcard.error_kind == "denied" and "unless `sh` is named in shell.allow" in wildcard.output
    named = await shell(ws, "sh -c 'echo $((40+2))'", cfg={"allow": ["sh"]})
    assert named.ok and streams(named)[0] == "42\n"
    anything = await shell(ws, "cp x y", cfg={"allow": ["*"]})  # "*" allows programs that are neither denied nor opaque
    assert anything.ok and (ws / "y").read_text() == "victim"


async def test_a_program_given_as_a_path_must_be_the_system_program(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ws / "ls"
    fake.write_text("#!/bin/sh\necho pwned > pwned.txt\n")
    fake.chmod(0o755)
    before = tree(ws)
    for command in ("./ls", str(fake), "env ./ls", "xargs ./ls"):
        result = await shell(ws, command)
        assert not result.ok and result.error_kind == "denied", (command, result)
        assert "is not the system's `ls`" in result.output
    # A workspace folder on PATH is ignored: `ls` is still the system's.
    monkeypatch.setenv("PATH", f"{ws}{os.pathsep}{os.environ['PATH']}")
    listed = await shell(ws, "ls")
    assert listed.ok and "pwned" not in listed.output and "ls\n" in streams(listed)[0]
    system = await shell(ws, f"{shutil.which('echo')} via-full-path")
    assert system.ok and streams(system)[0] == "via-full-path\n"
    assert tree(ws) == before


async def test_shell_builtins_and_unknown_programs_get_a_useful_error(ws: Path) -> None:
    cd = await shell(ws, "cd /")
    assert not cd.ok and cd.error_kind == "bad_args" and "shell builtin" in cd.output and "cwd" in cd.output
    missing = await shell(ws, "no-such-program-xyz", cfg={"allow": ["no-such-program-xyz"]})
    assert not missing.ok and missing.error_kind == "bad_args" and "was not found" in missing.output


# --------------------------------------------------------------------------- metacharacters are plain text


@pytest.mark.parametrize(
    ("command", "printed"),
    [
        ("echo hi; rm x", "hi; rm x"),
        ("echo hi && rm x", "hi && rm x"),
        ("echo hi || rm x", "hi || rm x"),
        ("echo $(touch pwned)", "$(touch pwned)"),
        ("echo `touch pwned`", "`touch pwned`"),
        ("echo hi > pwned", "hi > pwned"),
        ("echo hi >> x", "hi >> x"),
        ("echo x | rm x", "x | rm x"),
        ("echo * ~ $HOME", "* ~ $HOME"),
        ("echo hi & touch pwned", "hi & touch pwned"),
        ("echo 'a;b' \"$(id)\"", "a;b $(id)"),
    ],
)
async def test_shell_metacharacters_are_literal_arguments(ws: Path, command: str, printed: str) -> None:
    before = tree(ws)
    result = await shell(ws, command)
    assert result.ok and streams(result) == (printed + "\n", ""), result
    assert tree(ws) == before  # x untouched, no pwned file


async def test_metacharacters_after_a_denied_program_change_nothing(ws: Path) -> None:
    before = tree(ws)
    result = await shell(ws, "ls | rm x")
    assert result.ok and result.metadata["exit_code"] != 0  # ls is told to list files named "|", "rm", "x"
    assert "rm" in streams(result)[1]
    assert tree(ws) == before


# --------------------------------------------------------------------------- cwd


async def test_cwd_defaults_to_the_workspace_and_may_be_a_subfolder(ws: Path) -> None:
    (ws / "sub").mkdir()
    here = await shell(ws, "pwd")
    assert streams(here)[0] == f"{ws.resolve()}\n"
    sub = await shell(ws, "pwd", cwd="sub")
    assert streams(sub)[0] == f"{(ws / 'sub').resolve()}\n"


async def test_cwd_outside_the_workspace_is_denied(tmp_path: Path, ws: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "link").symlink_to(outside, target_is_directory=True)
    before = tree(ws)
    for cwd in ("..", "/", str(outside), "link", "sub/../../outside"):
        result = await shell(ws, "ls", cwd=cwd)
        assert not result.ok and result.error_kind == "denied" and "outside the workspace" in result.output, (cwd, result)
    not_a_folder = await shell(ws, "ls", cwd="x")
    assert not not_a_folder.ok and not_a_folder.error_kind == "bad_args"
    assert tree(ws) == before


# --------------------------------------------------------------------------- timeouts kill the whole session

CHILD = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchildren across exec
sleeper = "import os, sys, time\\nif sys.argv[1] == 'own-group': os.setpgid(0, 0)\\nprint('ready', flush=True)\\ntime.sleep(120)"
kids = [subprocess.Popen([sys.executable, "-c", sleeper, mode, "kasloop-test-grandchild"], stdout=subprocess.PIPE) for mode in ("same-group", "own-group")]
for kid in kids:
    kid.stdout.readline()  # the grandchild has started (and left the process group, for the second)
with open("pids.txt", "w") as fh:
    fh.write(" ".join(str(p) for p in [os.getpid(), *(k.pid for k in kids)]))
print("children started", flush=True)
time.sleep(120)
"""


async def test_timeout_kills_a_sigterm_ignoring_child_and_its_grandchildren(ws: Path) -> None:
    (ws / "child.py").write_text(CHILD)
    started = time.monotonic()
    result = await shell(ws, ["python", "child.py"], cfg=PYTHON_CFG, timeout=2)
    elapsed = time.monotonic() - started
    assert not result.ok and result.error_kind == "timeout", result
    assert "timed out after 2 s" in result.output and "children started" in result.output
    assert result.metadata["killed"] == "SIGKILL"  # SIGTERM was ignored
    pids = [int(p) for p in (ws / "pids.txt").read_text().split()]
    assert len(pids) == 3
    assert host_pids("child.py") == [] and host_pids("kasloop-test-grandchild") == []
    assert "survivors" not in result.metadata
    assert elapsed < 2 + 0.3 + 3


async def test_timeout_stops_a_well_behaved_process_with_sigterm(ws: Path) -> None:
    started = time.monotonic()
    result = await shell(ws, "sleep 30", timeout=0.3, cfg={"kill_grace": 10})
    assert not result.ok and result.error_kind == "timeout"
    assert result.metadata["killed"] == "SIGTERM"
    assert time.monotonic() - started < 5  # did not wait for the 10 s grace


async def test_timeout_argument_is_capped_by_max_timeout(ws: Path) -> None:
    result = await shell(ws, "sleep 30", timeout=1000, cfg={"max_timeout": 0.3})
    assert not result.ok and result.error_kind == "timeout"
    assert result.metadata["timeout"] == 0.3 and result.metadata["timeout_capped"] is True


async def test_processes_left_behind_by_a_finished_command_are_killed(ws: Path) -> None:
    script = (
        "import os, subprocess, sys\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', 'kasloop-test-left-behind'],"
        " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(kid.pid)\n"
    )
    (ws / "bg.py").write_text(script)
    result = await shell(ws, ["python", "bg.py"], cfg=PYTHON_CFG, timeout=20)
    assert result.ok and result.metadata["exit_code"] == 0, result
    assert int(streams(result)[0]) > 0
    assert host_pids("kasloop-test-left-behind") == []


# --------------------------------------------------------------------------- output is bounded while reading


async def test_ten_megabytes_of_output_are_capped_while_reading(ws: Path) -> None:
    last = 1_500_000
    total = sum(len(str(i)) + 1 for i in range(1, last + 1))
    assert total > 10_000_000
    tracemalloc.start()
    try:
        result = await shell(ws, f"seq 1 {last}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok, result
    assert peak < 4_000_000, peak  # never held the 10 MB
    kept = sum(STDOUT_KEEP)
    assert result.metadata["stdout_bytes"] == total
    assert result.metadata["stdout_dropped"] == total - kept
    assert f"[... {total - kept} bytes dropped while reading ...]" in result.output
    out, _ = streams(result)
    assert out.startswith("1\n2\n3\n") and out.endswith(f"{last - 1}\n{last}\n")
    assert len(result.output) <= SHELL.output_limit  # fits: run_tool had nothing left to cut


async def test_stderr_is_capped_separately(ws: Path) -> None:
    result = await shell(ws, ["grep", "-r", "x", *[f"missing{i}" for i in range(200)]])
    assert result.ok
    assert result.metadata["stderr_bytes"] > sum(STDERR_KEEP)
    assert result.metadata["stderr_dropped"] == result.metadata["stderr_bytes"] - sum(STDERR_KEEP)
    assert "missing0:" in streams(result)[1] and "missing199:" in streams(result)[1]


# --------------------------------------------------------------------------- environment


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "MYAPP_TEST_API_KEY": "sk-test-1111111111",
        "MYAPP_TEST_DB_PASSWORD": "hunter2-2222222222",
        "GITHUB_TOKEN": "ghp_3333333333",
        "MYAPP_TEST_PLAIN": "plain-4444444444",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


async def test_secrets_in_the_parent_environment_are_not_visible_to_env(ws: Path, secrets: dict[str, str]) -> None:
    result = await shell(ws, "env")
    assert result.ok
    out, _ = streams(result)
    names = {line.split("=", 1)[0] for line in out.splitlines()}
    assert "PATH" in names
    assert names <= {"PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TERM", "TZ", "USER", "LOGNAME", "TMPDIR", "PWD"}
    for key, value in secrets.items():
        assert key not in out and value not in out


async def test_passthrough_patterns_skip_secret_names_but_exact_names_pass(ws: Path, secrets: dict[str, str]) -> None:
    pattern = await shell(ws, "env", cfg={"env_passthrough": ["MYAPP_TEST_*"]})
    out, _ = streams(pattern)
    assert "MYAPP_TEST_PLAIN=plain-4444444444" in out
    assert "sk-test" not in out and "hunter2" not in out and "ghp_" not in out
    exact = await shell(ws, "env", cfg={"env_passthrough": ["MYAPP_TEST_API_KEY"]})
    out, _ = streams(exact)
    assert "MYAPP_TEST_API_KEY=sk-test-1111111111" in out and "hunter2" not in out and "plain-" not in out


async def test_kasloops_own_secrets_never_pass_even_when_named(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASLOOP_APPROVAL_WEBHOOK_SECRET", "approval-5555555555")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-6666666666")
    monkeypatch.setenv("MAIL_PW", "mail-7777777777")
    monkeypatch.setenv("MYAPP_TEST_PLAIN", "plain-8888888888")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-9999999999")  # a model provider's key: kasloop's too
    names = ["KASLOOP_APPROVAL_WEBHOOK_SECRET", "OPENAI_API_KEY", "MAIL_PW", "MYAPP_TEST_PLAIN", "ANTHROPIC_API_KEY"]
    ctx = ToolContext(workspace=ws, extra={"shell": {"env_passthrough": names}, "email": {"smtp": {"password_env": "MAIL_PW"}}})
    out, _ = streams(await run_tool(SHELL, {"command": "env"}, ctx))
    assert "approval-5555" not in out and "sk-openai" not in out and "mail-7777" not in out and "sk-ant-9999" not in out
    assert "MYAPP_TEST_PLAIN=plain-8888888888" in out  # the control: a plain named variable passes


# --------------------------------------------------------------------------- arguments and config


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"command": 123}, "command"),
        ({"command": ["echo", 5]}, "command"),
        ({"command": None}, "command"),
        ({}, "command"),
        ({"command": "echo", "timeout": "soon"}, "timeout"),
        ({"command": "echo", "timeout": -1}, "timeout"),
        ({"command": "echo", "timeout": 0}, "timeout"),
        ({"command": "echo", "cwd": 5}, "cwd"),
    ],
)
async def test_wrong_argument_types_are_bad_args_naming_the_field(ws: Path, args: dict[str, Any], field: str) -> None:
    before = tree(ws)
    result = await run_tool(SHELL, args, ToolContext(workspace=ws))
    assert not result.ok and result.error_kind == "bad_args", result
    assert "`shell_run`" in result.output and re.search(rf"\b{field}\b[^:]*: ", result.output), result.output
    assert tree(ws) == before


@pytest.mark.parametrize("command", ["", "   ", [], "echo 'unclosed", ["echo", "a\x00b"], "echo a\x00b"])
async def test_empty_unsplittable_or_nul_commands_are_bad_args(ws: Path, command: str | list[str]) -> None:
    result = await shell(ws, command)
    assert not result.ok and result.error_kind == "bad_args", result


@pytest.mark.parametrize(
    "cfg",
    [{"allow": "ls"}, {"nope": 1}, {"timeout": 0}, {"path": ["relative/bin"]}, {"allow_defaults": "yes"}, {"max_timeout": 10_000}],
)
async def test_a_broken_shell_config_is_a_permanent_error_naming_the_key(ws: Path, cfg: dict[str, Any]) -> None:
    result = await shell(ws, "echo hi", cfg=cfg)
    assert not result.ok and result.error_kind == "permanent", result
    assert any(key in result.output for key in cfg), result.output


def test_check_command_returns_the_absolute_program_and_workspace_path_entries_are_refused(ws: Path) -> None:
    policy = ShellPolicy.from_context(ToolContext(workspace=ws, extra={"shell": {"path": [PY_DIR, "/usr/bin", "/bin"]}}))
    assert check_command(["echo", "hi"], policy) == shutil.which("echo", path=os.pathsep.join(policy.search_path))
    with pytest.raises(ToolFailure) as info:
        ShellPolicy.from_context(ToolContext(workspace=ws, extra={"shell": {"path": [str(ws / "bin")]}}))
    assert info.value.kind == "permanent" and "outside the workspace" in info.value.message


def test_defaults_keep_dangerous_programs_out_of_the_allowlist() -> None:
    assert not DEFAULT_ALLOW & DEFAULT_DENY
    for name in ("sh", "bash", "python3", "git", "rm", "curl", "sed", "awk", "tee", "cp", "mv", "uniq"):
        assert name not in DEFAULT_ALLOW, name


# --------------------------------------------------------------------------- what the model sees


def test_schema_given_to_the_model_matches_the_args_model() -> None:
    schema = openai_schema(SHELL)
    function = schema["function"]
    assert function["name"] == "shell_run" and function["description"] == SHELL.description
    params = function["parameters"]
    fields = ShellRunArgs.model_fields
    assert list(params["properties"]) == list(fields) == ["command", "timeout", "cwd"]  # DESIGN §12 order
    assert set(params["required"]) == {n for n, f in fields.items() if f.is_required()} == {"command"}
    assert params["properties"]["command"]["anyOf"] == [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    assert params["properties"]["cwd"]["default"] == "."
    for prop in params["properties"].values():
        assert prop["description"] and "title" not in prop
    ShellRunArgs.model_validate({name: "echo" for name in params["required"]})


def test_shell_family_name_risk_and_idempotency_are_as_designed() -> None:
    assert [(t.name, t.risk, t.idempotent, t.family) for t in SHELL_TOOLS] == [("shell_run", "high", False, "shell")]
    assert set(select_tools(["shell"])) == {"shell_run"}
    assert SHELL.timeout > ShellPolicy.from_context(ToolContext(workspace=Path("."))).max_timeout  # the call's own kill comes first
