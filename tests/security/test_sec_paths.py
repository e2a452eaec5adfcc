"""kasloop's own state is never a tool's target (issue 14, items 1, 2 and the file-name part of 9).

Reproductions, through the real CLI with a scripted model and the default workspace (the run folder,
which holds ``kasloop.toml`` and ``.kasloop/``):

1. ``files_write kasloop.toml`` at level 3 was a silent low-risk call: the next run started at level 4.
2. ``files_write .kasloop/kasloop.db "x"`` wiped every thread, approval, ledger row and event.
9. a workspace file whose name is not UTF-8 made ``files_list`` crash the checkpoint, on every resume.

Every case has a positive control: the same call on an unprotected path runs and changes the file (or
the same check without protection would let it through), so a passing refusal is not a broken harness.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tool_args import args_for as shared_args_for
from pydantic import BaseModel, Field

from kasloop import Agent, AgentConfig
from kasloop.safety.protected import ProtectedPaths
from kasloop.tools.base import Tool, ToolContext, ToolResources, ToolResult, arg_meta, check_protected, run_tool
from kasloop.tools.registry import all_tools
from conftest import CLIResult, call, cli_runner, state_of

TOOLS = all_tools()
PROTECTED_WORDS = "kasloop's own state"
BASE_TOML = 'autonomy = 3\ntools = ["files"]\n[tool_settings.files]\noverwrite_unread = true\n'
"""The controls replace existing files they never read: the overwrite check is not what these tests are about."""
ATTACK_TOML = 'autonomy = 4\ntools = ["files", "shell"]\n'


# --------------------------------------------------------------------------- helpers


def make_db(path: Path) -> None:
    """A real SQLite database with one row (what kasloop.db looks like to a file tool)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS kasloop_threads (thread_id TEXT PRIMARY KEY)")
    conn.execute("INSERT OR IGNORE INTO kasloop_threads VALUES ('precious')")
    conn.commit()
    conn.close()


def snapshot(*paths: Path) -> dict[str, Any]:
    """Bytes and mtime of every file under ``paths`` (a file or a folder): equal snapshots, nothing touched."""
    found: dict[str, Any] = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            stat = file.stat()
            found[str(file)] = (file.read_bytes(), stat.st_mtime_ns, stat.st_ino)
        found[f"{root} exists"] = root.exists()
    return found


class Layout:
    """The default layout: the run folder is the workspace and holds kasloop.toml and .kasloop/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / ".kasloop"
        self.db = self.home / "kasloop.db"
        self.config = root / "kasloop.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(BASE_TOML)
        make_db(self.db)
        (root / "free.txt").write_text("free\n")
        (root / "freedir").mkdir()
        self.agent = Agent(AgentConfig(workspace=root, tools=["files"]), home=self.home, config_file=self.config)
        self.ctx = ToolContext(workspace=root, resources=ToolResources(home=self.home / "tools", protected=self.agent.protected))

    def state(self) -> dict[str, Any]:
        return snapshot(self.db, self.config, self.home)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "run")


def denied_as_protected(result: ToolResult) -> bool:
    return (not result.ok) and result.error_kind == "denied" and result.metadata.get("protected") is True and PROTECTED_WORDS in result.output


SAMPLES: dict[str, Any] = {
    "content": "x", "command": "true", "to": "someone@example.org", "subject": "s", "body": "b",
    "source": "free.txt", "destination": "freedir/moved.txt", "path": "free.txt", "url": "http://127.0.0.1:9/",
}


def args_for(tool: Tool, arg: str, value: str) -> dict[str, Any]:
    return shared_args_for(tool, arg, value, SAMPLES)


PATH_PAIRS = [(tool.name, arg) for tool in TOOLS.values() for arg in tool.path_args]


# --------------------------------------------------------------------------- every tool, every path argument


def test_every_family_with_paths_declares_them() -> None:
    """A guard on the enumeration below: removing a declaration must not silently shrink it."""
    expected = {
        ("files_read", "path"), ("files_write", "path"), ("files_append", "path"), ("files_list", "path"),
        ("files_search", "path"), ("files_move", "source"), ("files_move", "destination"), ("files_delete", "path"),
        ("shell_run", "cwd"), ("process_start", "cwd"), ("browser_screenshot", "path"), ("email_send", "attachments"),
    }
    assert expected <= set(PATH_PAIRS)
    assert {t.name for t in TOOLS.values() if t.url_args} >= {"http_get", "http_post", "http_put", "http_delete", "webhook_post", "browser_open"}


@pytest.mark.parametrize("target", ["db", "db_absolute", "config", "home", "home_file"])
@pytest.mark.parametrize(("tool_name", "arg"), PATH_PAIRS)
async def test_every_path_argument_of_every_tool_refuses_kasloops_own_state(layout: Layout, tool_name: str, arg: str, target: str) -> None:
    tool = TOOLS[tool_name]
    value = {
        "db": ".kasloop/kasloop.db", "db_absolute": str(layout.db), "config": "kasloop.toml",
        "home": ".kasloop", "home_file": ".kasloop/tools/state.json",
    }[target]
    before = layout.state()
    result = await run_tool(tool, args_for(tool, arg, value), layout.ctx)
    assert denied_as_protected(result), result
    assert layout.state() == before, "a refused call changed kasloop's files"
    # Positive control: the same call on an unprotected path is not refused by the protection.
    control = args_for(tool, arg, "freedir" if arg == "cwd" else "free.txt")
    assert check_protected(tool, control, layout.ctx) is None
    if tool.family == "files":
        assert not denied_as_protected(await run_tool(tool, control, layout.ctx))


@pytest.mark.parametrize(("tool_name", "arg"), [p for p in PATH_PAIRS if TOOLS[p[0]].family == "files" and p[0] != "files_list" and p[0] != "files_search"])
async def test_without_protection_the_same_call_would_touch_the_database(layout: Layout, tool_name: str, arg: str) -> None:
    """Positive control of the enumeration: the files tools really reach the database when nothing protects it."""
    tool = TOOLS[tool_name]
    args = args_for(tool, arg, ".kasloop/kasloop.db")
    if tool_name == "files_move" and arg == "destination":
        args["overwrite"] = True
    bare = ToolContext(workspace=layout.root, resources=ToolResources(protected=ProtectedPaths()))
    before = layout.state()
    result = await run_tool(tool, args, bare)
    assert result.ok, result
    if tool_name == "files_read":
        assert result.output.startswith("[binary file") or "SQLite" in result.output
    else:
        assert layout.state() != before


SUSPECT = re.compile(r"path|file|dir(?!ect)|folder|cwd|source|destination|url|(?<![a-z])uri(?![a-z])|host|attach|location", re.IGNORECASE)


def _stringish(prop: dict[str, Any]) -> bool:
    options = [prop, *prop.get("anyOf", [])]
    return any(o.get("type") == "string" or (o.get("type") == "array" and o.get("items", {}).get("type") == "string") for o in options)


def undeclared_pathlike(tool: Tool) -> list[str]:
    """Arguments whose name or description looks like a path, URL or host but that declare no kind."""
    props = tool.args_model.model_json_schema().get("properties", {})
    return [
        f"{tool.name}.{name}"
        for name, prop in props.items()
        if "kasloop" not in prop and _stringish(prop) and SUSPECT.search(f"{name} {prop.get('description', '')}")
    ]


def test_no_tool_has_an_undeclared_path_like_argument() -> None:
    from kasloop.graphs.collaboration import blackboard_tools

    tools = [*TOOLS.values(), *blackboard_tools()]
    assert [a for t in tools for a in undeclared_pathlike(t)] == []


def test_the_undeclared_check_catches_a_new_tool_that_forgets_to_declare() -> None:
    """Positive control: a tool added tomorrow with an undeclared ``output_file`` fails the check above."""

    class Forgot(BaseModel):
        output_file: str = Field(description="Where to save the report.")
        target_url: str = Field(description="Page to fetch.")
        note: str = Field(description="Free text.")

    class Declared(BaseModel):
        output_file: str = Field(description="Where to save the report.", json_schema_extra=arg_meta("path", acts_as="files_write"))
        target_url: str = Field(description="Page to fetch.", json_schema_extra=arg_meta("url"))

    async def noop(args: Any, ctx: ToolContext) -> str:
        return "ok"

    forgot = Tool(name="report_save", description="d", args_model=Forgot, func=noop, risk="low", idempotent=True)
    declared = Tool(name="report_save", description="d", args_model=Declared, func=noop, risk="low", idempotent=True)
    assert undeclared_pathlike(forgot) == ["report_save.output_file", "report_save.target_url"]
    assert undeclared_pathlike(declared) == []
    assert declared.path_args == ("output_file",) and declared.url_args == ("target_url",)
    assert declared.path_acts_as == {"output_file": "files_write"}


async def test_a_user_tool_declaring_nothing_still_has_its_path_named_argument_checked(layout: Layout) -> None:
    class Legacy(BaseModel):
        path: str
        text: str = ""

    async def write(args: Any, ctx: ToolContext) -> str:
        (Path(ctx.workspace) / args.path).write_text(args.text)
        return "written"

    tool = Tool(name="legacy_write", description="d", args_model=Legacy, func=write, risk="low", idempotent=True)
    assert tool.path_args == ("path",) and not tool.declares_args
    before = layout.state()
    assert denied_as_protected(await run_tool(tool, {"path": "kasloop.toml", "text": ATTACK_TOML}, layout.ctx))
    assert layout.state() == before
    assert (await run_tool(tool, {"path": "free.txt", "text": "changed"}, layout.ctx)).ok  # control
    assert (layout.root / "free.txt").read_text() == "changed"


def test_declarations_never_reach_the_model() -> None:
    from kasloop.tools.base import openai_schema

    assert "kasloop" not in json.dumps([openai_schema(t) for t in TOOLS.values()])
    assert "kasloop" in json.dumps(TOOLS["files_move"].args_model.model_json_schema())  # control: they are in the schema


# --------------------------------------------------------------------------- spellings (in process)


@pytest.mark.parametrize(
    ("tool_name", "args", "victim"),
    [
        ("files_write", {"path": "./kasloop.toml", "content": ATTACK_TOML}, "config"),
        ("files_write", {"path": "freedir/../kasloop.toml", "content": ATTACK_TOML}, "config"),
        ("files_write", {"path": "KASLOOP.TOML", "content": ATTACK_TOML}, "config"),
        ("files_write", {"path": ".KASLOOP/kasloop.db", "content": "x"}, "db"),
        ("files_write", {"path": ".kasloop/kasloop.db-wal", "content": "x"}, "db"),
        ("files_append", {"path": "dotlink/kasloop.db", "content": "x"}, "db"),
        ("files_append", {"path": "hard.db", "content": "x"}, "db"),
        ("files_read", {"path": "hard.db"}, "db"),
        ("files_append", {"path": "hard.toml", "content": ATTACK_TOML}, "config"),
        ("files_delete", {"path": "dotlink/kasloop.db"}, "db"),
        ("files_move", {"source": ".kasloop/kasloop.db", "destination": "stolen.db"}, "db"),
        ("files_move", {"source": "free.txt", "destination": "dotlink/kasloop.db", "overwrite": True}, "db"),
        ("files_move", {"source": ".kasloop", "destination": "freedir"}, "home"),
        ("files_list", {"path": "dotlink"}, "home"),
        ("files_search", {"path": ".kasloop", "text": "precious"}, "home"),
    ],
)
async def test_every_spelling_of_a_protected_path_is_refused(layout: Layout, tool_name: str, args: dict[str, Any], victim: str) -> None:
    (layout.root / "dotlink").symlink_to(layout.home)
    os.link(layout.db, layout.root / "hard.db")
    os.link(layout.config, layout.root / "hard.toml")
    before = layout.state()
    result = await run_tool(TOOLS[tool_name], args, layout.ctx)
    assert denied_as_protected(result), result
    assert layout.state() == before
    assert not (layout.root / "stolen.db").exists() and "precious" not in result.output
    if tool_name == "files_write" and args["path"] == "KASLOOP.TOML":
        assert not (layout.root / "KASLOOP.TOML").exists()


async def test_hard_link_control_an_unprotected_hard_link_is_appended_to(layout: Layout) -> None:
    """Positive control for the hard-link cases: appending through a hard link does change the linked file."""
    os.link(layout.root / "free.txt", layout.root / "hard.txt")
    result = await run_tool(TOOLS["files_append"], {"path": "hard.txt", "content": "more\n"}, layout.ctx)
    assert result.ok and (layout.root / "free.txt").read_text() == "free\nmore\n"


async def test_a_folder_holding_kasloops_home_is_neither_moved_nor_deleted(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    proj = Layout(outer / "proj")
    (outer / "other").mkdir()
    (outer / "other" / "a.txt").write_text("a")
    ctx = ToolContext(workspace=outer, resources=proj.ctx.resources)
    before = proj.state()
    for name, args in [("files_move", {"source": "proj", "destination": "moved"}), ("files_delete", {"path": "proj"}),
                       ("files_move", {"source": "proj/..", "destination": "moved"})]:
        assert denied_as_protected(await run_tool(TOOLS[name], args, ctx)), (name, args)
    assert proj.state() == before and not (outer / "moved").exists()
    moved = await run_tool(TOOLS["files_move"], {"source": "other", "destination": "moved"}, ctx)  # control
    assert moved.ok and (outer / "moved" / "a.txt").read_text() == "a"


async def test_a_move_into_the_workspace_root_works_but_never_lands_on_the_config(layout: Layout) -> None:
    """The root of the default workspace holds .kasloop/: moving a file into it is fine, landing on kasloop.toml is not."""
    (layout.root / "sub").mkdir()
    (layout.root / "sub" / "kasloop.toml").write_text(ATTACK_TOML)
    (layout.root / "sub" / "notes.txt").write_text("n")
    before = layout.state()
    landed = await run_tool(TOOLS["files_move"], {"source": "sub/kasloop.toml", "destination": ".", "overwrite": True}, layout.ctx)
    assert denied_as_protected(landed), landed
    assert layout.state() == before and (layout.root / "sub" / "kasloop.toml").exists()
    moved = await run_tool(TOOLS["files_move"], {"source": "sub/notes.txt", "destination": "."}, layout.ctx)  # control
    assert moved.ok and (layout.root / "notes.txt").read_text() == "n", moved


async def test_listing_and_searching_the_default_workspace_hide_kasloops_state(layout: Layout) -> None:
    (layout.root / "notes.md").write_text("autonomy notes\n")
    (layout.root / "hard.db").hardlink_to(layout.db)
    (layout.root / "dotlink").symlink_to(layout.home)
    listed = await run_tool(TOOLS["files_list"], {"path": "."}, layout.ctx)
    assert listed.ok
    names = [line.split(" ")[0] for line in listed.output.splitlines()]
    assert names == ["free.txt", "freedir/", "notes.md"], listed.output
    found = await run_tool(TOOLS["files_search"], {"text": "autonomy"}, layout.ctx)
    assert found.ok and found.output == "notes.md:1: autonomy notes", found.output
    every = await run_tool(TOOLS["files_search"], {"pattern": "*"}, layout.ctx)
    assert sorted(every.output.splitlines()) == ["free.txt", "notes.md"], every.output
    # Control: without protection the same listing shows kasloop's files (the filter is what hides them).
    bare = ToolContext(workspace=layout.root, resources=ToolResources(protected=ProtectedPaths()))
    shown = (await run_tool(TOOLS["files_list"], {"path": "."}, bare)).output
    assert ".kasloop/" in shown and "kasloop.toml" in shown and "hard.db" in shown
    assert "autonomy = 3" in (await run_tool(TOOLS["files_search"], {"text": "autonomy"}, bare)).output


# --------------------------------------------------------------------------- non-UTF-8 file names


async def test_a_file_name_that_is_not_utf8_is_listed_escaped_and_the_run_finishes(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    os.close(os.open(os.path.join(os.fsencode(workspace), b"caf\xe9-\xff.txt"), os.O_CREAT | os.O_WRONLY, 0o644))
    (workspace / "plain.txt").write_text("hello")
    [raw] = [n for n in os.listdir(workspace) if n.startswith("caf")]
    with pytest.raises(UnicodeEncodeError):  # control: the raw name is not storable as UTF-8 text
        json.dumps(raw, ensure_ascii=False).encode()
    model = script(
        {"content": "", "tool_calls": [call("files_list", path=".")]},
        {"content": "", "tool_calls": [call("files_search", pattern="*.txt")]},
        {"content": "listed"},
    )
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("list the files", thread_id="names")
    assert result.status == "done" and result.output == "listed"
    tools = [e for e in await agent.history("names") if e["kind"] == "tool"]
    assert [e["ok"] for e in tools] == [True, True]
    assert "caf\\xe9-\\xff.txt (0 bytes)" in tools[0]["output"] and "plain.txt (5 bytes)" in tools[0]["output"]
    assert sorted(tools[1]["output"].splitlines()) == ["caf\\xe9-\\xff.txt", "plain.txt"]
    values = await state_of(agent, "names")
    json.dumps([m.content for m in values["messages"]], ensure_ascii=False).encode()  # the checkpoint holds storable text
    again = await agent.resume("names")
    assert again.status == "done"


# --------------------------------------------------------------------------- the reproductions, through the CLI


def project(tmp_path: Path, toml: str = BASE_TOML) -> tuple[Path, Callable[..., CLIResult]]:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "kasloop.toml").write_text(toml)
    (folder / "victim.txt").write_text("keep me\n")
    return folder, cli_runner(folder)


def tool_events(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        return [json.loads(d) for (d,) in conn.execute("SELECT data FROM kasloop_events WHERE kind = 'tool' ORDER BY id")]
    finally:
        conn.close()


def threads(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return sorted(r[0] for r in conn.execute("SELECT thread_id FROM kasloop_threads"))
    finally:
        conn.close()


def test_repro_1_the_model_cannot_rewrite_kasloop_toml_and_the_next_run_is_still_level_3(tmp_path: Path, script: Callable[..., str]) -> None:
    folder, kasloop = project(tmp_path)
    attack = script(
        {"content": "", "tool_calls": [call("files_write", path="kasloop.toml", content=ATTACK_TOML)]},
        {"content": "", "tool_calls": [call("files_write", path="evil.toml", content=ATTACK_TOML)]},  # control: same call elsewhere
        {"content": "done"},
    )
    ran = kasloop("run", "--model", attack, "raise your level")
    assert ran.code == 0, ran
    assert (folder / "kasloop.toml").read_text() == BASE_TOML
    assert (folder / "evil.toml").read_text() == ATTACK_TOML, "control: the same write on another path ran"
    events = tool_events(folder / ".kasloop" / "kasloop.db")
    assert events[0]["error_kind"] == "denied" and PROTECTED_WORDS in events[0]["output"] and events[1]["ok"]

    delete = {"content": "", "tool_calls": [call("files_delete", path="victim.txt")]}
    nxt = kasloop("run", "--model", script(delete, {"content": "deleted"}), "delete the victim")
    assert nxt.code == 10, nxt  # level 3: a high-risk call waits for a person
    assert (folder / "victim.txt").exists()
    # Control: the attacker's config would have run it without asking.
    raised = kasloop("run", "--config", "evil.toml", "--model", script(delete, {"content": "deleted"}), "delete the victim")
    assert raised.code == 0 and not (folder / "victim.txt").exists(), raised


def test_repro_2_the_model_cannot_destroy_the_database(tmp_path: Path, script: Callable[..., str]) -> None:
    folder, kasloop = project(tmp_path)
    first = kasloop("run", "--thread", "first", "--model", script({"content": "hello"}), "say hello")
    assert first.code == 0, first
    db = folder / ".kasloop" / "kasloop.db"
    (folder / "copy.db").write_bytes(db.read_bytes())
    attack = script(
        {"content": "", "tool_calls": [call("files_write", path=".kasloop/kasloop.db", content="x")]},
        {"content": "", "tool_calls": [call("files_write", path="copy.db", content="x")]},  # control
        {"content": "done"},
    )
    ran = kasloop("run", "--thread", "attack", "--model", attack, "wipe the database")
    assert ran.code == 0, ran
    assert threads(db) == ["attack", "first"]
    assert (folder / "copy.db").read_text() == "x", "control: the same write wiped the copy"
    assert PROTECTED_WORDS in tool_events(db)[0]["output"]
    status = kasloop("status", "--json")
    assert status.code == 0 and "first" in status.out


SPELLINGS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    # id, tool, attack args, control args (the same spelling on an unprotected file)
    ("dot-slash", "files_write", {"path": "./kasloop.toml", "content": ATTACK_TOML}, {"path": "./other.toml", "content": ATTACK_TOML}),
    ("dotdot", "files_write", {"path": "sub/../kasloop.toml", "content": ATTACK_TOML}, {"path": "sub/../other.toml", "content": ATTACK_TOML}),
    ("absolute", "files_write", {"path": "{root}/kasloop.toml", "content": ATTACK_TOML}, {"path": "{root}/other.toml", "content": ATTACK_TOML}),
    ("upper-case", "files_write", {"path": "KASLOOP.TOML", "content": ATTACK_TOML}, {"path": "OTHER.TOML", "content": ATTACK_TOML}),
    ("symlink", "files_append", {"path": "dotlink/kasloop.db", "content": "x"}, {"path": "sublink/other.toml", "content": "x"}),
    ("hard-link-db", "files_append", {"path": "hard.db", "content": "x"}, {"path": "hard-other.toml", "content": "x"}),
    ("hard-link-config", "files_append", {"path": "hard.toml", "content": ATTACK_TOML}, {"path": "hard-other.toml", "content": "x"}),
    ("move-db-out", "files_move", {"source": ".kasloop/kasloop.db", "destination": "stolen.db"}, {"source": "other.toml", "destination": "moved.toml"}),
    ("move-db-absolute", "files_move", {"source": "{root}/.kasloop/kasloop.db", "destination": "stolen.db"}, {"source": "{root}/other.toml", "destination": "moved.toml"}),
    ("move-onto-config", "files_move", {"source": "other.toml", "destination": "kasloop.toml", "overwrite": True}, {"source": "other.toml", "destination": "moved.toml", "overwrite": True}),
    ("delete-db", "files_delete", {"path": ".kasloop/kasloop.db"}, {"path": "other.toml"}),
    ("read-db", "files_read", {"path": "dotlink/kasloop.db"}, {"path": "sublink/other.toml"}),
]


@pytest.mark.parametrize(("tool_name", "attack", "control"), [s[1:] for s in SPELLINGS], ids=[s[0] for s in SPELLINGS])
def test_repro_every_spelling_through_the_cli(tmp_path: Path, script: Callable[..., str], tool_name: str, attack: dict[str, Any], control: dict[str, Any]) -> None:
    folder, kasloop = project(tmp_path)
    assert kasloop("run", "--thread", "first", "--model", script({"content": "hello"}), "say hello").code == 0
    db = folder / ".kasloop" / "kasloop.db"
    (folder / "sub").mkdir()
    (folder / "other.toml").write_text("other\n")
    (folder / "dotlink").symlink_to(folder / ".kasloop")
    (folder / "sublink").symlink_to(folder)
    os.link(db, folder / "hard.db")
    os.link(folder / "kasloop.toml", folder / "hard.toml")
    os.link(folder / "other.toml", folder / "hard-other.toml")
    fill = lambda args: {k: v.format(root=folder) if isinstance(v, str) else v for k, v in args.items()}  # noqa: E731
    before_config, before_threads = (folder / "kasloop.toml").read_bytes(), threads(db)
    other_before = snapshot(folder / "other.toml", folder / "moved.toml")
    ran = kasloop("run", "--thread", "attack", "--autonomy", "4", "--model", script(
        {"content": "", "tool_calls": [call(tool_name, **fill(attack))]},
        {"content": "", "tool_calls": [call(tool_name, **fill(control))]},
        {"content": "done"},
    ), "attack kasloop's files")
    assert ran.code == 0, ran
    events = tool_events(db)
    assert events[0]["error_kind"] == "denied" and PROTECTED_WORDS in events[0]["output"], events[0]
    assert (folder / "kasloop.toml").read_bytes() == before_config
    assert threads(db) == sorted({*before_threads, "attack"})
    assert not (folder / "stolen.db").exists() and not (folder / "KASLOOP.TOML").exists()
    # Control: the same call on an unprotected file ran (and, except a read, changed something).
    assert events[1]["ok"], events[1]
    if tool_name != "files_read":
        assert snapshot(folder / "other.toml", folder / "moved.toml") != other_before or (folder / "OTHER.TOML").exists()


def test_repro_moving_or_deleting_the_folder_that_holds_kasloop_is_refused(tmp_path: Path, script: Callable[..., str]) -> None:
    outer = tmp_path / "outer"
    folder = outer / "proj"
    folder.mkdir(parents=True)
    (folder / "kasloop.toml").write_text(BASE_TOML)
    (outer / "other").mkdir()
    (outer / "other" / "a.txt").write_text("a")
    kasloop = cli_runner(folder)
    ran = kasloop("run", "--workspace", "..", "--autonomy", "4", "--model", script(
        {"content": "", "tool_calls": [call("files_move", source="proj", destination="moved")]},
        {"content": "", "tool_calls": [call("files_delete", path="proj")]},
        {"content": "", "tool_calls": [call("files_move", source="other", destination="moved")]},  # control
        {"content": "done"},
    ), "move the project away")
    assert ran.code == 0, ran
    events = tool_events(folder / ".kasloop" / "kasloop.db")
    assert [e["error_kind"] for e in events] == ["denied", "denied", None], events
    assert all(PROTECTED_WORDS in e["output"] for e in events[:2])
    assert (folder / ".kasloop" / "kasloop.db").exists() and (folder / "kasloop.toml").read_text() == BASE_TOML
    assert (outer / "moved" / "a.txt").read_text() == "a"
