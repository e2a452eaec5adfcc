"""The shell jail's policy: which command may run, found without running anything.

Everything that decides *whether* a command runs lives here, apart from the sandbox that contains it:
the program lists (:data:`DEFAULT_ALLOW`, :data:`DEFAULT_DENY`, :data:`OPAQUE`...), the family's
settings (:class:`ShellSettings`) and the policy of one call (:class:`ShellPolicy`), splitting a
command line (:func:`split_command`), the check of a command and of every program it reaches
through wrappers (:func:`check_command`; the wrappers' option syntax is in
:mod:`kasloop.tools.shell_wrappers`) and the scrubbed environment (:func:`child_env`). Both the
shell family and the process family (:mod:`kasloop.tools.process`) run commands under it; the rules
are described in :mod:`kasloop.tools.shell`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import Field, StrictStr, ValidationInfo, field_validator

from kasloop.safety.protected import setting_values
from kasloop.safety.secrets import DEFAULT_SECRET_ENVS, PROVIDER_KEY_ENVS
from kasloop.tools.base import ToolContext, ToolFailure, ToolSettings
from kasloop.tools.sandbox import SandboxMode
from kasloop.tools.shell_wrappers import WRAPPERS, check_guarded_options, refuse

__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_DENY",
    "DEFAULT_ENV",
    "DEFAULT_KILL_GRACE",
    "DEFAULT_MAX_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DENY_PATTERNS",
    "MAX_KILL_GRACE",
    "MAX_WRAPPER_DEPTH",
    "OPAQUE",
    "OPAQUE_PATTERNS",
    "ShellPolicy",
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

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_TIMEOUT = 600.0
DEFAULT_KILL_GRACE = 2.0
MAX_KILL_GRACE = 30.0
MAX_WRAPPER_DEPTH = 8


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
            raise refuse(program, f"is not the system's `{name}`; name programs without a path (e.g. `{name or 'ls'}`)")
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
    check_guarded_options(name, argv)
    unwrap = WRAPPERS.get(name)
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


_PROVIDER_KEYS = frozenset(PROVIDER_KEY_ENVS.values())


def own_secret(name: str, policy: ShellPolicy) -> bool:
    """kasloop's own variables (``KASLOOP_*``: approval secrets, tool tokens), the variables its built-in
    tools and models read secrets from (every model provider's key variable too), and every variable a tool setting names (``*_env``): never
    passed to a program, even when ``env_passthrough`` names them."""
    return name.startswith("KASLOOP_") or name in DEFAULT_SECRET_ENVS or name in _PROVIDER_KEYS or name in policy.own_secrets


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


def split_command(command: str | list[str]) -> list[str]:
    if isinstance(command, list):
        return list(command)
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise ToolFailure("bad_args", f"cannot split the command line: {exc}; check the quotes") from None
