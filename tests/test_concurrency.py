"""Many threads in one database, from one process and from several: no lock errors (SQLite: WAL + busy timeout; PostgreSQL too)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from kasloop import Agent, AgentConfig
from kasloop.checkpoints.database import is_postgres_url
from conftest import call, query

THREADS = 200
WRITES_PER_PROCESS = 300

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from kasloop.checkpoints import Inbox, open_database

    async def main(db_path, name, count):
        async with open_database(db_path) as db:
            inbox = Inbox(db)
            for n in range(count):
                await inbox.put(f"outside-{name}", "test", f"message {n}")

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_200_concurrent_threads_and_2_writer_processes_share_one_database(
    tmp_path: Path, workspace: Path, script: Callable[..., str], db_url: str
) -> None:
    model = script({"tool_calls": [call("files_list")]}, {"content": "listed"})
    config = AgentConfig(autonomy=4, model=model, tools=["files_list"], workspace=workspace)
    agent = Agent(config, home=tmp_path / ".kasloop", db=db_url)
    await agent.run("warm up: create the database")  # the schema exists before the crowd arrives
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(agent.db_path), str(n), str(WRITES_PER_PROCESS)], stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    results = await asyncio.gather(*(agent.run(f"list the files ({n})", thread_id=f"c-{n}") for n in range(THREADS)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], errors[:3]
    assert {r.status for r in results if not isinstance(r, BaseException)} == {"done"}
    for writer in writers:
        _, stderr = writer.communicate(timeout=300)
        assert writer.returncode == 0, stderr
    if not is_postgres_url(db_url):
        assert query(db_url, "PRAGMA integrity_check") == [("ok",)]
    assert query(db_url, "SELECT count(*) FROM kasloop_inbox WHERE thread_id LIKE 'outside-%'") == [(2 * WRITES_PER_PROCESS,)]
    done = query(db_url, "SELECT count(*) FROM kasloop_threads WHERE thread_id LIKE 'c-%' AND status = 'done'")
    assert done == [(THREADS,)]
    tools = query(db_url, "SELECT count(*) FROM kasloop_events WHERE kind = 'tool' AND thread_id LIKE 'c-%'")
    assert tools == [(THREADS,)], "each thread's one tool call ran exactly once"
