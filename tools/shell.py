"""The ``shell`` family: run one program, never a shell, inside the workspace.

``shell_run`` takes an argv list or a command line that is split with
:func:`shlex.split` and executed directly (``asyncio.create_subprocess_exec``,
no ``shell=True``). Shell syntax therefore means nothing here: ``;``, ``&&``,
``|``, ``>``, ``$(...)``, backticks, globs and ``~`` arrive as literal
arguments (``echo hi; rm x`` prints ``hi; rm x``). Run one command per call.

The jail, in the order it is applied:

1. **Programs are named, not given as paths.** Each program is looked up on
   the search path (absolute entries of ``PATH`` outside the workspace, or
   ``shell.path``); an absolute path (``/usr/bin/ls``) must be the very file
   that lookup finds and relative paths (``./ls``) are refused, so a copy of
   ``rm`` called ``ls`` never runs as ``ls``.
2. **Denylist** (:data:`DEFAULT_DENY` + ``shell.deny``) always wins: deletion
   and disk tools, privilege changes (``sudo``, ``su``, ``chmod``...), process
   killing (``kill``: only the process family may stop processes, and only
   its own), raw network clients (``curl``, ``wget``, ``ssh``, ``nc``...: web
   access goes through the http family, which enforces the address policy)
   and ``setsid`` (it would escape the timeout's process kill).
3. **Opaque programs** run code kasloop cannot inspect: shells, interpreters
   (``python -c``, ``perl -e``, ``awk``, ``sed``), editors and pagers with
   shell escapes, build tools, ``git`` (hooks and aliases) and other command
   runners (:data:`OPAQUE`, :data:`OPAQUE_PATTERNS`). They are refused unless
   named in ``shell.allow`` one by one (``"*"`` does not count). Naming one is
   a deliberate decision to let the model run arbitrary code: the denylist
   cannot be enforced inside that code.
4. **Allowlist**: :data:`DEFAULT_ALLOW` (read-only text and file-inspection
   tools plus the wrappers ``env``, ``nice``, ``timeout``, ``xargs``) and
   ``shell.allow``; ``"*"`` allows any program not refused above.
5. **Wrappers are looked through**: ``env``, ``nice``, ``timeout``,
   ``xargs``, ``nohup``, ``stdbuf``, ``ionice``, ``time``, ``busybox``,
   ``toybox`` and ``find -exec`` are parsed with their real option syntax and
   the program they start is checked by the same rules (recursively). Options
   that change what runs or where (``env -S``/``-C``, ``env PATH=...`` or
   ``LD_PRELOAD=...``, ``xargs -a``, ``find -exec {}``, ``find -delete``) and
   any option kasloop does not know are refused. A few allowed programs have
   dangerous options refused too (``sort --compress-program``/``-o``,
   ``date -s``, ``file -C``).

The shell jail fixes the working folder (``cwd``, resolved like the files
tools) but does not check paths inside arguments: ``cat /etc/hostname``
reads outside the workspace. That is why ``shell_run`` is risk ``high``.

The process runs in a new session (``start_new_session=True``) with stdin
closed and a scrubbed environment: only :data:`DEFAULT_ENV` plus
``shell.env_passthrough``; a name matched only by a pattern there is still
dropped when it looks secret (``KEY``, ``TOKEN``, ``SECRET``, ``PASSWORD``,
``AUTH``...). On timeout the whole session gets SIGTERM, then SIGKILL after
``shell.kill_grace`` seconds; on Linux every process of the session is found
through ``/proc`` (so a grandchild that made itself a new process group dies
too), and ``shell_run`` returns only when none is left. When the command ends
normally, leftovers in its session are killed as well: use the process family
for background work.

stdout and stderr are read incrementally and kept head + tail per stream
(the rest is counted and reported as dropped), so a program printing
gigabytes costs a few kilobytes of memory.

**A non-zero exit code is a result, not a tool failure**: the call returns
``ok=True`` with ``exit code N`` at the top of the output and
``metadata["exit_code"]``, so the model reads stderr and decides (``grep``
exits 1 when nothing matched). Failures of the tool itself are classified:
refused by policy → ``denied``; unknown program, bad quoting, a ``cwd`` that
is not a folder → ``bad_args``; timeout → ``timeout`` (with the partial
output); a broken ``shell`` config → ``permanent``.

Config (``[tool_settings.shell]``, i.e. ``ToolContext.extra["shell"]``, all optional; validated by
:class:`ShellSettings`: an unknown key or a value of the wrong type is one ``permanent`` line naming it):

``allow``            list of program names added to the allowlist; ``"*"`` = any
                     program not denied or opaque; opaque programs must be named.
``allow_defaults``   bool, default true: start from :data:`DEFAULT_ALLOW`.
``deny``             list of program names added to :data:`DEFAULT_DENY`.
``path``             list of absolute folders to search programs in (default: the
                     absolute ``PATH`` entries outside the workspace); also the
                     child's ``PATH``.
``env_passthrough``  list of variable names or fnmatch patterns (``"LC_*"``)
                     passed to the child besides :data:`DEFAULT_ENV`.
``timeout``          default seconds per call (60).
``max_timeout``      cap for the ``timeout`` argument (600).
``kill_grace``       seconds between SIGTERM and SIGKILL (2, at most 30).
``sandbox``          ``"bwrap"`` (default: every program runs in the bubblewrap sandbox) or
                     ``"none"`` (a person's decision: programs run unsandboxed, with kasloop's rights).
``network``          bool, default false: sandboxed programs share the host's network.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, StrictStr, ValidationInfo, field_validator

from kasloop.protected import setting_values
from kasloop.secrets import DEFAULT_SECRET_ENVS
from kasloop.tools.base import DEFAULT_OUTPUT_LIMIT, Tool, ToolContext, ToolFailure, ToolResult, ToolSettings
from kasloop.tools.files import resolve_in_workspace
from kasloop.tools.procfs import session_members, signal_quietly  # not psutil: it has no session id to find a session's members by
from kasloop.tools.sandbox import SandboxMode, absent_protected, bwrap_argv, record_sandbox, remove_created, require_sandbox, sandbox_shells

__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_DENY",
    "DEFAULT_ENV",
    "DENY_PATTERNS",
    "OPAQUE",
    "OPAQUE_PATTERNS",
    "SHELL_TOOLS",
    "ShellPolicy",
    "ShellRunArgs",
    "ShellSettings",
    "check_command",
    "child_env",
    "looks_secret",
    "own_secret",
    "split_command",
]

DEFAULT_ALLOW: frozenset[str] = frozenset(
    {
        # read-only text and file inspection
        "ls", "cat", "echo", "printf", "pwd", "head", "tail", "wc", "grep", "egrep", "fgrep", "find",
        "sort", "cut", "tr", "diff", "cmp", "comm", "paste", "join", "nl", "tac", "rev", "fold", "expand",
        "column", "seq", "date", "basename", "dirname", "realpath", "readlink", "stat", "file", "du", "df",
        "sha256sum", "sha1sum", "md5sum", "base64", "od", "strings", "id", "whoami", "uname", "which",
        "true", "false", "sleep", "test", "expr",
        # wrappers, looked through
        "env", "nice", "timeout", "xargs",
    }
)
"""Programs allowed by default: they read and print, and cannot start other programs
except through the wrappers, whose wrapped program is checked. ``uniq`` is left out
because it writes its second operand (use ``sort -u``)."""

DEFAULT_DENY: frozenset[str] = frozenset(
    {
        # deleting, overwriting, disks
        "rm", "rmdir", "unlink", "shred", "dd", "truncate", "mkfs", "mke2fs", "mkswap", "fdisk", "sfdisk",
        "parted", "wipefs", "swapon", "swapoff", "mount", "umount", "losetup",
        # permissions and privileges
        "chmod", "chown", "chgrp", "chattr", "setfacl", "sudo", "su", "doas", "pkexec", "runuser", "setpriv",
        "capsh", "chroot", "unshare", "nsenter", "passwd", "chpasswd", "useradd", "userdel", "usermod",
        "groupadd", "groupdel", "visudo", "insmod", "rmmod", "modprobe", "sysctl",
        # the machine and its processes (the process family stops only what it started)
        "reboot", "shutdown", "halt", "poweroff", "init", "telinit", "systemctl", "service", "kill", "killall",
        "pkill", "crontab", "at", "batch", "setsid",
        # raw network clients (use the http family) and container runtimes
        "curl", "wget", "ssh", "scp", "sftp", "rsync", "nc", "ncat", "netcat", "socat", "telnet", "ftp",
        "iptables", "ip6tables", "nft", "docker", "podman", "kubectl",
    }
)
"""Always refused, also behind a wrapper and also when ``shell.allow`` names them."""

OPAQUE: frozenset[str] = frozenset(
    {
        # shells
        "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "csh", "tcsh", "fish", "ash", "rbash",
        "elvish", "nu", "xonsh", "pwsh", "powershell",
        # interpreters and languages that take code as text
        "irb", "node", "nodejs", "deno", "bun", "luajit", "expect", "awk", "gawk", "mawk", "nawk", "sed",
        "R", "Rscript", "julia", "racket", "sbcl", "java", "jshell", "osascript", "bc", "dc",
        # editors, pagers and tools with shell escapes or exec options
        "ed", "ex", "vi", "vim", "nvim", "view", "emacs", "nano", "less", "more", "man", "pager", "editor",
        "tar", "zip", "git", "make", "cmake", "ninja", "npm", "npx", "pip", "pip3", "uv", "cargo", "go",
        "gcc", "cc", "clang", "tee", "mail", "openssl", "sqlite3",
        # command runners kasloop does not parse
        "watch", "script", "strace", "ltrace", "gdb", "valgrind", "flock", "parallel", "taskset", "chrt",
        "prlimit", "setarch", "linux32", "linux64", "cgexec", "firejail", "bwrap", "systemd-run", "tmux",
        "screen", "run-parts", "start-stop-daemon", "xdg-open", "sshpass", "command", "exec", "eval",
    }
)
"""Programs that run code or commands kasloop cannot inspect; refused unless named in ``shell.allow``."""

OPAQUE_PATTERNS: tuple[str, ...] = ("python*", "pypy*", "perl*", "ruby*", "php*", "lua*", "tclsh*", "wish*", "guile*")

DENY_PATTERNS: tuple[str, ...] = ("mkfs*", "fsck*")
"""Denied like :data:`DEFAULT_DENY`, matched with fnmatch (``mkfs.ext4``)."""

DEFAULT_ENV: tuple[str, ...] = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TERM", "TZ", "USER", "LOGNAME", "TMPDIR")
"""Variables passed to the child by default (``PATH`` is replaced by the search path)."""

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS|AUTH|CRED|COOKIE|SESSION|PRIVATE|SIGNATURE|DSN|CERT", re.IGNORECASE)
_MULTICALL = frozenset({"busybox", "toybox"})
_SHELL_BUILTINS = frozenset({"cd", "export", "source", ".", "alias", "set", "unset", "exit", "pushd", "popd", "ulimit", "umask"})
# env assignments that change which code runs.
_DANGEROUS_ENV = re.compile(
    r"^(PATH|LD_.*|DYLD_.*|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|IFS|PYTHON.*|PERL5.*|PERLLIB|RUBYOPT|RUBYLIB|NODE_OPTIONS|"
    r"NODE_PATH|GIT_.*|PAGER|EDITOR|VISUAL|GCONV_PATH|MALLOC_.*|LOCPATH|NLSPATH|HOSTALIASES|RES_OPTIONS)$"
)

SANDBOX_RECORDS = "sandboxes"
"""Folder (in the tools home) of records of running ``shell_run`` sandboxes (see :func:`kasloop.tools.sandbox.reap_orphans`)."""
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_TIMEOUT = 600.0
DEFAULT_KILL_GRACE = 2.0
MAX_KILL_GRACE = 30.0
MAX_WRAPPER_DEPTH = 8
# Per-stream head/tail kept while reading: together they fit the 4,000-character output limit.
STDOUT_KEEP = (1400, 700)
STDERR_KEEP = (600, 400)
_READ_CHUNK = 65536


def looks_secret(name: str) -> bool:
    """True for variable names such as ``OPENAI_API_KEY``, ``GH_TOKEN``, ``DB_PASSWORD``."""
    return bool(_SECRET_NAME.search(name))


def _is_opaque(name: str) -> bool:
    return name in OPAQUE or any(fnmatch.fnmatchcase(name, pattern) for pattern in OPAQUE_PATTERNS)


_Names = list[StrictStr]
"""Names, strings only; the fields using it add ``strict=False`` so that a tuple passes as well as a list."""


class ShellSettings(ToolSettings):
    """``[tool_settings.shell]`` (see the module docstring): what a person wrote; :class:`ShellPolicy` is
    what one call runs under (defaults merged, the search path resolved)."""

    family: ClassVar[str] = "shell"

    allow: _Names = Field(default_factory=list, strict=False)
    """Program names added to the allowlist; ``"*"``: any program neither denied nor opaque (opaque ones must be named)."""
    allow_defaults: bool = True
    """Start the allowlist from :data:`DEFAULT_ALLOW`."""
    deny: _Names = Field(default_factory=list, strict=False)
    """Program names added to :data:`DEFAULT_DENY`."""
    path: _Names | None = Field(default=None, strict=False)
    """Absolute folders outside the workspace to look programs up in (also the child's ``PATH``);
    ``None``: the absolute ``PATH`` entries outside the workspace."""
    env_passthrough: _Names = Field(default_factory=list, strict=False)
    """Variable names or fnmatch patterns (``"LC_*"``) passed to the child besides :data:`DEFAULT_ENV`."""
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0)
    """Default seconds per call (capped at ``max_timeout``)."""
    max_timeout: float = Field(default=DEFAULT_MAX_TIMEOUT, gt=0, le=DEFAULT_MAX_TIMEOUT)
    """Cap for the ``timeout`` argument, in seconds; at most the tool's own limit."""
    kill_grace: float = Field(default=DEFAULT_KILL_GRACE, gt=0)
    """Seconds between SIGTERM and SIGKILL (more than 30 counts as 30)."""
    sandbox: SandboxMode = "bwrap"
    """``bwrap`` (every program runs in the bubblewrap sandbox, :mod:`kasloop.tools.sandbox`) or ``none``."""
    network: bool = False
    """The sandbox shares the host's network; otherwise programs have none."""

    @field_validator("path")
    @classmethod
    def _outside_workspace(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        workspace = (info.context or {}).get("workspace")
        root = Path(workspace).resolve() if workspace is not None else None
        for entry in value or ():
            if not os.path.isabs(entry) or (root is not None and _inside(Path(entry), root)):
                raise ValueError(f"entries must be absolute folders outside the workspace, got `{entry}`")
        return value


@dataclass(frozen=True, kw_only=True)
class ShellPolicy:
    """The shell jail of one call, read from ``ToolContext.extra["shell"]`` (see the module docstring)."""

    allow: frozenset[str]
    """Programs allowed (defaults plus ``shell.allow``)."""
    allow_any: bool
    """``"*"`` was in ``shell.allow``: any program that is neither denied nor opaque."""
    named: frozenset[str]
    """Names listed in ``shell.allow`` itself: the only way to allow an opaque program."""
    deny: frozenset[str]
    search_path: tuple[str, ...]
    """Absolute folders programs are looked up in; also the child's ``PATH``."""
    env_passthrough: tuple[str, ...]
    timeout: float
    """Default seconds per call."""
    max_timeout: float
    """Cap for the ``timeout`` argument, in seconds."""
    kill_grace: float
    """Seconds between SIGTERM and SIGKILL."""
    sandbox: str = "bwrap"
    """``bwrap`` (every program runs in the bubblewrap sandbox, :mod:`kasloop.tools.sandbox`) or ``none``."""
    network: bool = False
    """The sandbox shares the host's network; otherwise programs have none."""
    own_secrets: frozenset[str] = frozenset()
    """Variables the agent's tool settings read secrets from (``*_env`` values): never passed to a program."""

    @classmethod
    def from_context(cls, ctx: ToolContext) -> ShellPolicy:
        """The policy of this call, from ``ctx.extra["shell"]``.

        Raises:
            SettingsFailure: (``permanent``) the table is broken; one line naming the key.
        """
        return cls.from_settings(ShellSettings.from_context(ctx), ctx)

    @classmethod
    def from_settings(cls, settings: ShellSettings, ctx: ToolContext) -> ShellPolicy:
        """Merge validated settings with the defaults; the search path is resolved against ``ctx.workspace``."""
        if settings.path is not None:
            search = tuple(settings.path)
        else:
            workspace = ctx.workspace.resolve()
            search = tuple(p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(p) and not _inside(Path(p), workspace))
        named = frozenset(settings.allow)
        return cls(
            allow=(DEFAULT_ALLOW if settings.allow_defaults else frozenset()) | (named - {"*"}),
            allow_any="*" in named,
            named=named - {"*"},
            deny=DEFAULT_DENY | frozenset(settings.deny),
            search_path=search,
            env_passthrough=tuple(settings.env_passthrough),
            timeout=min(settings.timeout, settings.max_timeout),
            max_timeout=settings.max_timeout,
            kill_grace=min(settings.kill_grace, MAX_KILL_GRACE),
            sandbox=settings.sandbox,
            network=settings.network,
            own_secrets=frozenset(setting_values(ctx.extra, "_env")),
        )


def _inside(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


# --------------------------------------------------------------------------- wrappers


@dataclass(frozen=True)
class _Opts:
    """GNU-style option syntax of a wrapper: which options exist and which take an argument."""

    short_flags: str = ""
    short_args: str = ""
    short_optional: str = ""
    long_flags: frozenset[str] = frozenset()
    long_args: frozenset[str] = frozenset()
    long_optional: frozenset[str] = frozenset()


def _refuse(program: str, reason: str) -> ToolFailure:
    return ToolFailure("denied", f"`{program}` {reason}")


def _parse_options(program: str, argv: Sequence[str], opts: _Opts, *, stop: Callable[[int, str], bool] | None = None) -> int:
    """Index of the first operand after the options; unknown options are refused.

    Long options must be spelled in full (GNU also accepts unambiguous prefixes;
    refusing them only refuses more).
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if stop is not None and stop(i, arg):
            return i
        if arg == "--":
            return i + 1
        if arg.startswith("--"):
            name, eq, _ = arg[2:].partition("=")
            if name in opts.long_flags and not eq:
                i += 1
            elif name in opts.long_optional:
                i += 1
            elif name in opts.long_args:
                i += 1 if eq else 2
            else:
                raise _refuse(program, f"option `{arg}` is not supported by the shell policy")
            continue
        if arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                ch = arg[j]
                if ch in opts.short_flags:
                    j += 1
                elif ch in opts.short_optional:
                    break
                elif ch in opts.short_args:
                    if j == len(arg) - 1:
                        i += 1  # the argument is the next word
                    break
                else:
                    raise _refuse(program, f"option `-{ch}` (in `{arg}`) is not supported by the shell policy")
            i += 1
            continue
        return i
    return i


def _unwrap_env(argv: Sequence[str]) -> list[list[str]]:
    opts = _Opts(short_flags="i0v", short_args="u", long_flags=frozenset({"ignore-environment", "null", "debug"}), long_args=frozenset({"unset"}))
    i = _parse_options("env", argv, opts, stop=lambda _i, a: a == "-")
    while i < len(argv) and argv[i] == "-":
        i += 1
    while i < len(argv) and "=" in argv[i]:
        name = argv[i].split("=", 1)[0]
        if _DANGEROUS_ENV.match(name):
            raise _refuse("env", f"may not set `{name}`: it changes which code runs")
        i += 1
    return [list(argv[i:])] if i < len(argv) else []


def _unwrap_nice(argv: Sequence[str]) -> list[list[str]]:
    opts = _Opts(short_args="n", long_args=frozenset({"adjustment"}))
    start = 2 if len(argv) > 1 and re.fullmatch(r"-[+-]?\d+", argv[1]) else 1
    i = start + _parse_options("nice", ["nice", *argv[start:]], opts) - 1
    return [list(argv[i:])] if i < len(argv) else []


def _unwrap_timeout(argv: Sequence[str]) -> list[list[str]]:
    opts = _Opts(short_flags="v", short_args="sk", long_flags=frozenset({"preserve-status", "foreground", "verbose"}), long_args=frozenset({"signal", "kill-after"}))
    i = _parse_options("timeout", argv, opts) + 1  # skip DURATION
    return [list(argv[i:])] if i < len(argv) else []


def _unwrap_xargs(argv: Sequence[str]) -> list[list[str]]:
    # No -a/--arg-file: stdin is closed, so xargs never adds arguments to the command checked here.
    opts = _Opts(
        short_flags="0rtxp",
        short_args="dEILnPs",
        short_optional="eil",
        long_flags=frozenset({"null", "no-run-if-empty", "verbose", "exit", "interactive", "open-tty", "show-limits"}),
        long_args=frozenset({"delimiter", "max-args", "max-procs", "max-chars", "process-slot-var"}),
        long_optional=frozenset({"eof", "replace", "max-lines"}),
    )
    i = _parse_options("xargs", argv, opts)
    return [list(argv[i:]) if i < len(argv) else ["echo"]]


def _unwrap_nohup(argv: Sequence[str]) -> list[list[str]]:
    i = _parse_options("nohup", argv, _Opts())
    return [list(argv[i:])] if i < len(argv) else []


def _unwrap_stdbuf(argv: Sequence[str]) -> list[list[str]]:
    i = _parse_options("stdbuf", argv, _Opts(short_args="ioe", long_args=frozenset({"input", "output", "error"})))
    return [list(argv[i:])] if i < len(argv) else []


def _unwrap_ionice(argv: Sequence[str]) -> list[list[str]]:
    # No -p/-P/-u: they act on processes this call did not start.
    i = _parse_options("ionice", argv, _Opts(short_flags="t", short_args="cn", long_flags=frozenset({"ignore"}), long_args=frozenset({"class", "classdata"})))
    return [list(argv[i:])] if i < len(argv) else []


def _unwrap_time(argv: Sequence[str]) -> list[list[str]]:
    # No -o/--output/-a: they write a file anywhere.
    i = _parse_options("time", argv, _Opts(short_flags="pvq", short_args="f", long_flags=frozenset({"portability", "verbose", "quiet"}), long_args=frozenset({"format"})))
    return [list(argv[i:])] if i < len(argv) else []


def _unwrap_multicall(argv: Sequence[str]) -> list[list[str]]:
    name = os.path.basename(argv[0])
    if len(argv) < 2:
        return []
    if argv[1].startswith("-"):
        raise _refuse(name, f"option `{argv[1]}` is not supported by the shell policy")
    return [list(argv[1:])]


_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_FIND_WRITES = frozenset({"-delete", "-fprint", "-fprint0", "-fprintf", "-fls"})


def _unwrap_find(argv: Sequence[str]) -> list[list[str]]:
    inner: list[list[str]] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in _FIND_WRITES:
            raise _refuse("find", f"action `{arg}` deletes or writes files; it is refused by the shell policy")
        if arg in _FIND_EXEC:
            end = i + 1
            while end < len(argv) and argv[end] not in (";", "+"):
                end += 1
            command = list(argv[i + 1 : end])
            if not command:
                raise ToolFailure("bad_args", f"`find {arg}` needs a command")
            if "{}" in command[0]:
                raise _refuse("find", f"`{arg}` would run the files it finds as programs")
            inner.append(command)
            i = end + 1
            continue
        i += 1
    return inner


_WRAPPERS: dict[str, Callable[[Sequence[str]], list[list[str]]]] = {
    "env": _unwrap_env,
    "nice": _unwrap_nice,
    "timeout": _unwrap_timeout,
    "xargs": _unwrap_xargs,
    "nohup": _unwrap_nohup,
    "stdbuf": _unwrap_stdbuf,
    "ionice": _unwrap_ionice,
    "time": _unwrap_time,
    "busybox": _unwrap_multicall,
    "toybox": _unwrap_multicall,
    "find": _unwrap_find,
}

# Options of allowed programs that run other programs or write files anywhere: (short letters, long names).
_GUARDED_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sort": ("o", ("output", "compress-program")),
    "date": ("s", ("set",)),
    "file": ("C", ("compile",)),
}


def _check_guarded_options(name: str, argv: Sequence[str]) -> None:
    guard = _GUARDED_OPTIONS.get(name)
    if guard is None:
        return
    short, longs = guard
    for arg in argv[1:]:
        if arg == "--":
            return
        if arg.startswith("--"):
            given = arg[2:].split("=", 1)[0]
            if given and any(full.startswith(given) for full in longs):
                raise _refuse(name, f"option `{arg}` runs programs or writes files; it is refused by the shell policy")
        elif arg.startswith("-") and any(ch in arg[1:] for ch in short):
            raise _refuse(name, f"option `{arg}` runs programs or writes files; it is refused by the shell policy")


# --------------------------------------------------------------------------- the check


def _locate(program: str, policy: ShellPolicy) -> str:
    """The absolute path that will run for ``program``; paths must be the file the search path finds."""
    if not program:
        raise ToolFailure("bad_args", "the program name is empty")
    if "\x00" in program:
        raise ToolFailure("bad_args", "the command contains a NUL byte")
    name = os.path.basename(program)
    found = shutil.which(name, path=os.pathsep.join(policy.search_path)) if name else None
    if "/" in program:
        # Relative paths are refused outright: ``find -execdir`` would resolve them elsewhere.
        given = os.path.realpath(program) if os.path.isabs(program) else None
        if found is None or given is None or os.path.realpath(found) != given:
            raise _refuse(program, f"is not the system's `{name}`; name programs without a path (e.g. `{name or 'ls'}`)")
    if found is None:
        raise ToolFailure("bad_args", f"program `{program}` was not found on the search path; check the name (it runs without a shell, so shell builtins such as `cd` or `export` do not exist)")
    return found


def _check(argv: Sequence[str], policy: ShellPolicy, chain: list[str], depth: int) -> str:
    if depth > MAX_WRAPPER_DEPTH:
        raise ToolFailure("denied", f"wrappers nested more than {MAX_WRAPPER_DEPTH} deep ({' → '.join(chain)})")
    if "{}" in argv[0]:
        raise ToolFailure("denied", f"`{argv[0]}` would run a program chosen at run time ({' → '.join([*chain, argv[0]])}); name the program")
    name = os.path.basename(argv[0])
    chain = [*chain, name or argv[0]]
    via = f" (reached through {' → '.join(chain)})" if len(chain) > 1 else ""

    def judge(candidate: str, *, invoked: bool) -> bool:
        """Refuse a denied or untrusted opaque name; return whether it is opaque (and trusted)."""
        if candidate in policy.deny or any(fnmatch.fnmatchcase(candidate, p) for p in DENY_PATTERNS):
            raise ToolFailure("denied", f"program `{candidate}` is on the shell denylist{via}; it is never run")
        if not _is_opaque(candidate) or (not invoked and candidate in _MULTICALL):
            return False  # a multi-call binary (busybox) behind a name runs the applet of that name
        if name not in policy.named:
            raise ToolFailure(
                "denied",
                f"program `{candidate}` runs commands kasloop cannot inspect (a shell, interpreter or command runner){via}; "
                f"it is refused unless `{name}` is named in shell.allow",
            )
        return True

    if name in _SHELL_BUILTINS and name not in policy.allow:
        raise ToolFailure("bad_args", f"`{name}` is a shell builtin and no shell runs here; use the `cwd` argument, or run the program directly")
    # The name decides first (a denied program is refused whether or not it is installed),
    # then the file it resolves to (``sh`` → ``dash``, ``python3`` → ``python3.11``).
    opaque = judge(name, invoked=True)
    if not opaque and not policy.allow_any and name not in policy.allow:
        allowed = ", ".join(sorted(policy.allow)) or "(none)"
        raise ToolFailure("denied", f"program `{name}` is not on the shell allowlist{via}; allowed: {allowed}. Add it to shell.allow in the agent config")
    path = _locate(argv[0], policy)
    real = os.path.basename(os.path.realpath(path))
    if real != name:
        opaque = judge(real, invoked=False) or opaque
    if opaque:
        return path  # explicitly trusted: its inner commands are not inspected (see the module docstring)
    _check_guarded_options(name, argv)
    unwrap = _WRAPPERS.get(name)
    if unwrap is not None:
        for inner in unwrap(argv):
            _check(inner, policy, chain, depth + 1)
    return path


def check_command(argv: Sequence[str], policy: ShellPolicy) -> str:
    """Check a whole command against the policy; return the executable to run.

    Raises:
        ToolFailure: ``denied`` (with the reason and the wrapper chain) or ``bad_args``.
    """
    if not argv:
        raise ToolFailure("bad_args", "the command is empty")
    if any("\x00" in a for a in argv):
        raise ToolFailure("bad_args", "the command contains a NUL byte")
    return _check(argv, policy, [], 0)


def own_secret(name: str, policy: ShellPolicy) -> bool:
    """kasloop's own variables (``KASLOOP_*``: approval secrets, tool tokens), the variables its built-in
    tools and models read secrets from, and every variable a tool setting names (``*_env``): never
    passed to a program, even when ``env_passthrough`` names them."""
    return name.startswith("KASLOOP_") or name in DEFAULT_SECRET_ENVS or name in policy.own_secrets


def child_env(policy: ShellPolicy, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The scrubbed environment: defaults and exact passthrough names, pattern matches unless secret-looking;
    never kasloop's own secrets (:func:`own_secret`)."""
    source = os.environ if environ is None else environ
    exact = set(DEFAULT_ENV) | {p for p in policy.env_passthrough if not any(c in p for c in "*?[")}
    patterns = [p for p in policy.env_passthrough if any(c in p for c in "*?[")]
    env: dict[str, str] = {}
    for key, value in source.items():
        if own_secret(key, policy):
            continue
        if key in exact or (any(fnmatch.fnmatchcase(key, p) for p in patterns) and not looks_secret(key)):
            env[key] = value
    env["PATH"] = os.pathsep.join(policy.search_path)
    return env


# --------------------------------------------------------------------------- running


class _Capture:
    """Keeps the first ``head`` and last ``tail`` bytes of a stream and counts the rest."""

    def __init__(self, head: int, tail: int) -> None:
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        if b"\x00" in self.head or b"\x00" in self.tail:
            return f"[binary output, {self.total} bytes; not shown]"
        if self.dropped == 0:
            return (bytes(self.head) + bytes(self.tail)).decode(errors="replace")
        return f"{self.head.decode(errors='replace')}\n[... {self.dropped} bytes dropped while reading ...]\n{self.tail.decode(errors='replace')}"


async def _pump(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_READ_CHUNK):
        capture.feed(chunk)


def _signal_session(sid: int, sig: int, *, group: bool = True, sandboxed: bool = False) -> list[int]:
    """Send ``sig`` to every process of the session (and its process group); return who got it.

    The leader is a member (it is the command itself, or its sandbox). ``group=False`` once the
    leader has been reaped: its id might then name someone else's group. ``sandboxed`` and a
    signal other than SIGKILL: the sandbox's own processes are spared (see :func:`kasloop.tools.sandbox.sandbox_shells`).
    """
    spared = sandbox_shells(sid) if sandboxed and sig != signal.SIGKILL else set()
    if group and not spared:
        signal_quietly(sid, sig, group=True)
    members = session_members(sid)
    for pid in members:
        if pid not in spared:
            signal_quietly(pid, sig)
    return members


async def _kill_session(proc: asyncio.subprocess.Process, deadline: float = 2.0) -> list[int]:
    """SIGKILL the session until nothing of it runs; return survivors (normally [])."""
    end = time.monotonic() + deadline
    while True:
        members = _signal_session(proc.pid, signal.SIGKILL, group=proc.returncode is None)
        if not members or time.monotonic() > end:
            return members
        await asyncio.sleep(0.01)


def _close_transport(proc: asyncio.subprocess.Process) -> None:
    """Close the pipes now rather than when the transport is garbage-collected (maybe after the loop closed).

    asyncio exposes no public close for a ``Process``; ``_transport`` has been stable since Python 3.4.
    """
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


def _render(exit_code: int | None, out: _Capture, err: _Capture) -> str:
    head = f"exit code {exit_code}" if exit_code is not None else "no exit code (killed)"
    return f"{head}\n--- stdout ({out.total} bytes) ---\n{out.text()}\n--- stderr ({err.total} bytes) ---\n{err.text()}"


class ShellRunArgs(BaseModel):
    command: str | list[str] = Field(
        description="Command line (split like a shell, but no shell runs it: ; | && > $() * are plain text) or a list of arguments.",
    )
    timeout: float | None = Field(default=None, gt=0, description="Seconds before the process is killed (default 60, capped).")
    cwd: str = Field(default=".", description="Working folder relative to the workspace root.", json_schema_extra={"kasloop": "path"})


def sandboxed_command(argv: Sequence[str], executable: str, policy: ShellPolicy, ctx: ToolContext, cwd: Path) -> tuple[list[str], str]:
    """What to start for a checked command: bubblewrap around it (the default), or the program itself
    when a person set ``shell.sandbox = "none"``. Returns ``(argv, executable)``.

    Raises:
        ToolFailure: ``permanent``, naming the fix, when the sandbox is on and cannot run here.
    """
    name = os.path.basename(argv[0])
    if policy.sandbox == "none":
        return [name, *argv[1:]], executable
    bwrap = require_sandbox()
    command = bwrap_argv(
        bwrap, [name, *argv[1:]], workspace=ctx.workspace, cwd=cwd, protected=ctx.resources.protected, network=policy.network,
        search_path=policy.search_path,
    )
    return command, bwrap


def split_command(command: str | list[str]) -> list[str]:
    if isinstance(command, list):
        return list(command)
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise ToolFailure("bad_args", f"cannot split the command line: {exc}; check the quotes") from None


async def _run(args: ShellRunArgs, ctx: ToolContext) -> ToolResult:
    policy = ShellPolicy.from_context(ctx)
    argv = split_command(args.command)
    cwd = resolve_in_workspace(ctx.workspace, args.cwd)
    if not cwd.is_dir():
        raise ToolFailure("bad_args", f"cwd `{args.cwd}` is not a folder in the workspace")
    executable = check_command(argv, policy)
    command, executable = sandboxed_command(argv, executable, policy, ctx, cwd)
    absent = absent_protected(ctx.resources.protected, ctx.workspace) if policy.sandbox != "none" else []
    timeout = min(args.timeout if args.timeout is not None else policy.timeout, policy.max_timeout)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, executable=executable,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=cwd, env=child_env(policy), start_new_session=True,
        )  # fmt: skip
    except PermissionError as exc:
        raise ToolFailure("denied", f"cannot execute `{argv[0]}`: {exc.strerror}") from None
    except OSError as exc:
        raise ToolFailure("bad_args", f"cannot start `{argv[0]}`: {exc.strerror or exc}") from None
    record = record_sandbox(ctx.resources.home / SANDBOX_RECORDS, proc.pid) if policy.sandbox != "none" else None
    try:
        return await _supervise(proc, argv, args, policy, timeout, started, absent)
    finally:
        if record is not None:
            record.unlink(missing_ok=True)


async def _supervise(
    proc: asyncio.subprocess.Process, argv: list[str], args: ShellRunArgs, policy: ShellPolicy, timeout: float, started: float, absent: list[Path]
) -> ToolResult:
    """Read the output, enforce the timeout, kill what is left; the call's result."""
    out, err = _Capture(*STDOUT_KEEP), _Capture(*STDERR_KEEP)
    tasks = {asyncio.create_task(_pump(proc.stdout, out)), asyncio.create_task(_pump(proc.stderr, err)), asyncio.create_task(proc.wait())}
    killed: str | None = None
    survivors: list[int] = []
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            killed = "SIGTERM"
            _signal_session(proc.pid, signal.SIGTERM, group=proc.returncode is None, sandboxed=policy.sandbox != "none")
            _, pending = await asyncio.wait(tasks, timeout=policy.kill_grace)
            if pending or session_members(proc.pid):
                killed = "SIGKILL"
        survivors = await _kill_session(proc)  # leftovers of a normal exit too
        _, pending = await asyncio.wait(tasks, timeout=1.0)
        if pending:  # a pipe still held by a process that left the session (setsid): stop listening
            for task in pending:
                task.cancel()
            _close_transport(proc)
    except BaseException:
        _signal_session(proc.pid, signal.SIGKILL, group=proc.returncode is None)
        for task in tasks:
            task.cancel()
        _close_transport(proc)
        raise
    exit_code = proc.returncode
    if policy.sandbox != "none" and exit_code is not None and 128 < exit_code <= 192:
        exit_code = 128 - exit_code  # bubblewrap exits 128+N when the program died of signal N
    metadata = {
        "argv": argv,
        "exit_code": exit_code,
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "stdout_dropped": out.dropped,
        "stderr_dropped": err.dropped,
        "seconds": round(time.monotonic() - started, 3),
        "timeout": timeout,
    }
    if args.timeout is not None and args.timeout > timeout:
        metadata["timeout_capped"] = True
    if survivors:
        metadata["survivors"] = survivors
    removed = remove_created(absent)
    if removed:
        metadata["removed_protected"] = [str(p) for p in removed]
        names = ", ".join(p.name for p in removed)
        return ToolResult(
            ok=False, error_kind="denied", metadata=metadata,
            output=f"Error: `{argv[0]}` created {names}, which is kasloop's own state; it was removed. Write your files elsewhere.\n" + _render(exit_code, out, err),
        )
    if killed is not None:
        metadata["killed"] = killed
        text = f"Error: `{argv[0]}` timed out after {timeout:g} s; its processes were stopped ({killed}).\n" + _render(None, out, err)
        return ToolResult(ok=False, output=text, error_kind="timeout", metadata=metadata)
    return ToolResult(ok=True, output=_render(exit_code, out, err), metadata=metadata)


SHELL_TOOLS: tuple[Tool, ...] = (
    Tool(
        name="shell_run",
        description="Run one program in the workspace (no shell: pipes, redirects and ; do not work) and return its exit code, stdout and stderr.",
        args_model=ShellRunArgs,
        func=_run,
        risk="high",
        idempotent=False,
        # The call enforces its own timeout (kill included); this outer limit only has to be larger.
        timeout=DEFAULT_MAX_TIMEOUT + 60,
        output_limit=DEFAULT_OUTPUT_LIMIT,
        family="shell",
    ),
)
