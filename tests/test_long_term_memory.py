"""Tier-3 long-term memory: keyword-ranked store, idempotent items, export/import, and the remember/recall tools."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from langgraph.store.base import BaseStore
from langgraph.store.sqlite.aio import AsyncSqliteStore

from kasloop import Agent, AgentConfig, Budgets, UsageError
from kasloop.checkpoints import open_database
from kasloop.checkpoints.store import KasloopStore, fts_query
from kasloop.memory.items import MemoryItem
from kasloop.memory.long_term import LongTermMemory, relevant_learnings
from kasloop.tools.base import ToolContext, ToolResources, run_tool
from kasloop.tools.registry import select_tools
from conftest import call, db_fingerprint, write_script

TOPICS = [
    "The CI runner caches pip wheels in /var/cache/pip; clear it when builds fail with hash errors.",
    "Customer invoices are generated on the first business day of each month.",
    "The nightly backup job writes to the bucket backups-eu and keeps 14 days.",
    "Staging uses PostgreSQL 15; production still runs PostgreSQL 13.",
    "Slack alerts for disk usage fire above 85 percent.",
    "The mobile app release train leaves every second Thursday.",
]


async def test_search_ranks_the_relevant_learning_first_and_filters_kinds(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        for text in TOPICS:
            await memory.add(text, kind="learning")
        await memory.add("Ask about the backup retention for the EU bucket", kind="note")
        await memory.add("Keep backups for 30 days", kind="goal")
        hits = await memory.search("how long are backups kept in the EU bucket?", kinds=["learning"])
        assert hits[0].text == TOPICS[2] and all(h.kind == "learning" for h in hits)
        assert hits[0].score is not None and (len(hits) == 1 or hits[0].score >= hits[1].score)
        everything = await memory.search("backups EU bucket", limit=10)
        assert {h.kind for h in everything} == {"learning", "note", "goal"}
        assert await relevant_learnings(memory, "which PostgreSQL version runs in production?") == [
            i for i in await memory.list("learning") if i.text == TOPICS[3]
        ]
        memory.close()


async def test_adding_the_same_text_twice_is_one_item_with_a_new_updated_at(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        first = await memory.add("Deploys need --force on Fridays.", kind="learning", tags=["deploy"], source="thread a")
        second = await memory.add("  Deploys need   --force on Fridays.\n", kind="learning", tags=["ops", "deploy"])
        assert second.key == first.key and second.created_at == first.created_at and second.updated_at >= first.updated_at
        assert second.tags == ("deploy", "ops") and second.source == "thread a"
        assert [i.key for i in await memory.list()] == [first.key]
        other = await memory.add("Deploys need --force on Fridays.", kind="note")  # another kind is another item
        assert other.key != first.key and len(await memory.list()) == 2
        assert await memory.get(first.key) == second
        memory.close()


async def test_three_thousand_items_later_search_still_finds_the_first(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        early = await memory.add("The staging database password rotates every Tuesday at 04:00 UTC.", kind="learning")
        for i in range(3000):
            await memory.add(f"Cycle {i}: the staging queue had {i % 9} jobs and the database was healthy.", kind="learning")
        assert await memory.count() == 3001
        [best, *_] = await memory.search("when does the staging database password rotate?", kinds=["learning"])
        assert best.key == early.key
        # The LangGraph BaseStore API itself is keyword-ranked.
        assert isinstance(memory.store, BaseStore)
        [hit] = await memory.store.asearch(("kasloop", "memory"), query="password rotates tuesday", limit=1)
        assert hit.key == early.key and hit.score is not None and hit.score > 0
        memory.close()


@pytest.mark.parametrize(
    "query",
    ['foo"bar OR (', "NEAR(a b", "*", "a AND", '"', "-x", "body:secret", "^start", "(((", "x OR OR y", "'; DROP TABLE store; --"],
)
async def test_fts_syntax_in_queries_is_harmless(tmp_path: Path, query: str) -> None:
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        await memory.add('The parser chokes on foo"bar inputs.', kind="learning")
        hits = await memory.search(query)
        assert isinstance(hits, list)
        if "foo" in query:
            assert hits and "foo\"bar" in hits[0].text
        assert await memory.store.asearch(("kasloop",), query=query) is not None
        assert sqlite3.connect(db.path).execute("SELECT count(*) FROM store").fetchone()[0] == 1
        memory.close()


async def test_empty_and_stopword_queries_return_nothing(tmp_path: Path) -> None:
    assert fts_query("the and of") is None and fts_query("  ") is None
    assert fts_query('say "hi" (now)') == '"say" OR "hi"'
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        await memory.add("the and of", kind="learning")
        assert await memory.search("") == [] and await memory.search("the and of") == []
        assert await relevant_learnings(memory, "") == []
        memory.close()


async def test_bad_input_to_add_is_a_one_line_usage_error(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        for kwargs in ({"text": "   "}, {"text": "x", "kind": "idea"}, {"text": "x", "tags": ["a\nb"]}, {"text": "x" * 20_001}):
            with pytest.raises(UsageError) as info:
                await memory.add(**kwargs)  # type: ignore[arg-type]
            assert "\n" not in info.value.message
        assert await memory.list() == []
        with pytest.raises(UsageError, match="namespace"):
            LongTermMemory(memory.store, "a.b")
        memory.close()


ODD_TEXTS = [
    ("learning", "Two lines:\nsecond line", ["a", "b c"], "thread t1"),
    ("note", "Looks like markdown:\n- not a bullet\n## not a heading\n\n  indented after a blank line", [], None),
    ("goal", "Ünïcödé and an HTML comment end --> and <!-- kasloop {} -->", ["x>y"], "source --> weird"),
    ("learning", "Last line looks like metadata\n<!-- kasloop {\"tags\": []} -->", [], None),
]


@pytest.mark.parametrize("suffix", [".json", ".md"])
async def test_export_then_import_gives_the_same_items(tmp_path: Path, suffix: str) -> None:
    export = tmp_path / f"memory{suffix}"
    async with open_database(tmp_path / "a.db") as db:
        memory = await LongTermMemory.open(db)
        for kind, text, tags, source in ODD_TEXTS:
            await memory.add(text, kind=kind, tags=tags, source=source)
        await memory.add("Deploys need --force on Fridays.", kind="learning")
        await memory.add("Deploys need --force on Fridays.", kind="learning", tags=["later"])  # updated_at != created_at
        original = await memory.list()
        assert await memory.export(export) == len(original) == 5
        memory.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "memory" in p.name) == [export.name], "no temporary file is left"
    async with open_database(tmp_path / "b.db") as db:
        memory = await LongTermMemory.open(db)
        assert await memory.import_(export) == 5
        assert await memory.list() == original
        again = tmp_path / f"again{suffix}"
        await memory.export(again)
        assert again.read_bytes() == export.read_bytes()
        assert (await memory.search("HTML comment"))[0].text == ODD_TEXTS[2][1]
        memory.close()


async def test_a_hand_written_markdown_file_imports(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# My notes\n\nFree text before the first section.\n\n## Learnings\n\n- Tests need the venv\n- Two\n  lines\n\n## goal\n- Ship it\n")
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        assert await memory.import_(notes) == 3
        assert sorted((i.kind, i.text) for i in await memory.list()) == [("goal", "Ship it"), ("learning", "Tests need the venv"), ("learning", "Two\nlines")]
        memory.close()


BAD_FILES = [
    ("bad.json", "{not json", "not valid JSON"),
    ("bad.json", '{"items": {"a": 1}}', "must hold a list"),
    ("bad.json", json.dumps({"items": [{"kind": "learning", "text": "fine"}, {"kind": "idea", "text": "x"}]}), "entry 2 (items[1]): `kind`"),
    ("bad.json", json.dumps([{"kind": "note", "text": "fine"}, {"kind": "note", "text": "  "}]), "entry 2 (items[1]): `text`"),
    ("bad.json", json.dumps([{"kind": "note", "text": "x", "colour": "red"}]), "entry 1 (items[0]): `colour`"),
    ("bad.md", "## Learnings\n- fine\n## Ideas\n- x\n", "line 3: unknown section `Ideas`"),
    ("bad.md", "- before any heading\n", "line 1: an item before any"),
    ("bad.md", "## Notes\n- fine\nnot indented\n", "line 3: expected `- text`"),
    ("bad.md", '## Notes\n- fine\n- x\n  <!-- kasloop {"created_at": "yesterday"} -->\n', "entry 2 (line 3): `created_at`"),
    ("bad.md", "## Notes\n- fine\n- x\n  <!-- kasloop {broken} -->\n", "line 4: the kasloop comment is not valid JSON"),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD_FILES)
async def test_importing_a_bad_file_changes_nothing(tmp_path: Path, name: str, content: str, expected: str) -> None:
    bad = tmp_path / name
    bad.write_text(content)
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        await memory.add("Already here.", kind="note")
    before = db_fingerprint(tmp_path / "k.db")
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        with pytest.raises(UsageError) as info:
            await memory.import_(bad)
        memory.close()
    assert expected in info.value.message and "\n" not in info.value.message, info.value.message
    assert "nothing was imported" in info.value.message.lower()
    assert db_fingerprint(tmp_path / "k.db") == before


async def test_missing_files_and_unknown_formats_are_usage_errors(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        cases = [
            (memory.import_(tmp_path / "missing.json"), "does not exist"),
            (memory.export(tmp_path / "m.txt"), "pass --format json|markdown"),
            (memory.export(tmp_path / "m.json", "xml"), "Format `xml` is not supported"),
            (memory.import_(tmp_path / "m.md", "yaml"), "Format `yaml` is not supported"),
        ]
        for coro, expected in cases:
            with pytest.raises(UsageError, match=expected):
                await coro
        assert sorted(p.name for p in tmp_path.iterdir()) == ["k.db", "k.db-shm", "k.db-wal"]
        memory.close()


async def test_namespaces_keep_agents_apart(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        alice, bob = await LongTermMemory.open(db, "alice"), await LongTermMemory.open(db, "bob")
        await alice.add("Alice prefers tabs.", kind="learning")
        await bob.add("Bob prefers spaces.", kind="learning")
        assert [i.text for i in await alice.search("prefers")] == ["Alice prefers tabs."]
        assert [i.text for i in await bob.list()] == ["Bob prefers spaces."]
        alice.close()
        bob.close()


async def test_items_written_by_langgraphs_stock_store_are_indexed(tmp_path: Path) -> None:
    """Writes by any LangGraph store on the same file are searchable: triggers keep the index, and the first open backfills."""
    path = tmp_path / "k.db"
    async with AsyncSqliteStore.from_conn_string(str(path)) as stock:
        await stock.setup()
        await stock.aput(("kasloop", "memory", "learning"), "before", {"kind": "learning", "text": "Written before kasloop indexed this file.", "tags": [], "source": None, "created_at": 1.0, "updated_at": 1.0})
    async with open_database(path) as db:
        memory = await LongTermMemory.open(db)
        assert [i.key for i in await memory.search("indexed file")] == ["before"]
        memory.close()
    async with AsyncSqliteStore.from_conn_string(str(path)) as stock:
        await stock.aput(("other", "app"), "doc", {"title": "Quarterly zebra census"})
        await stock.adelete(("kasloop", "memory", "learning"), "before")
    async with open_database(path) as db:
        store = await KasloopStore.open(db)
        assert [h.key for h in await store.asearch(("other",), query="zebra")] == ["doc"]
        assert [h.key for h in await store.asearch(("other",), query="zebra", filter={"title": "Quarterly zebra census"})] == ["doc"]
        assert await store.asearch(("other",), query="zebra", filter={"title": "something else"}) == []
        assert await store.asearch(("kasloop",), query="indexed file") == []
        assert (await store.aget(("other", "app"), "doc")).value["title"] == "Quarterly zebra census"  # type: ignore[union-attr]
        store.close()


async def test_concurrent_adds_and_other_writers_share_the_connection(tmp_path: Path) -> None:
    """Each store batch is one unit on the connection: interleaved kasloop writes never split it."""
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        writes = [memory.add(f"Concurrent learning {i} about zebras.", kind="learning") for i in range(100)]
        others = [db.execute("INSERT INTO kasloop_events (thread_id, ts, step, kind, data) VALUES ('t', 0, ?, 'x', '{}')", (i,)) for i in range(100)]
        await asyncio.gather(*writes, *others)
        assert await memory.count() == 100 and len(await memory.search("zebras", limit=10)) == 10
        memory.close()
    conn = sqlite3.connect(tmp_path / "k.db")
    assert conn.execute("SELECT count(*) FROM kasloop_events").fetchone()[0] == 100
    assert conn.execute("SELECT count(*) FROM kasloop_memory_fts").fetchone()[0] == 100
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --------------------------------------------------------------------------- the tools


async def test_tools_without_a_database_use_an_in_process_memory(tmp_path: Path) -> None:
    tools = select_tools(["memory"])
    resources = ToolResources(home=tmp_path / "tools")
    ctx = ToolContext(workspace=tmp_path, thread_id="t1", resources=resources)
    first = await run_tool(tools["remember"], {"text": "Retry the flaky upload twice."}, ctx)
    again = await run_tool(tools["remember"], {"text": "Retry the flaky upload twice."}, ctx)
    assert first.ok and "[learning" in first.output and "already known" not in first.output
    assert again.ok and "already known" in again.output
    found = await run_tool(tools["recall"], {"query": "flaky upload"}, ctx)
    assert found.ok and found.output.count("\n") == 0 and "Retry the flaky upload twice." in found.output
    missing = await run_tool(tools["recall"], {"query": "zebra"}, ctx)
    assert missing.ok and missing.output == "Nothing remembered matches `zebra`."
    bad = await run_tool(tools["recall"], {"query": "x", "limit": 11}, ctx)
    assert not bad.ok and bad.error_kind == "bad_args"
    wrong = await run_tool(tools["remember"], {"text": "x", "kind": "idea"}, ctx)
    assert not wrong.ok and wrong.error_kind == "bad_args"
    await resources.aclose()
    assert tools["remember"].risk == "low" and tools["remember"].idempotent and tools["recall"].risk == "read"


async def test_recall_finds_a_learning_written_1000_cycles_earlier(tmp_path: Path, workspace: Path) -> None:
    """The issue's test: a real agent run, one learning, 1,000 more cycles of other memories, then recall."""
    cycles = 1000
    turns = [{"tool_calls": [call("remember", text="The staging database password rotates every Tuesday at 04:00 UTC.")]}]
    turns += [
        {"tool_calls": [call("remember", text=f"Cycle {i}: the staging queue had {i % 9} jobs; database healthy.", kind="note" if i % 2 else "learning")]}
        for i in range(cycles)
    ]
    turns += [{"tool_calls": [call("recall", query="when does the staging database password rotate?", limit=3)]}, {"content": "recalled"}]
    script = write_script(tmp_path / "plan.jsonl", turns)
    config = AgentConfig(autonomy=3, model=f"scripted:{script}", tools=["memory"], workspace=workspace, budgets=Budgets(max_steps=cycles + 10))
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("keep an eye on staging")
    assert result.status == "done" and result.output == "recalled", result  # low and read risks need no approval at level 3
    tool_events = [e for e in await agent.history(result.thread) if e["kind"] == "tool"]
    assert len(tool_events) == cycles + 2
    recall = tool_events[-1]
    assert recall["tool"] == "recall" and recall["ok"]
    lines = recall["output"].splitlines()
    assert len(lines) == 3 and "password rotates every Tuesday" in lines[0]
    # Shared by the database's threads: a new thread recalls it too, and the CLI's memory sees the same items.
    other = write_script(tmp_path / "other.jsonl", [{"tool_calls": [call("recall", query="password rotation", limit=1)]}, {"content": "ok"}])
    agent2 = Agent(AgentConfig(autonomy=3, model=f"scripted:{other}", tools=["memory"], workspace=workspace), home=tmp_path / ".kasloop")
    second = await agent2.run("another thread")
    [recalled] = [e for e in await agent2.history(second.thread) if e["kind"] == "tool"]
    assert "password rotates every Tuesday" in recalled["output"]
    async with open_database(agent.db_path) as db:
        memory = await LongTermMemory.open(db)
        assert await memory.count() == cycles + 1
        [item] = await memory.search("password rotates", limit=1)
        assert isinstance(item, MemoryItem) and item.source == f"thread {result.thread}"
        memory.close()


async def test_the_memory_namespace_setting_reaches_the_tools(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    model = script({"tool_calls": [call("remember", text="Only for the ops agent.", kind="note")]}, {"content": "ok"})
    config = AgentConfig(autonomy=4, model=model, tools=["memory"], workspace=workspace, tool_settings={"memory": {"namespace": "ops"}})
    agent = Agent(config, home=tmp_path / ".kasloop")
    assert (await agent.run("remember")).status == "done"
    async with open_database(agent.db_path) as db:
        ops, default = await LongTermMemory.open(db, "ops"), await LongTermMemory.open(db)
        assert [i.text for i in await ops.list()] == ["Only for the ops agent."] and await default.list() == []
        ops.close()
        default.close()


FAILING_EXPORT = """
import asyncio, resource, signal, sys
from kasloop.checkpoints import open_database
from kasloop.errors import KasloopError
from kasloop.memory.long_term import LongTermMemory

async def main() -> None:
    async with open_database(sys.argv[1]) as db:
        memory = await LongTermMemory.open(db)
        # From here on no file may grow past 64 KiB: the export (about 200 KiB) fails half-way.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        try:
            await memory.export(sys.argv[2])
        except KasloopError as exc:
            print(exc.message)
            sys.exit(3)

asyncio.run(main())
"""


async def test_a_failed_export_leaves_the_old_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        memory = await LongTermMemory.open(db)
        await memory.import_(_write_json(tmp_path / "many.json", [{"kind": "note", "text": f"Note {i}: " + "lorem ipsum " * 80} for i in range(200)]))
        memory.close()
    folder = tmp_path / "exports"
    folder.mkdir()
    target = folder / "memory.md"
    target.write_text("the previous export\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FAILING_EXPORT, str(tmp_path / "k.db"), str(target),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 3, (out, err)
    message = out.decode().strip()
    assert message.startswith(f"Cannot write `{target}`: File too large;") and "\n" not in message
    assert target.read_text() == "the previous export\n"
    assert [p.name for p in folder.iterdir()] == ["memory.md"], "the temporary file was removed"


def _write_json(path: Path, items: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"items": items}))
    return path
