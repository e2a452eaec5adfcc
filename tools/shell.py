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

from pydantic import BaseModel, Field

from kasloop.tools.base import DEFAULT_OUTPUT_LIMIT, Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.files import resolve_in_workspace
from kasloop.tools.shell_policy import (
    DEFAULT_ALLOW,
    DEFAULT_DENY,
    DEFAULT_ENV,
    DEFAULT_MAX_TIMEOUT,
    DENY_PATTERNS,
    OPAQUE,
    OPAQUE_PATTERNS,
    ShellPolicy,
    ShellSettings,
    check_command,
    child_env,
    looks_secret,
    own_secret,
    split_command,
)
from kasloop.tools.shell_runner import STDERR_KEEP, STDOUT_KEEP, run_checked

# The family is three modules besides this one, each with one job: the policy (program lists, settings,
# the check of a command, the scrubbed environment) in shell_policy, the wrappers' option syntax in
# shell_wrappers, running a checked command in its sandbox and session in shell_runner. This module keeps
# the family's description (above), the tool and its arguments, and re-exports the names importers use.
__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_DENY",
    "DEFAULT_ENV",
    "DENY_PATTERNS",
    "OPAQUE",
    "OPAQUE_PATTERNS",
    "SHELL_TOOLS",
    "STDERR_KEEP",
    "STDOUT_KEEP",
    "ShellPolicy",
    "ShellRunArgs",
    "ShellSettings",
    "check_command",
    "child_env",
    "looks_secret",
    "own_secret",
    "split_command",
]


class ShellRunArgs(BaseModel):
    command: str | list[str] = Field(
        description="Command line (split like a shell, but no shell runs it: ; | && > $() * are plain text) or a list of arguments.",
    )
    timeout: float | None = Field(default=None, gt=0, description="Seconds before the process is killed (default 60, capped).")
    cwd: str = Field(default=".", description="Working folder relative to the workspace root.", json_schema_extra={"kasloop": "path"})


async def _run(args: ShellRunArgs, ctx: ToolContext) -> ToolResult:
    policy = ShellPolicy.from_context(ctx)
    argv = split_command(args.command)
    cwd = resolve_in_workspace(ctx.workspace, args.cwd)
    if not cwd.is_dir():
        raise ToolFailure("bad_args", f"cwd `{args.cwd}` is not a folder in the workspace")
    executable = check_command(argv, policy)
    timeout = min(args.timeout if args.timeout is not None else policy.timeout, policy.max_timeout)
    return await run_checked(argv, executable, policy, ctx, cwd, timeout, requested=args.timeout)


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
