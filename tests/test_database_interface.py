"""One database interface, two engines: ``kasloop.checkpoints.database.Database`` on SQLite and on PostgreSQL.

Each test runs on a real SQLite file and on a fresh database of the session's
PostgreSQL server (``db_url``), through the protocol only, unless it compares
the two engines' schemas.
"""

from __future__ import annotations

import ast
import inspect
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from conftest import query

from kasloop.checkpoints import Database, EventLog, open_database
from kasloop.checkpoints.database import Connection, IntegrityError
from kasloop.checkpoints.postgres import PostgresDatabase
from kasloop.checkpoints.schema import TABLES
from kasloop.checkpoints.sqlite import SqliteDatabase

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


async def test_both_engines_have_every_member_of_the_protocol_with_its_signature(db_url: str) -> None:
    async with open_database(db_url) as db:
        assert isinstance(db, PostgresDatabase if db_url.startswith("postgresql://") else SqliteDatabase)
        for name in Database.__annotations__:  # attributes
            assert hasattr(db, name), name
        methods = [name for name, value in vars(Database).items() if not name.startswith("_") and callable(value)]
        assert {"call", "write", "defer", "flush", "execute", "fetchall", "fetchone", "try_lock", "unlock", "open_store"} <= set(methods)
        for name in methods:
            wanted, got = getattr(Database, name), getattr(db, name)
            assert list(inspect.signature(got).parameters) == list(inspect.signature(wanted).parameters)[1:], name  # bound: no self
            assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), name


async def test_every_declared_table_exists_once_the_database_is_open(db_url: str) -> None:
    async with open_database(db_url):
        pass
    if db_url.startswith("postgresql://"):
        found = {r[0] for r in query(db_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    else:
        found = {r[0] for r in query(db_url, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {t.name for t in TABLES} <= found
    assert len({t.name for t in TABLES}) == len(TABLES)  # each declared once


async def test_the_two_dialects_declare_the_same_columns(tmp_path: Path, pg_url: str) -> None:
    async with open_database(tmp_path / "k.db"), open_database(pg_url):
        pass
    conn = sqlite3.connect(tmp_path / "k.db")
    try:
        on_sqlite = {t.name: [r[1] for r in conn.execute(f"PRAGMA table_info({t.name})")] for t in TABLES}
    finally:
        conn.close()
    with psycopg.connect(pg_url) as pg:
        on_postgres = {
            t.name: [r[0] for r in pg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> 'rowid'"
                " ORDER BY ordinal_position", (t.name,),
            )]
            for t in TABLES
        }  # fmt: skip
    assert on_sqlite == on_postgres
    assert all(on_sqlite.values())


async def test_a_unit_of_work_that_rolls_back_keeps_the_deferred_rows(db_url: str) -> None:
    """``call``: the queued event rows are committed before ``fn`` runs, so ``fn``'s rollback cannot take them."""
    async with open_database(db_url) as db:
        await EventLog(db).append("t", 1, "queued_before")

        def change_then_undo(conn: Connection) -> None:
            conn.execute("INSERT INTO kasloop_rules (tool, action, args, created_by, created_at) VALUES ('x', 'allow', '{}', 't', 0)")
            conn.rollback()

        await db.call(change_then_undo)
        assert query(db_url, "SELECT kind FROM kasloop_events") == [("queued_before",)]  # committed: another connection sees it
        assert query(db_url, "SELECT count(*) FROM kasloop_rules") == [(0,)]


async def test_insert_or_ignore_executemany_and_a_duplicate_key_read_the_same_on_both_engines(db_url: str) -> None:
    async with open_database(db_url) as db:

        def fill(conn: Connection) -> list[int]:
            insert = "INSERT INTO kasloop_webhook_seen (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
            counts = [conn.execute(insert, (key, 1.5)).rowcount for key in ("a", "b", "a")]
            conn.executemany("DELETE FROM kasloop_webhook_seen WHERE key = ?", [("b",), ("c",)])
            conn.commit()
            return counts

        assert await db.call(fill) == [1, 1, 0]
        assert [tuple(r) for r in await db.fetchall("SELECT key, seen_at FROM kasloop_webhook_seen")] == [("a", 1.5)]
        with pytest.raises(IntegrityError):
            await db.execute("INSERT INTO kasloop_webhook_seen (key, seen_at) VALUES (?, ?)", ("a", 2.0))
        row = await db.fetchone("SELECT key AS k, seen_at FROM kasloop_webhook_seen WHERE key = ?", ("a",))
        assert row is not None and (row["k"], row[1], list(row.keys())) == ("a", 1.5, ["k", "seen_at"])
        assert await db.execute("UPDATE kasloop_webhook_seen SET seen_at = ? WHERE key LIKE 'a%'", (3.0,)) == 1


async def test_a_lock_is_held_by_one_database_until_unlocked_or_closed(db_url: str) -> None:
    """``try_lock``: another connection (another process, another machine on PostgreSQL) cannot take it."""
    async with open_database(db_url) as first, open_database(db_url) as second:
        assert await first.try_lock("thread:t-1") is True
        assert await second.try_lock("thread:t-1") is False
        assert await first.try_lock("thread:t-1") is False  # not re-entrant: one holder, one driver
        assert await second.try_lock("thread:t-2") is True  # names are independent
        await first.unlock("thread:t-1")
        assert await second.try_lock("thread:t-1") is True
        await first.unlock("thread:t-1")  # not held by first: nothing happens
        assert await first.try_lock("thread:t-1") is False
    async with open_database(db_url) as third:  # closing released second's locks
        assert await third.try_lock("thread:t-1") is True and await third.try_lock("thread:t-2") is True


async def test_both_engines_open_their_keyword_ranked_store(db_url: str) -> None:
    async with open_database(db_url) as db:
        store = await db.open_store()
        try:
            await store.aput(("notes",), "a", {"text": "deploys need the staging database"})
            await store.aput(("notes",), "b", {"text": "invoices go out on mondays"})
            assert [i.key for i in await store.asearch(("notes",), query="deploy to staging")] == ["a"]
        finally:
            store.close()


def _imports(path: Path) -> set[str]:
    """The ``kasloop.checkpoints`` modules ``path`` imports anywhere (functions too), but for a PEP 562 moved-name
    redirect (a module ``__getattr__``)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    shims = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
    skip = {id(node) for shim in shims for node in ast.walk(shim)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kasloop.checkpoints."):
            names.add(node.module.removeprefix("kasloop.checkpoints."))  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix("kasloop.checkpoints.") for a in node.names if a.name.startswith("kasloop.checkpoints.")}
    return names


def test_the_engines_depend_on_the_protocol_not_on_each_other() -> None:
    graph = {p.stem: _imports(p) for p in CHECKPOINTS.glob("*.py") if p.stem != "__init__"}
    sqlite_side, postgres_side = {"sqlite", "saver", "store"}, {"postgres", "postgres_saver", "postgres_store"}
    assert not any(graph[m] & postgres_side for m in sqlite_side)
    assert not any(graph[m] & sqlite_side for m in postgres_side)
    assert {m for m, deps in graph.items() if deps & (sqlite_side | postgres_side)} <= sqlite_side | postgres_side | {"backends"}
    # No circle, late imports included: a topological order exists.
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {m for m, deps in graph.items() if m not in done and deps <= done}
        assert ready, f"import circle among {sorted(set(graph) - done)}"
        done |= ready


def test_a_postgres_url_without_psycopg_says_which_extra_to_install(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["psycopg"] = None  # as if the postgres extra were not installed
        from kasloop.checkpoints import open_database
        from kasloop.errors import CheckpointError

        async def main():
            try:
                async with open_database("postgresql://u@127.0.0.1:1/x"):
                    pass
            except CheckpointError as exc:
                print(exc)

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pip install 'kasloop[postgres]'" in done.stdout and "`psycopg` is not installed" in done.stdout
