"""Shared fixtures: scripted models, a kasloop CLI in a real subprocess, database fingerprints."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

# No test may reach a real model provider: an accidental OpenAI call goes to a closed local port.
os.environ.pop("OPENAI_API_KEY", None)
os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
# The real model cache (the local-model tests use it); every other test sees an empty one, so no
# test starts the local server by accident.
REAL_CACHE = os.environ.get("KASLOOP_CACHE") or str(Path.home() / ".cache" / "kasloop")
for key in [k for k in os.environ if k.startswith("KASLOOP_")]:
    os.environ.pop(key)
os.environ["KASLOOP_CACHE"] = tempfile.mkdtemp(prefix="kasloop-test-cache-")


def write_script(path: Path, turns: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in turns))
    return path


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Poll a condition on real state (files, /proc, the database) until it holds; its value, or a failure
    naming ``what`` after ``timeout`` seconds (a bound for a broken run, not a guess at how long things take)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # polling interval of a condition, not a guess at how long something takes
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


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


def cli_runner(folder: Path, env: dict[str, str] | None = None) -> Callable[..., CLIResult]:
    """Run ``python -m kasloop ARGS`` in a fresh process, cwd = folder, home = folder/.kasloop; ``env`` is added
    to every command's environment (e.g. ``KASLOOP_DB``), a call's own ``env`` on top."""
    common = env or {}

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CLIResult:
        full_env = {**os.environ, "KASLOOP_HOME": str(folder / ".kasloop"), "COLUMNS": "200", **common, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "kasloop", *args],
            cwd=cwd or folder, env=full_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        return CLIResult(proc)

    return run


@pytest.fixture
def kasloop(tmp_path: Path) -> Callable[..., CLIResult]:
    return cli_runner(tmp_path)


def host_pids(token: str) -> list[int]:
    """Host PIDs of live (not zombie) processes whose command line holds ``token``.

    Commands run in their own PID namespace (the sandbox), so the PIDs they print are not the host's:
    tests find their processes by a token in the command line instead. bubblewrap's own processes,
    whose argv holds the program's, are not counted.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if token.encode() not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            if Path(f"/proc/{entry}/comm").read_bytes().strip() == b"bwrap":
                continue
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def db_fingerprint(path: Path) -> list[str]:
    """Every row of every table, as SQL text: equal fingerprints mean nothing changed."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# -- the real embedded model (tests under tests/local_model/, marked ``local_model``) ---------------
# They use the real model cache (``make test`` installs it first). A missing model is a failure, not a
# skip: CI always runs them. Locally, skip them with ``pytest -m "not local_model"``.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "local_model" in str(item.path):
            item.add_marker(pytest.mark.local_model)


@pytest.fixture(scope="session")
def local_model() -> Iterator[str]:
    """Point kasloop at the real cache; start the server once; stop it at the end if we started it."""
    from kasloop.models.local_install import LocalPaths
    from kasloop.models.local_server import server_status, start, stop

    paths = LocalPaths(Path(REAL_CACHE) / "llm")
    if not paths.installed:
        pytest.fail(
            f"The local model is not installed in {paths.root}: run `make test` (which installs it) or "
            "`kasloop local-model install`; to skip these tests locally use -m 'not local_model'."
        )
    previous = os.environ.get("KASLOOP_CACHE")
    os.environ["KASLOOP_CACHE"] = REAL_CACHE
    was_running = server_status(paths)["running"]
    info = start(paths)
    yield str(info["base_url"])
    if not was_running:
        stop(paths)
    if previous is None:
        os.environ.pop("KASLOOP_CACHE", None)
    else:
        os.environ["KASLOOP_CACHE"] = previous


# --------------------------------------------------------------------------- both database backends

from pgserver import PgServer, pg_server, pg_url  # noqa: E402, F401  (fixtures: the session's PostgreSQL cluster, a fresh database on it)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database of one test on each backend: a SQLite file, or a fresh database on the session's PostgreSQL.

    Also exported as ``KASLOOP_TEST_DB`` for the agent processes the test starts (``crash_agent.py``).
    """
    if request.param == "sqlite":
        url = str(tmp_path / ".kasloop" / "kasloop.db")
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.create_database()
    monkeypatch.setenv("KASLOOP_TEST_DB", url)
    return url


def assert_conformant(report: Any) -> None:
    """A LangGraph checkpoint conformance report: all eight capabilities detected and passed, and more than 50 tests."""
    from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

    results = report.results
    assert set(results) == {c.value for c in ALL_CAPABILITIES}
    problems = {name: (r.detected, r.failures) for name, r in results.items() if not (r.detected and r.passed)}
    assert problems == {}
    assert sum(r.tests_passed for r in results.values()) > 50


def fingerprint(db: str | Path) -> list[str]:
    """``db_fingerprint`` on either backend."""
    from kasloop.checkpoints.database import is_postgres_url
    from pgserver import pg_fingerprint

    return pg_fingerprint(str(db)) if is_postgres_url(db) else db_fingerprint(Path(db))


def query(db: str | Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of one read-only query, on either backend (a connection of its own, like another process)."""
    from kasloop.checkpoints.database import is_postgres_url

    if is_postgres_url(db):
        import psycopg

        with psycopg.connect(str(db)) as pg:
            return [tuple(r) for r in pg.execute(sql).fetchall()]
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def state_of(agent: Any, thread: str) -> dict[str, Any]:
    """The values of ``thread``'s latest checkpoint, read through kasloop's saver (either backend)."""
    from kasloop.checkpoints import open_database

    async with open_database(agent.db_path) as db:
        tup = await db.saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
    assert tup is not None
    return dict(tup.checkpoint["channel_values"])


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (``[a, b, ..., a]``), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            if (cycle := visit(target, [*path, node])) is not None:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        if (cycle := visit(start, [])) is not None:
            return cycle
    return None


@contextmanager
def served(server: HTTPServer) -> Iterator[HTTPServer]:
    """Serve a local test server (a wire-format model, a fake API) on a thread while the block runs."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    """Answer a request of a local test server with ``payload`` as JSON."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
