"""The whole agent on PostgreSQL through the CLI: ``--db postgresql://...`` (or ``KASLOOP_DB``) everywhere.

Every command is its own process, as on a server: the run that stops for an
approval, the listing, the approval that resumes it, status, history, memory
and a daemon cycle all meet only in the database.
"""

from __future__ import annotations

from pathlib import Path

from conftest import call, cli_runner, query, write_script


def test_run_approve_status_history_and_memory_on_postgres(tmp_path: Path, workspace: Path, pg_url: str) -> None:
    (workspace / "old.log").write_text("stale")
    script = write_script(tmp_path / "s.jsonl", [
        {"content": "", "tool_calls": [call("files_write", path="notes.md", content="kept")]},
        {"content": "", "tool_calls": [call("files_delete", path="old.log")]},
        {"content": "Cleaned up."},
    ])  # fmt: skip
    cli = cli_runner(tmp_path)
    common = ["--model", f"scripted:{script}", "--workspace", str(workspace)]

    ran = cli("run", "Tidy the workspace", "--thread", "pg", "--autonomy", "3", *common, "--json", "--db", pg_url)
    assert ran.code == 10, ran
    [request] = ran.json()["approvals"]
    assert request["tool"] == "files_delete" and (workspace / "notes.md").read_text() == "kept"
    assert (workspace / "old.log").exists()
    assert query(pg_url, "SELECT status FROM kasloop_approvals") == [("pending",)]
    assert not (tmp_path / ".kasloop" / "kasloop.db").exists(), "nothing went to the SQLite default"

    env = {"KASLOOP_DB": pg_url}  # the variable instead of --db, as a server's unit file would set it
    listed = cli("approvals", "--json", env=env)
    assert [a["approval_id"] for a in listed.json()] == [request["approval_id"]]
    approved = cli("approve", request["approval_id"], "--json", env=env)
    assert approved.code == 0, approved
    assert approved.json()["status"] == "done" and approved.json()["output"] == "Cleaned up."
    assert not (workspace / "old.log").exists()

    status = cli("status", "pg", "--json", env=env).json()
    assert status["status"] == "done" and [g["outcome"] for g in status["goals"]] == ["done"]
    history = cli("history", "pg", "--json", env=env).json()
    assert [e["tool"] for e in history if e["kind"] == "tool"] == ["files_write", "files_delete"]
    assert [e["decision"] for e in history if e["kind"] == "approval_decision"] == ["approve"]

    assert cli("memory", "add", "Deploys need the staging database migrated first", "--kind", "learning", env=env).code == 0
    found = cli("memory", "search", "deploy staging", "--json", env=env)
    assert [i["text"] for i in found.json()] == ["Deploys need the staging database migrated first"]
    assert query(pg_url, "SELECT count(*) FROM store") == [(1,)], "long-term memory is LangGraph's Postgres store"

    wrong = cli("status", "--db", "postgresql://kasloop:secret@127.0.0.1:1/nowhere")
    assert wrong.code != 0 and "Cannot open the kasloop database" in wrong.err and "secret" not in wrong.err + wrong.out
    assert "Traceback" not in wrong.err


def test_a_daemon_cycle_on_postgres_reads_the_inbox_and_beats(tmp_path: Path, workspace: Path, pg_url: str) -> None:
    script = write_script(tmp_path / "s.jsonl", [
        {"content": "", "tool_calls": [call("files_write", path="a.txt", content="a")]},
        {"content": "first done"},
        {"content": "", "tool_calls": [call("files_write", path="b.txt", content="b")]},
        {"content": "second done"},
    ])  # fmt: skip
    cli = cli_runner(tmp_path)
    env = {"KASLOOP_DB": pg_url}
    common = ["--model", f"scripted:{script}", "--workspace", str(workspace), "--autonomy", "4"]
    assert cli("run", "write a.txt", "--thread", "d", *common, env=env).code == 0
    assert cli("tell", "d", "now write b.txt", env=env).code == 0
    cycle = cli("daemon", "--once", env=env)  # the thread keeps its own policy (model, workspace)
    assert cycle.code == 0, cycle
    assert (workspace / "b.txt").read_text() == "b"
    [(cycles, stopped)] = query(pg_url, "SELECT cycles, stopped_at IS NOT NULL FROM kasloop_daemon")
    assert cycles == 1 and stopped
    assert query(pg_url, "SELECT count(*) FROM kasloop_inbox WHERE taken_at IS NULL") == [(0,)], "read exactly once"
    status = cli("status", env=env)
    assert "daemon" in status.out.lower()


def test_a_thread_driven_from_another_machine_is_busy_here(tmp_path: Path, workspace: Path, pg_url: str) -> None:
    """Another machine's driver holds the thread's advisory lock: no file lock here can see it, the database does."""
    import psycopg

    from kasloop.checkpoints.postgres import advisory_key

    script = write_script(tmp_path / "s.jsonl", [{"content": "", "tool_calls": [call("files_write", path="a.txt", content="a")]},
                                                 {"content": "written"}])  # fmt: skip
    cli = cli_runner(tmp_path)
    common = ["--model", f"scripted:{script}", "--workspace", str(workspace), "--autonomy", "4", "--db", pg_url]
    with psycopg.connect(pg_url, autocommit=True) as elsewhere:
        elsewhere.execute("SELECT pg_advisory_lock(%s)", (advisory_key("thread:shared"),))
        busy = cli("run", "write a.txt", "--thread", "shared", *common)
        assert busy.code == 2 and "is being driven by another process" in busy.err, busy
        assert not (workspace / "a.txt").exists()
        assert query(pg_url, "SELECT count(*) FROM kasloop_threads") == [(0,)], "refused before its first write"
        assert query(pg_url, "SELECT count(*) FROM kasloop_events") == [(0,)]
    ran = cli("run", "write a.txt", "--thread", "shared", *common)  # the other session ended: the lock went with it
    assert ran.code == 0, ran
    assert (workspace / "a.txt").read_text() == "a"
    assert query(pg_url, "SELECT count(*) FROM kasloop_events WHERE kind = 'goal'") == [(1,)]
