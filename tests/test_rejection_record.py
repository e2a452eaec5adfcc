"""A rejection's reason is part of the record: the event log, `kasloop history` and the HTML report."""

from __future__ import annotations

from pathlib import Path

from conftest import call, cli_runner, write_script


def test_a_rejection_reason_is_in_history_and_the_report(tmp_path: Path) -> None:
    runner = cli_runner(tmp_path)
    (tmp_path / "ws").mkdir()
    write_script(
        tmp_path / "s.jsonl",
        [{"tool_calls": [call("files_write", path="notes.md", content="draft")]}, {"content": "understood, stopping"}],
    )
    started = runner("run", "write notes", "--autonomy", "2", "--workspace", "ws", "--model", "scripted:s.jsonl", "--json")
    assert started.code == 10, started
    thread, approval = started.json()["thread"], started.json()["approvals"][0]["approval_id"]
    rejected = runner("reject", approval, "--reason", "wrong file: use report.md", "--json")
    assert rejected.code == 0, rejected
    events = runner("history", thread, "--json").json()
    decision = next(e for e in events if e["kind"] == "approval_decision")
    assert decision["decision"] == "reject" and decision["reason"] == "wrong file: use report.md"
    assert "wrong file: use report.md" in runner("history", thread).out
    report = runner("report", thread, "--out", str(tmp_path / "r.html"))
    assert report.code == 0, report
    assert "wrong file: use report.md" in (tmp_path / "r.html").read_text()
    assert not (tmp_path / "ws" / "notes.md").exists()
