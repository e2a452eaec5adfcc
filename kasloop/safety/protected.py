"""kasloop's own state is never a tool's target: the protected paths of one agent.

A model that can write ``kasloop.toml`` can raise its own autonomy next run; one
that can write ``.kasloop/kasloop.db`` can wipe every pending approval. So the
files kasloop reads its policy, state and secrets from are *protected paths*:
every files tool, every path argument of every tool (see
``Tool.path_args``) and the command sandbox refuse or hide them, whatever the
workspace is (the default workspace ``.`` contains ``kasloop.toml`` and
``.kasloop/``) and however a path is spelled.

What is protected (:func:`protected_paths_for`):

* the kasloop home folder (database, WAL, locks, tool state, process logs);
* the database file and its ``-wal``/``-shm``/``-journal``/``.locks`` siblings
  when it lives elsewhere;
* the config file in use, ``./kasloop.toml`` and ``$KASLOOP_CONFIG``; ``./.env``, and a
  LangGraph dev server's ``./langgraph.json`` and ``./.langgraph_api`` (Studio's database);
* the local model's cache (``$KASLOOP_CACHE``, default ``~/.cache/kasloop``);
* every file a tool setting points at (``*_file`` keys such as ``http.ca_file``:
  a CA bundle the model could rewrite would make kasloop trust any server);
* every path listed in ``protected_paths`` of the config (secret files, keys).

How a path is matched (:meth:`ProtectedPaths.violation`): the path is resolved
(``..``, symlinks anywhere on it), compared by prefix with each protected path
(a protected folder protects everything in it), case-insensitively (so
``KASLOOP.TOML`` is refused even where the file system tells case apart), and
an existing file is also compared by device and inode, so a hard link to the
database under another name is refused too (a file with several names is
compared with the protected files as they are at the time of the check, so a
database created after the agent started counts as well).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProtectedPaths", "protected_paths_for", "setting_files", "setting_values"]

DB_SIBLINGS = ("-wal", "-shm", "-journal", ".locks")
CWD_FILES = ("kasloop.toml", ".env", "langgraph.json", ".langgraph_api")
"""In the folder kasloop runs in: its default config, the ``.env`` file of secrets that LangGraph tools and
many apps read, and a LangGraph dev server's config and its database (``.langgraph_api``)."""
INODE_SCAN_LIMIT = 20_000
"""Files looked at when a hard-linked file is checked against the protected folders."""


def _absolute(path: Path) -> Path:
    """``path`` made absolute and resolved as far as it exists (a missing tail is kept as written)."""
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path.expanduser()))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return (stat.st_dev, stat.st_ino)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _fold(path: Path) -> str:
    return path.as_posix().casefold()


@dataclass(frozen=True)
class ProtectedPaths:
    """A set of absolute paths no tool may read, write, move, list into or run in.

    Args:
        paths: files or folders (made absolute and resolved here).
    """

    paths: tuple[Path, ...] = ()
    _folded: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    _inodes: frozenset[tuple[int, int]] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        resolved: list[Path] = []
        for raw in self.paths:
            for candidate in {Path(os.path.abspath(Path(raw).expanduser())), _absolute(Path(raw))}:
                if candidate not in resolved:
                    resolved.append(candidate)
        object.__setattr__(self, "paths", tuple(resolved))
        object.__setattr__(self, "_folded", tuple(_fold(p) for p in resolved))
        object.__setattr__(self, "_inodes", frozenset(i for i in (_identity(p) for p in resolved) if i is not None))

    def __bool__(self) -> bool:
        return bool(self.paths)

    def violation(
        self, target: Path, *, containing: bool = False, inodes: Mapping[tuple[int, int], Path] | None = None
    ) -> Path | None:
        """The protected path ``target`` would touch, or None.

        ``target`` is an absolute path (the tools pass what they resolved). It touches a protected
        path when it is one or lies inside one; with ``containing`` (moving or deleting a folder,
        running a command in it) also when it holds one: moving the folder that holds the database
        is as bad as deleting the database. Listing or searching a folder that holds one is fine:
        the protected entries are left out of what is shown.

        A file with more than one name (a hard link) is compared by inode with every protected file
        and every file inside a protected folder, as they are now (:meth:`inodes`; pass ``inodes`` to
        reuse one snapshot for many checks, as a listing does).
        """
        candidates = {Path(os.path.abspath(target)), _absolute(target)}
        for candidate in candidates:
            folded = _fold(candidate)
            for protected, protected_folded in zip(self.paths, self._folded, strict=True):
                if _within(candidate, protected) or (containing and _within(protected, candidate)):
                    return protected
                if folded == protected_folded or folded.startswith(protected_folded + "/"):
                    return protected
                if containing and protected_folded.startswith(folded.rstrip("/") + "/"):
                    return protected
        try:
            info = os.stat(target)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None  # folders cannot be hard-linked; a symlink was resolved above
        identity = (info.st_dev, info.st_ino)
        if identity in self._inodes:
            return next((p for p in self.paths if _identity(p) == identity), self.paths[0])
        if info.st_nlink > 1:
            live = self.inodes() if inodes is None else inodes
            if identity in live:
                return live[identity]
        return None

    def inodes(self, limit: int = INODE_SCAN_LIMIT) -> dict[tuple[int, int], Path]:
        """(device, inode) of every protected file and of the files inside protected folders, now.

        Protected files and the files directly in protected folders (the database and its WAL in the
        home) come first; then the folders are walked, up to ``limit`` entries in all (a huge model cache).
        """
        found: dict[tuple[int, int], Path] = {}
        budget = limit
        folders: list[Path] = []

        def add(path: str, root: Path) -> None:
            try:
                info = os.stat(path, follow_symlinks=False)
            except OSError:
                return
            if stat.S_ISREG(info.st_mode):
                found[(info.st_dev, info.st_ino)] = root

        for root in self.existing():
            if root.is_dir() and not root.is_symlink():
                folders.append(root)
            else:
                identity = _identity(root)
                if identity is not None:
                    found[identity] = root
        for root in folders:
            try:
                names = sorted(os.listdir(root))
            except OSError:
                continue
            for name in names[:budget]:
                add(os.path.join(root, name), root)
            budget -= min(len(names), budget)
        for root in folders:
            for folder, dirs, files in os.walk(root, followlinks=False):
                dirs.sort()
                if os.path.samefile(folder, root):
                    continue  # its files were taken above
                for name in files[: max(budget, 0)]:
                    add(os.path.join(folder, name), root)
                budget -= len(files)
                if budget <= 0:
                    return found
        return found

    def existing(self) -> list[Path]:
        """Every protected path that exists, outermost first, nested ones dropped."""
        found = sorted({p for p in self.paths if p.exists()}, key=lambda p: len(p.parts))
        kept: list[Path] = []
        for path in found:
            if not any(_within(path, outer) for outer in kept):
                kept.append(path)
        return kept

    def merged(self, more: Iterable[Path]) -> ProtectedPaths:
        return ProtectedPaths((*self.paths, *more))


def setting_values(settings: Any, suffix: str) -> Iterator[str]:
    """The (non-empty) values of every key ending in ``suffix`` in a nested settings table: ``_file`` for
    the files kasloop reads policy from, ``_env`` for the variables it reads secrets from."""
    if isinstance(settings, Mapping):
        for key, value in settings.items():
            if isinstance(key, str) and key.endswith(suffix) and isinstance(value, str) and value:
                yield value
            else:
                yield from setting_values(value, suffix)
    elif isinstance(settings, list):
        for item in settings:
            yield from setting_values(item, suffix)


def setting_files(settings: Any) -> Iterator[Path]:
    """Every path named by a ``*_file`` key in a (nested) tool-settings table."""
    return (Path(value) for value in setting_values(settings, "_file"))


def default_cache() -> Path:
    return Path(os.environ.get("KASLOOP_CACHE") or Path.home() / ".cache" / "kasloop")


def protected_paths_for(
    *,
    home: Path,
    db_path: str | Path | None = None,
    config_file: Path | None = None,
    tool_settings: Mapping[str, Any] | None = None,
    extra: Iterable[Path] = (),
    cwd: Path | None = None,
) -> ProtectedPaths:
    """The protected paths of an agent with this home, database, config file and settings (see the module)."""
    cwd = cwd or Path.cwd()
    paths: list[Path] = [home, default_cache(), *(cwd / name for name in CWD_FILES)]
    if os.environ.get("KASLOOP_CONFIG"):
        paths.append(Path(os.environ["KASLOOP_CONFIG"]))
    if config_file is not None:
        paths.append(config_file if config_file.is_absolute() else cwd / config_file)
    if isinstance(db_path, Path):
        paths.append(db_path)
        paths.extend(db_path.with_name(db_path.name + suffix) for suffix in DB_SIBLINGS)
    paths.extend(setting_files(dict(tool_settings or {})))
    paths.extend(extra)
    return ProtectedPaths(tuple(p if p.is_absolute() else cwd / p for p in paths))
