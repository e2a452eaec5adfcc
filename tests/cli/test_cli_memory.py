"""``kasloop memory`` in real subprocesses: add, list, search, delete, export/import, namespaces and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CLIResult, call, db_fingerprint, write_script

Kasloop = Callable[..., CLIResult]


def one_line_error(result: CLIResult, code: int = 2) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Traceback" not in result.err, result
    return lines[0]


def test_add_list_search_delete(kasloop: Kasloop) -> None:
    added = kasloop("memory", "add", "Deploys need --force on Fridays.", "--kind", "learning", "--tag", "deploy", "--tag", "ops", "--json")
    assert added.code == 0, added
    item = added.json()
    assert item["kind"] == "learning" and item["tags"] == ["deploy", "ops"] and item["source"] == "cli"
    assert kasloop("memory", "add", "Buy milk").code == 0
    again = kasloop("memory", "add", "Deploys need --force on Fridays.", "--kind", "learning", "--json")
    assert again.json()["key"] == item["key"] and again.json()["created_at"] == item["created_at"]

    listed = kasloop("memory", "list", "--json")
    assert listed.code == 0 and [i["text"] for i in listed.json()] == ["Deploys need --force on Fridays.", "Buy milk"]
    assert [i["kind"] for i in kasloop("memory", "list", "--kind", "note", "--json").json()] == ["note"]
    assert len(kasloop("memory", "list", "--limit", "1", "--json").json()) == 1
    human = kasloop("memory", "list")
    assert human.code == 0 and item["key"] in human.out and "Buy milk" in human.out

    found = kasloop("memory", "search", "what about friday deploys?", "--json")
    assert found.code == 0 and [i["key"] for i in found.json()] == [item["key"]] and found.json()[0]["score"] > 0
    assert kasloop("memory", "search", "milk", "--kind", "learning", "--json").json() == []
    assert "Nothing matches." in kasloop("memory", "search", "the of and").out

    deleted = kasloop("memory", "delete", item["key"])
    assert deleted.code == 0 and item["key"] in deleted.out
    assert [i["text"] for i in kasloop("memory", "list", "--json").json()] == ["Buy milk"]


@pytest.mark.parametrize("name", ["memory.json", "memory.md"])
def test_export_and_import_round_trip_between_homes(tmp_path: Path, kasloop: Kasloop, name: str) -> None:
    kasloop("memory", "add", "First line\nsecond line", "--kind", "goal", "--tag", "t")
    kasloop("memory", "add", "A learning.", "--kind", "learning")
    exported = kasloop("memory", "export", str(tmp_path / name))
    assert exported.code == 0 and "Exported 2 items" in exported.out, exported
    before = kasloop("memory", "list", "--json").json()
    other = tmp_path / "other"
    other.mkdir()
    imported = kasloop("memory", "import", str(tmp_path / name), "--home", str(other / ".kasloop"))
    assert imported.code == 0 and "Imported 2 items" in imported.out, imported
    assert kasloop("memory", "list", "--json", "--home", str(other / ".kasloop")).json() == before


def test_explicit_format_overrides_the_suffix(tmp_path: Path, kasloop: Kasloop) -> None:
    kasloop("memory", "add", "Something to keep.")
    assert kasloop("memory", "export", str(tmp_path / "memory.txt"), "--format", "markdown").code == 0
    assert (tmp_path / "memory.txt").read_text().startswith("# kasloop memory")
    other = tmp_path / "other" / ".kasloop"
    assert kasloop("memory", "import", str(tmp_path / "memory.txt"), "--format", "markdown", "--home", str(other)).code == 0
    assert [i["text"] for i in kasloop("memory", "list", "--json", "--home", str(other)).json()] == ["Something to keep."]


def test_errors_are_one_line_and_change_nothing(tmp_path: Path, kasloop: Kasloop) -> None:
    kasloop("memory", "add", "Keep me.")
    db = tmp_path / ".kasloop" / "kasloop.db"
    before = db_fingerprint(db)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"kind": "note", "text": "fine"}, {"kind": "idea", "text": "x"}]))
    assert "entry 2" in one_line_error(kasloop("memory", "import", str(bad)))
    assert "--kind `idea`" in one_line_error(kasloop("memory", "add", "x", "--kind", "idea"))
    assert "--limit" in one_line_error(kasloop("memory", "list", "--limit", "0"))
    assert "text" in one_line_error(kasloop("memory", "add", "   "))
    assert "no memory item" in one_line_error(kasloop("memory", "delete", "0123456789abcdef")).lower()
    assert "--format" in one_line_error(kasloop("memory", "export", str(tmp_path / "memory.txt")))
    assert not (tmp_path / "memory.txt").exists()
    assert db_fingerprint(db) == before


def test_the_namespace_comes_from_kasloop_toml(tmp_path: Path, workspace: Path, kasloop: Kasloop) -> None:
    """The CLI and the agent's tools read the same memory: tool_settings.memory.namespace."""
    (tmp_path / "kasloop.toml").write_text('[tool_settings.memory]\nnamespace = "ops"\n')
    script = write_script(tmp_path / "plan.jsonl", [{"tool_calls": [call("remember", text="Rotate the ops keys monthly.")]}, {"content": "ok"}])
    run = kasloop("run", "remember", "--model", f"scripted:{script}", "--tools", "memory", "--workspace", str(workspace), "--autonomy", "3", "--json")
    assert run.code == 0, run
    assert [i["text"] for i in kasloop("memory", "search", "ops keys", "--json").json()] == ["Rotate the ops keys monthly."]
    (tmp_path / "kasloop.toml").write_text("")
    assert kasloop("memory", "list", "--json").json() == []  # the default namespace is another memory
    (tmp_path / "kasloop.toml").write_text('[tool_settings.memory]\nnamespace = "a.b"\n')
    assert "tool_settings.memory.namespace" in one_line_error(kasloop("memory", "list"))
