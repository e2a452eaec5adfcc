"""The command sandbox: every ``shell_run`` and ``process_start`` program runs inside bubblewrap.

The shell allowlist (:mod:`kasloop.tools.shell`) is *policy*: which programs
the model may name at each level. It is not a security boundary: one
allowlist mistake (an interpreter hidden behind an innocent name, an editor
with a shell escape) and the model runs arbitrary code. The boundary is this
sandbox, the mechanism the sandboxes of widely used coding agents use on
Linux (Debian package ``bubblewrap``, program ``bwrap``):

* new PID, IPC, UTS and network namespaces (and a user namespace where one
  can be made): the program sees none of the machine's processes (so
  ``/proc/<kasloop>/environ`` does not exist for it), and no network at all
  unless ``shell.network = true`` (then the host's network);
* the root file system read-only; ``/tmp``, ``/run`` and ``/dev`` fresh and
  empty; only the workspace writable;
* kasloop's protected paths (:mod:`kasloop.safety.protected`: its home and database,
  the config file in use, the model cache, setting and secret files) hidden:
  an empty read-only folder over each folder, an unreadable node over each
  file, wherever they are (inside the workspace too); so are the well-known
  credential stores of the user's home folder (:data:`CREDENTIAL_PATHS`:
  ``~/.ssh``, ``~/.aws``, ``~/.netrc``...);
* a clean environment: bubblewrap itself starts with only the variables the
  shell settings pass (:func:`kasloop.tools.shell.child_env`), never
  kasloop's own secrets;
* no capabilities, and ``--die-with-parent``: when the process that started
  the sandbox dies (kasloop killed with ``kill -9``), the kernel kills the
  sandbox's first process, and with it every process of its PID namespace.

``shell.sandbox = "none"`` runs programs without it; only a person can write
that (the config file is a protected path), and ``kasloop status`` and the
first line of a run say so. Without bubblewrap, or where the kernel refuses
the namespaces, shell and process tools refuse every call with one line
naming the fix (:func:`sandbox_problem`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import psutil

from kasloop.safety.protected import ProtectedPaths
from kasloop.tools.base import ToolFailure
from kasloop.tools.procfs import GONE_STATES, proc_stat, signal_quietly

__all__ = [
    "SANDBOX_FIX",
    "SANDBOX_MODES",
    "SandboxMode",
    "absent_protected",
    "bwrap_argv",
    "bwrap_executable",
    "describe_sandbox",
    "reap_orphans",
    "record_sandbox",
    "remove_created",
    "require_sandbox",
    "sandbox_mode",
    "sandbox_problem",
    "sandbox_shells",
    "sandbox_version",
    "sandbox_warning",
]

SandboxMode = Literal["bwrap", "none"]
"""How shell and process commands run: in the bubblewrap sandbox, or (a person's decision) unsandboxed."""
SANDBOX_MODES: tuple[str, ...] = get_args(SandboxMode)
SANDBOX_FIX = (
    "install bubblewrap (`apt-get install bubblewrap`) and allow user namespaces "
    "(`sysctl kernel.unprivileged_userns_clone=1`), or let a person set "
    '`sandbox = "none"` under [tool_settings.shell] in kasloop.toml to run commands unsandboxed'
)
CREDENTIAL_PATHS = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".netrc", ".pgpass",
    ".git-credentials", ".config/gh", ".npmrc", ".pypirc", ".terraformrc", ".password-store",
)
"""Well-known credential files and folders under the home folder of the user kasloop runs as: hidden in
the sandbox like kasloop's own state (the root file system is readable, so they would be otherwise)."""
FRESH_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
"""Mounted as empty tmpfs in the sandbox: nothing left there by others (sockets, files) is reachable."""


def bwrap_executable() -> str | None:
    """The ``bwrap`` program: ``$KASLOOP_BWRAP`` (tests point it at a missing file), else the system's."""
    override = os.environ.get("KASLOOP_BWRAP")
    if override is not None:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    return shutil.which("bwrap") or (p if os.access(p := "/usr/bin/bwrap", os.X_OK) else None)


@lru_cache(maxsize=8)
def _probe(executable: str) -> str | None:
    """Start one empty sandbox with every namespace; the reason it failed, or None."""
    argv = [executable, *_namespace_args(network=False), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": "/usr/bin:/bin"}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{executable}` does not run ({exc})"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        return f"`{executable}` cannot create the sandbox ({detail[-1] if detail else f'exit {done.returncode}'})"
    return None


def sandbox_problem() -> str | None:
    """Why commands cannot be sandboxed here (one phrase), or None when they can."""
    executable = bwrap_executable()
    if executable is None:
        return "bubblewrap (`bwrap`) is not installed"
    return _probe(executable)


def sandbox_version() -> str | None:
    """``bubblewrap 0.8.0``, or None when it is not installed."""
    executable = bwrap_executable()
    if executable is None:
        return None
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode(errors="replace").strip() or None


def require_sandbox() -> str:
    """The ``bwrap`` to run; raises a ``permanent`` failure naming the fix when there is none."""
    problem = sandbox_problem()
    if problem is not None:
        raise ToolFailure("permanent", f"commands run only inside the sandbox, and {problem}; {SANDBOX_FIX}")
    executable = bwrap_executable()
    assert executable is not None
    return executable


def _namespace_args(*, network: bool) -> list[str]:
    args = ["--unshare-user-try", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        args.append("--unshare-net")
    return args


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _programs_to_keep(search_path: Sequence[str], fresh_dirs: Sequence[Path]) -> list[Path]:
    """Search-path folders that the fresh ``/tmp`` (or ``/run``...) would hide: each one, or the virtualenv
    it belongs to (a ``pyvenv.cfg`` beside it), outermost first."""
    keep: list[Path] = []
    for entry in search_path:
        folder = Path(entry)
        if not folder.is_dir():
            continue
        resolved = folder.resolve()
        if not any(_within(resolved, fresh) or _within(folder, fresh) for fresh in fresh_dirs):
            continue
        target = folder.parent if (folder.parent / "pyvenv.cfg").is_file() else folder
        if not any(_within(target, kept) for kept in keep):
            keep = [k for k in keep if not _within(k, target)] + [target]
    return keep


def _homes() -> list[Path]:
    """The home folder of the user kasloop runs as (``$HOME`` and the password database's, if they differ)."""
    found = {Path.home()}
    try:
        import pwd

        found.add(Path(pwd.getpwuid(os.getuid()).pw_dir))
    except (ImportError, KeyError):
        pass
    return sorted(found)


def bwrap_argv(
    executable: str,
    argv: Sequence[str],
    *,
    workspace: Path,
    cwd: Path,
    protected: ProtectedPaths,
    network: bool = False,
    search_path: Sequence[str] = (),
) -> list[str]:
    """The full ``bwrap ... -- program args`` command line for one sandboxed program.

    Args:
        executable: the ``bwrap`` to run (from :func:`require_sandbox`).
        argv: the program's argv, ``argv[0]`` its bare name: bubblewrap looks it up on the ``PATH`` it
            is started with (the shell policy's search path, on the same read-only file system), so it
            finds the very file the policy checked, and the program sees the name it was called by.
        workspace: the only writable folder.
        cwd: where the program starts (inside the workspace).
        protected: kasloop's own paths, hidden wherever they are.
        network: share the host's network (``shell.network``); otherwise none at all.
        search_path: the folders programs are looked up in; any that lies in a folder the sandbox
            replaces (a virtualenv under ``/tmp``) is bound back read-only, with its virtualenv, so the
            program the policy checked is the one that runs.
    """
    root = workspace.resolve()
    args = [executable, "--die-with-parent", *_namespace_args(network=network), "--hostname", "kasloop-sandbox", "--cap-drop", "ALL"]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for fresh in FRESH_DIRS:
        if os.path.isdir(fresh):
            args += ["--tmpfs", fresh]  # a workspace inside one is bound back right after
    fresh_dirs = [Path(fresh) for fresh in FRESH_DIRS if os.path.isdir(fresh)]
    for folder in _programs_to_keep(search_path, fresh_dirs):
        args += ["--ro-bind", str(folder), str(folder)]
    args += ["--bind", str(root), str(root)]
    credentials = [home / name for home in _homes() for name in CREDENTIAL_PATHS]
    for hidden in protected.merged(p for p in credentials if os.path.lexists(p) and not _within(p.resolve(), root)).existing():
        if hidden.is_dir():
            args += ["--tmpfs", str(hidden), "--remount-ro", str(hidden)]
        else:
            args += ["--ro-bind", "/dev/null", str(hidden)]
    args += ["--chdir", str(cwd), "--", *argv]
    return args


# --------------------------------------------------------------------------- after a call


def absent_protected(protected: ProtectedPaths, workspace: Path) -> list[Path]:
    """Protected paths inside the writable workspace that do not exist yet (so nothing can be mounted over them)."""
    root = workspace.resolve()
    return [p for p in protected.paths if _within(p, root) and p != root and not os.path.lexists(p)]


def remove_created(paths: Sequence[Path]) -> list[Path]:
    """Remove whichever of ``paths`` a sandboxed program created (say ``kasloop.toml`` where there was none).

    Such a file would be read by kasloop's next start as its own config or state; the program may
    write anywhere in the workspace but there. Returns what was removed.
    """
    removed: list[Path] = []
    for path in paths:
        if not os.path.lexists(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# --------------------------------------------------------------------------- signals


def _is_bwrap(process: psutil.Process) -> bool:
    try:
        return process.name() == "bwrap"
    except psutil.Error:  # gone, or not ours to read
        return False


def sandbox_shells(leader: int) -> set[int]:
    """The bubblewrap processes of a sandbox started as ``leader``: itself and its first child (the
    sandbox's PID 1); empty when ``leader`` is not bubblewrap.

    A SIGTERM meant for the program must spare them: either one dying ends the whole sandbox at
    once, and the program would never get its chance to exit cleanly (SIGKILL then goes to them).
    """
    try:
        own = psutil.Process(leader)
    except (psutil.Error, ValueError):  # gone, or not a PID
        return set()
    if not _is_bwrap(own):
        return set()
    try:
        children = own.children()
    except psutil.Error:
        return {leader}
    return {leader, *(child.pid for child in children if _is_bwrap(child))}


# --------------------------------------------------------------------------- orphans


# Start times stay raw clock ticks from /proc (procfs), not psutil's create_time(): the records compare them
# with ticks taken before (these files, the process store, the stdlib-only relay), and psutil hides the ticks.
def _ticks(pid: int) -> int | None:
    stat = proc_stat(pid)
    return None if stat is None or stat.state in GONE_STATES else stat.start_ticks


def record_sandbox(folder: Path, pid: int) -> Path | None:
    """Note a running ``shell_run`` sandbox (its PID and start time, and kasloop's) in ``folder``.

    ``--die-with-parent`` already ends a sandbox whose kasloop died; the record is the second line of
    defence that :func:`reap_orphans` (run when an agent opens its home: ``run``, ``resume``, the
    daemon) acts on.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{pid}.json"
        path.write_text(json.dumps({"pid": pid, "ticks": _ticks(pid), "owner": os.getpid(), "owner_ticks": _ticks(os.getpid())}))
    except OSError:
        return None
    return path


def reap_orphans(folder: Path) -> list[int]:
    """SIGKILL every recorded sandbox whose kasloop process is gone; drop stale records. Returns PIDs killed."""
    killed: list[int] = []
    try:
        records = list(folder.glob("*.json"))
    except OSError:
        return killed
    for path in records:
        try:
            data = json.loads(path.read_text())
            pid, ticks, owner, owner_ticks = int(data["pid"]), data["ticks"], int(data["owner"]), data["owner_ticks"]
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if owner_ticks is not None and _ticks(owner) == owner_ticks:
            continue  # its kasloop still runs (another agent's call in progress)
        if ticks is not None and _ticks(pid) == ticks:
            signal_quietly(pid, signal.SIGKILL, group=True)  # the sandbox's first process: its PID namespace dies with it
            signal_quietly(pid, signal.SIGKILL)
            killed.append(pid)
        path.unlink(missing_ok=True)
    return killed


# --------------------------------------------------------------------------- what people are told


def sandbox_mode(tool_settings: dict[str, Any]) -> str:
    """``bwrap`` or ``none``, as ``[tool_settings.shell] sandbox`` says (``bwrap`` when unset or not a table)."""
    shell = tool_settings.get("shell")
    return str(shell.get("sandbox", "bwrap")) if isinstance(shell, dict) else "bwrap"


def sandbox_warning(tool_settings: dict[str, Any]) -> str | None:
    """The line a run starts with when a person turned the sandbox off; None when it is on."""
    if sandbox_mode(tool_settings) != "none":
        return None
    return 'warning: the command sandbox is OFF (sandbox = "none" in [tool_settings.shell]): shell and process tools run programs with kasloop\'s own rights'


def describe_sandbox(tool_settings: dict[str, Any]) -> str:
    """One line for ``kasloop status``: on (and which bubblewrap), off by a person's setting, or unavailable."""
    if sandbox_mode(tool_settings) == "none":
        return 'OFF (sandbox = "none" in [tool_settings.shell]): commands run unsandboxed'
    problem = sandbox_problem()
    if problem is not None:
        return f"unavailable: {problem}; shell and process tools refuse every call until you {SANDBOX_FIX}"
    shell = tool_settings.get("shell")
    network = isinstance(shell, dict) and shell.get("network") is True
    return f"on ({sandbox_version() or 'bubblewrap'}; network {'shared with the host' if network else 'off'})"
