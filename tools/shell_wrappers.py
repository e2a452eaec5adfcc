"""Wrapper programs of the shell jail, looked through: which program ``env``, ``nice``, ``timeout``,
``xargs``, ``nohup``, ``stdbuf``, ``ionice``, ``time``, ``busybox``/``toybox`` and ``find -exec`` start.

A module of its own because it is one job with its own grammar: each wrapper's real option syntax
(GNU style), parsed strictly enough that an option kasloop does not know, or one that changes what
runs or where, is refused rather than guessed at. :func:`kasloop.tools.shell_policy.check_command`
calls :data:`WRAPPERS` to find the inner commands and checks each by the same rules (recursively),
and :func:`check_guarded_options` for the dangerous options of a few allowed programs. The rules
themselves are described in :mod:`kasloop.tools.shell`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kasloop.tools.base import ToolFailure

__all__ = ["WRAPPERS", "check_guarded_options", "refuse"]

# env assignments that change which code runs.
_DANGEROUS_ENV = re.compile(
    r"^(PATH|LD_.*|DYLD_.*|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|IFS|PYTHON.*|PERL5.*|PERLLIB|RUBYOPT|RUBYLIB|NODE_OPTIONS|"
    r"NODE_PATH|GIT_.*|PAGER|EDITOR|VISUAL|GCONV_PATH|MALLOC_.*|LOCPATH|NLSPATH|HOSTALIASES|RES_OPTIONS)$"
)


@dataclass(frozen=True)
class _Opts:
    """GNU-style option syntax of a wrapper: which options exist and which take an argument."""

    short_flags: str = ""
    short_args: str = ""
    short_optional: str = ""
    long_flags: frozenset[str] = frozenset()
    long_args: frozenset[str] = frozenset()
    long_optional: frozenset[str] = frozenset()


def refuse(program: str, reason: str) -> ToolFailure:
    """The ``denied`` failure for ``program``, with the reason (also used by the check in :mod:`kasloop.tools.shell_policy`)."""
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
                raise refuse(program, f"option `{arg}` is not supported by the shell policy")
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
                    raise refuse(program, f"option `-{ch}` (in `{arg}`) is not supported by the shell policy")
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
            raise refuse("env", f"may not set `{name}`: it changes which code runs")
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
        raise refuse(name, f"option `{argv[1]}` is not supported by the shell policy")
    return [list(argv[1:])]


_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_FIND_WRITES = frozenset({"-delete", "-fprint", "-fprint0", "-fprintf", "-fls"})


def _unwrap_find(argv: Sequence[str]) -> list[list[str]]:
    inner: list[list[str]] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in _FIND_WRITES:
            raise refuse("find", f"action `{arg}` deletes or writes files; it is refused by the shell policy")
        if arg in _FIND_EXEC:
            end = i + 1
            while end < len(argv) and argv[end] not in (";", "+"):
                end += 1
            command = list(argv[i + 1 : end])
            if not command:
                raise ToolFailure("bad_args", f"`find {arg}` needs a command")
            if "{}" in command[0]:
                raise refuse("find", f"`{arg}` would run the files it finds as programs")
            inner.append(command)
            i = end + 1
            continue
        i += 1
    return inner


WRAPPERS: dict[str, Callable[[Sequence[str]], list[list[str]]]] = {
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
"""Wrapper name → the commands it would start (``[]``: none), refusing options the policy does not allow."""

# Options of allowed programs that run other programs or write files anywhere: (short letters, long names).
_GUARDED_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sort": ("o", ("output", "compress-program")),
    "date": ("s", ("set",)),
    "file": ("C", ("compile",)),
}


def check_guarded_options(name: str, argv: Sequence[str]) -> None:
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
                raise refuse(name, f"option `{arg}` runs programs or writes files; it is refused by the shell policy")
        elif arg.startswith("-") and any(ch in arg[1:] for ch in short):
            raise refuse(name, f"option `{arg}` runs programs or writes files; it is refused by the shell policy")
