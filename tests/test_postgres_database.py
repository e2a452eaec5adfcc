"""kasloop's tables on a real PostgreSQL server through ``open_database("postgresql://...")``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

from kasloop.checkpoints import ApprovalStore, EventLog, Inbox, Ledger, ThreadStore, open_database
from kasloop.checkpoints.postgres import KasloopPostgresSaver, PostgresDatabase
from kasloop.checkpoints.processes import ProcessConflict, ProcessRecord, ProcessStore
from kasloop.checkpoints.pruning import prune_events
from kasloop.checkpoints.rules import RuleStore
from kasloop.checkpoints.spend import SpendLog
from kasloop.errors import CheckpointError
from kasloop.runtime.daemon import _beat, _register


def _kinds(url: str) -> list[str]:
    with psycopg.connect(url) as raw:
        return [r[0] for r in raw.execute("SELECT kind FROM kasloop_events ORDER BY id")]


async def test_every_kasloop_table_works_on_postgres(pg_url: str) -> None:
    async with open_database(pg_url) as db:
        assert isinstance(db, PostgresDatabase) and isinstance(db.saver, KasloopPostgresSaver)
        threads = ThreadStore(db)
        await threads.create("t", "the goal", {"autonomy": 2})
        await threads.set_status("t", "done")
        record = await threads.get("t")
        assert record is not None and record["status"] == "done" and record["goal"] == "the goal"

        log = EventLog(db)
        await log.append("t", 1, "perceive", observation="é")
        await log.append("t/helper-1", 1, "decide", content="c")
        assert _kinds(pg_url) == []  # queued, not committed
        await db.saver.aput(generate_config("t"), generate_checkpoint(), generate_metadata(), {})
        assert _kinds(pg_url) == ["perceive", "decide"]  # committed before the checkpoint
        history = await log.history("t")
        assert [(e["kind"], e.get("path")) for e in history] == [("perceive", None), ("decide", "helper-1")]
        assert [e["kind"] for e in await log.history("t", limit=1)] == ["decide"]
        assert history[0]["observation"] == "é" and isinstance(history[0]["ts"], float)
        with pytest.raises(Exception, match="append-only"):
            await db.execute("UPDATE kasloop_events SET kind = 'x'")
        assert await prune_events(db, "t", keep_days=None, keep_last=0) == 1

        approvals = ApprovalStore(db)
        request = {
            "approval_id": "a1", "thread": "t", "batch_id": "b", "call_id": "c", "kind": "tool", "tool": "files_delete",
            "args": {"path": "x"}, "risk": "high", "reason": "r", "arg_hash": "h", "created_at": time.time(),
            "expires_at": time.time() + 60,
        }  # fmt: skip
        assert await approvals.add(request) is True
        assert await approvals.add(request) is False  # the same id twice is one row
        got = await approvals.get("a1")
        assert got is not None and got["status"] == "pending"

        ledger = Ledger(db)
        assert await ledger.claim("k", thread_id="t", call_id="c", tool="x", arg_hash="h", idempotent=True) is None
        await ledger.record_result("k", {"ok": True})
        again = await ledger.claim("k", thread_id="t", call_id="c", tool="x", arg_hash="h", idempotent=True)
        assert again is not None and again.result == {"ok": True} and [e.key for e in await ledger.entries("t")] == ["k"]

        inbox = Inbox(db)
        first = await inbox.put("t", "mail", "hello")
        assert await inbox.put("t", "mail", "again") == first + 1
        assert await inbox.unread("t") == 2
        assert [m.text for m in await inbox.take("t")] == ["hello", "again"] and await inbox.unread("t") == 0

        spend = SpendLog(db)
        await spend.add("2026-01-01", "t", input_tokens=10, output_tokens=5, usd=0.25)
        await spend.add("2026-01-01", "t", input_tokens=1, output_tokens=1, usd=0.5)
        total = await spend.day_total("2026-01-01")
        assert total == (17, 0.75) and type(total[0]) is int

        processes = ProcessStore(db)
        proc = ProcessRecord(id="p1", thread_id="t", pid=1, start_ticks=2**40, command=["x"], log_path="/l", started_at=1.5)
        await processes.add(proc)
        with pytest.raises(ProcessConflict):
            await processes.add(proc)
        assert await processes.get("p1") == proc

        rules = RuleStore(db)
        from kasloop.guardrails.policy import PolicyRule

        rule_id = await rules.add(PolicyRule(tool="files_delete", action="allow", args={}), by="test")
        assert [r["id"] for r in await rules.all()] == [rule_id]

        await _register(db)
        await _beat(db, cycles=3)
        await _register(db)  # a new daemon replaces the row
        row = await db.fetchone("SELECT cycles, pid FROM kasloop_daemon")
        assert row is not None and row["cycles"] == 0 and row[1] > 0
        await log.append("t", 9, "last_words")
    assert _kinds(pg_url)[-1] == "last_words"  # closing commits what is queued


async def test_a_failed_unit_of_work_is_rolled_back_but_queued_events_are_kept(pg_url: str) -> None:
    async with open_database(pg_url) as db:
        await EventLog(db).append("t", 1, "before_failure")

        def half(conn: object) -> None:
            conn.execute("INSERT INTO kasloop_inbox (thread_id, source, text, data, received_at) VALUES ('t', 's', 'x', '{}', 0)")  # type: ignore[attr-defined]
            raise RuntimeError("half-way")

        with pytest.raises(RuntimeError):
            await db.write(half)
        assert await db.fetchone("SELECT count(*) FROM kasloop_inbox") == (0,)
    assert _kinds(pg_url) == ["before_failure"]


async def test_an_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(CheckpointError, match=r"Cannot open the kasloop database `postgresql://u:\*\*\*@127.0.0.1:1/x`"):
        async with open_database("postgresql://u:secret@127.0.0.1:1/x"):
            pass


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from kasloop.checkpoints import EventLog, Inbox, open_database

    async def main(url, name, count):
        async with open_database(url) as db:
            inbox, log = Inbox(db), EventLog(db)
            for n in range(count):
                await log.append(f"outside-{name}", n, "put")
                await inbox.put(f"outside-{name}", "test", f"message {n}")

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_many_tasks_and_two_writer_processes_share_one_postgres_database(pg_url: str) -> None:
    tasks, per_task, per_process = 50, 10, 200
    writers = [  # started before the schema exists: setup is serialised by an advisory lock
        subprocess.Popen([sys.executable, "-c", WRITER, pg_url, str(n), str(per_process)], stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    async with open_database(pg_url) as db:
        inbox, log, ledger = Inbox(db), EventLog(db), Ledger(db)

        async def one(n: int) -> None:
            for i in range(per_task):
                await log.append(f"c-{n}", i, "tool")
                await ledger.claim(f"c-{n}-{i}", thread_id=f"c-{n}", call_id=str(i), tool="x", arg_hash="h", idempotent=True)
                await inbox.put(f"c-{n}", "test", str(i))

        results = await asyncio.gather(*(one(n) for n in range(tasks)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        for writer in writers:
            _, stderr = await asyncio.to_thread(writer.communicate, timeout=300)
            assert writer.returncode == 0, stderr
        assert await db.fetchone("SELECT count(*) FROM kasloop_inbox WHERE thread_id LIKE 'outside-%'") == (2 * per_process,)
        assert await db.fetchone("SELECT count(*) FROM kasloop_inbox WHERE thread_id LIKE 'c-%'") == (tasks * per_task,)
        assert await db.fetchone("SELECT count(*) FROM kasloop_ledger") == (tasks * per_task,)
        assert await db.fetchone("SELECT count(*) FROM kasloop_events") == (tasks * per_task + 2 * per_process,)


async def test_long_term_memory_on_postgres_searches_by_keyword(pg_url: str) -> None:
    from kasloop.memory.long_term import LongTermMemory

    async with open_database(pg_url) as db:
        memory = await LongTermMemory.open(db)
        await memory.add("Deploys need the staging database migrated first", kind="learning", tags=["deploy"])
        await memory.add("The invoice run happens on Mondays", kind="note")
        again = await memory.add("Deploys need the staging database migrated first", kind="learning", tags=["db"])
        assert again.tags == ("deploy", "db") and await memory.count() == 2
        found = await memory.search("how do I deploy to staging?")
        assert [i.text for i in found] == ["Deploys need the staging database migrated first"]  # stemmed: deploy ~ deploys
        assert found[0].score is not None and found[0].score > 0
        assert await memory.search("the of and") == []  # stopwords only
        assert await memory.search("invoice", kinds=["learning"]) == []
        assert [i.kind for i in await memory.list()] == ["learning", "note"]  # newest first
        assert await memory.delete(found[0].key) is True and await memory.get(found[0].key) is None
        other = await LongTermMemory.open(db, "other")
        assert await other.count() == 0 and await other.search("invoice") == []


async def test_the_store_and_the_saver_share_one_connection_without_colliding(pg_url: str) -> None:
    """LangGraph writes checkpoints in the background while a node reads the store: on one connection, in turn."""
    from kasloop.checkpoints.store import open_store

    async with open_database(pg_url) as db:
        store = await open_store(db)

        async def save(n: int) -> None:
            await db.saver.aput(generate_config(f"t{n}"), generate_checkpoint(), generate_metadata(), {})

        async def note(n: int) -> None:
            await store.aput(("board",), f"k{n}", {"text": f"note {n}"})
            assert await store.aget(("board",), f"k{n}") is not None

        # Without the shared lock this fails ("another command is already in progress") or hangs: bounded.
        await asyncio.wait_for(asyncio.gather(*(f(n) for n in range(40) for f in (save, note))), timeout=120)
        assert len(await store.asearch(("board",), limit=100)) == 40


async def test_opening_a_set_up_database_takes_no_table_lock(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer in the middle of a transaction must not stall (or deadlock) another process opening the database:
    the DDL runs once per schema version, not on every open (CREATE INDEX IF NOT EXISTS locks the table even
    when the index exists)."""
    async with open_database(pg_url):
        pass  # set up
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=20s")  # a regression fails with "lock timeout", not a hang
    with psycopg.connect(pg_url) as writer:  # a transaction holding row locks on two tables, not committed
        writer.execute("INSERT INTO kasloop_events (thread_id, ts, step, kind, data) VALUES ('w', 0, 0, 'x', '{}')")
        writer.execute("INSERT INTO kasloop_inbox (thread_id, source, text, data, received_at) VALUES ('w', 's', 't', '{}', 0)")

        async def open_and_use() -> None:
            async with open_database(pg_url) as db:
                await EventLog(db).append("other", 1, "perceive")
                await db.flush()

        await asyncio.wait_for(open_and_use(), timeout=60)
        writer.rollback()
    assert _kinds(pg_url) == ["perceive"]
