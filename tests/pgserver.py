"""A throwaway PostgreSQL cluster on 127.0.0.1 for the Postgres backend's tests.

Debian's ``postgresql`` package provides the server binaries under
``/usr/lib/postgresql/<version>/bin`` (``.ci/run`` installs it when missing).
The fixture ``pg_url`` makes a fresh cluster once per test session:

* ``initdb`` into a temporary folder with ``trust`` authentication for local
  connections (the cluster lives only as long as the session and listens on
  127.0.0.1 only, on a free port, with its unix socket inside the folder);
* ``pg_ctl start -w`` waits until the server accepts connections (no sleeps);
* at the end ``pg_ctl stop -m immediate -w`` and the folder is removed.

PostgreSQL refuses to run as root. This sandbox's CI runs as root, so the
server runs as Debian's ``postgres`` system user (made by the package), via
``runuser -u postgres --``: the cluster folder is made outside pytest's 0700
folders and handed to that user with ``chown``. Run as any other user, the
binaries are started directly.

Each test gets its own database (``pg_database``): tables never leak between
tests, and creating a database from ``template0`` is fast.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"
SERVER_USER = "postgres"  # Debian's system user for the server when the tests run as root
TIMEOUT = 60


def _bindir() -> Path:
    """The newest Debian PostgreSQL bin folder that has ``initdb``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        which = shutil.which("initdb")
        if which is None:
            pytest.fail("PostgreSQL's server binaries are needed: apt-get install -y postgresql")
        return Path(which).parent
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    """Root cannot run the server: wrap the command to run as ``postgres``; anyone else runs it as is."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVER_USER, "--", *argv]


class PgServer:
    """One running cluster: ``url(db)`` for a database on it, ``create_database()`` for a fresh one."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.user = SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


def start_server() -> tuple[PgServer, Path]:
    """initdb + pg_ctl start -w; returns the server and its data folder (the caller stops it)."""
    bindir = _bindir()
    folder = Path(tempfile.mkdtemp(prefix="kasloop-pg-"))
    data, sock = folder / "data", folder / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        for path in (folder, sock):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    run = lambda argv: subprocess.run(_as_server_user(argv), check=True, capture_output=True, timeout=TIMEOUT)  # noqa: E731
    run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", SERVER_USER if os.geteuid() == 0 else
         pwd.getpwuid(os.geteuid()).pw_name, "-E", "UTF8", "--no-sync"])  # fmt: skip
    options = f"-c listen_addresses={HOST} -p {port} -k {sock} -c fsync=off -c max_connections=600"
    run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "-t",
         str(TIMEOUT), "start"])  # fmt: skip
    return PgServer(folder, port), data


def stop_server(server: PgServer, data: Path) -> None:
    bindir = _bindir()
    subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                   check=False, capture_output=True, timeout=TIMEOUT)  # fmt: skip
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL cluster."""
    try:
        server, data = start_server()
    except subprocess.CalledProcessError as e:
        pytest.fail(f"PostgreSQL did not start: {e.stderr.decode(errors='replace')[-2000:]}")
    try:
        yield server
    finally:
        stop_server(server, data)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's cluster, as a ``postgresql://`` URL."""
    return pg_server.create_database()


def pg_fingerprint(url: str) -> list[str]:
    """Every row of every table of the database at ``url``, as sorted text: equal fingerprints mean nothing changed
    (``conftest.db_fingerprint`` for SQLite files)."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        return [f"{t}: {row!r}" for t in tables for row in sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"').fetchall()))]
