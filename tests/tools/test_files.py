"""The ``files`` tool family and the tool contract it runs under (tools/files.py, tools/base.py).

Everything here touches real files under pytest's tmp_path: the workspace is
``tmp_path/"ws"`` and ``tmp_path/"outside"`` plays the rest of the machine.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult, openai_schema, run_tool, truncate
from kasloop.tools.files import FILES_TOOLS, MAX_FILE_BYTES, atomic_write, resolve_in_workspace
from kasloop.tools.registry import select_tools

TOOLS: dict[str, Tool] = {tool.name: tool for tool in FILES_TOOLS}
SECRET = "TOP-SECRET-OUTSIDE-THE-WORKSPACE"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the workspace, holding a secret file."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text(SECRET)
    return path


def ctx_for(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws)


async def call(ws: Path, name: str, **args: Any) -> ToolResult:
    return await run_tool(TOOLS[name], args, ctx_for(ws))


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (without following symlinks) → a description of it."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                found[rel] = "link->" + os.readlink(full)
            elif full.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = "file:" + full.read_bytes().hex()
    return found


# --------------------------------------------------------------------------- basic operations


async def test_write_then_read_round_trip_creates_parent_folders(ws: Path) -> None:
    wrote = await call(ws, "files_write", path="notes/day1/a.txt", content="héllo\nworld")
    assert wrote.ok and wrote.error_kind is None
    assert (ws / "notes" / "day1" / "a.txt").read_text() == "héllo\nworld"
    assert str(len("héllo\nworld".encode())) in wrote.output  # reports bytes, not characters
    read = await call(ws, "files_read", path="notes/day1/a.txt")
    assert read.ok and read.output == "héllo\nworld"


async def test_absolute_path_inside_the_workspace_and_dotdot_that_stays_inside_are_fine(ws: Path) -> None:
    assert (await call(ws, "files_write", path=str(ws / "abs.txt"), content="A")).ok
    assert (ws / "abs.txt").read_text() == "A"
    assert (await call(ws, "files_write", path="sub/../rel.txt", content="B")).ok
    assert (ws / "rel.txt").read_text() == "B"


async def test_append_creates_then_appends(ws: Path) -> None:
    first = await call(ws, "files_append", path="log.txt", content="one\n")
    second = await call(ws, "files_append", path="log.txt", content="two\n")
    assert first.ok and second.ok
    assert (ws / "log.txt").read_text() == "one\ntwo\n"


async def test_list_shows_files_with_sizes_and_folders_with_slash(ws: Path) -> None:
    (ws / "b.txt").write_text("12345")
    (ws / "a").mkdir()
    (ws / "a" / "inner.txt").write_text("x")
    listed = await run_tool(TOOLS["files_list"], {}, ctx_for(ws))  # path defaults to "."
    assert listed.ok
    assert listed.output.splitlines() == ["a/", "b.txt (5 bytes)"]
    inner = await call(ws, "files_list", path="a")
    assert inner.ok and inner.output.splitlines() == ["inner.txt (1 bytes)"]
    (ws / "empty").mkdir()
    assert (await call(ws, "files_list", path="empty")).output == "(empty folder)"


async def test_list_of_a_file_or_missing_folder_is_bad_args(ws: Path) -> None:
    (ws / "f.txt").write_text("x")
    for path in ("f.txt", "nope"):
        result = await call(ws, "files_list", path=path)
        assert not result.ok and result.error_kind == "bad_args", result


async def test_delete_removes_a_file_and_refuses_folders_and_missing_files(ws: Path) -> None:
    (ws / "old.txt").write_text("x")
    (ws / "keep").mkdir()
    (ws / "keep" / "k.txt").write_text("k")
    deleted = await call(ws, "files_delete", path="old.txt")
    assert deleted.ok and not (ws / "old.txt").exists()
    again = await call(ws, "files_delete", path="old.txt")
    assert not again.ok and again.error_kind == "bad_args"
    folder = await call(ws, "files_delete", path="keep")
    assert not folder.ok and folder.error_kind == "bad_args"
    assert (ws / "keep" / "k.txt").read_text() == "k"


async def test_read_of_missing_file_or_folder_is_bad_args(ws: Path) -> None:
    (ws / "d").mkdir()
    for path in ("missing.txt", "d"):
        result = await call(ws, "files_read", path=path)
        assert not result.ok and result.error_kind == "bad_args", result
        assert "files_list" in result.output  # tells the model what to do instead


async def test_write_to_a_folder_is_bad_args_and_keeps_the_folder(ws: Path) -> None:
    (ws / "d").mkdir()
    (ws / "d" / "x.txt").write_text("x")
    before = tree(ws)
    for name in ("files_write", "files_append"):
        result = await call(ws, name, path="d", content="oops")
        assert not result.ok and result.error_kind == "bad_args", result
    assert tree(ws) == before


# --------------------------------------------------------------------------- atomic writes


async def test_write_replaces_an_existing_file_atomically_and_leaves_no_temp_files(ws: Path) -> None:
    target = ws / "a.txt"
    target.write_text("old content")
    old_inode = target.stat().st_ino
    with open(target, "rb") as reader:  # a reader that opened the file before the write
        result = await call(ws, "files_write", path="a.txt", content="new content")
        assert result.ok
        # The old file was replaced by rename, not truncated in place: the open reader still sees it whole.
        assert reader.read() == b"old content"
    assert target.read_text() == "new content"
    assert target.stat().st_ino != old_inode
    assert sorted(p.name for p in ws.iterdir()) == ["a.txt"]


async def test_many_writes_leave_only_the_target(ws: Path) -> None:
    for i in range(20):
        assert (await call(ws, "files_write", path="sub/f.txt", content=f"v{i}")).ok
    assert (ws / "sub" / "f.txt").read_text() == "v19"
    assert tree(ws) == {"sub": "dir", "sub/f.txt": "file:" + b"v19".hex()}


def test_atomic_write_failing_because_parent_is_a_file_changes_nothing(ws: Path) -> None:
    (ws / "afile").write_text("old")
    before = tree(ws)
    with pytest.raises(OSError):
        atomic_write(ws / "afile" / "x.txt", b"new")
    assert (ws / "afile").read_text() == "old"
    assert tree(ws) == before


def test_atomic_write_failing_at_rename_removes_its_temp_file(ws: Path) -> None:
    # The temp file is written and fsynced, then os.replace onto a non-empty folder fails:
    # the cleanup path must remove the temp file and leave the target untouched.
    (ws / "target").mkdir()
    (ws / "target" / "inside.txt").write_text("old")
    before = tree(ws)
    with pytest.raises(OSError):
        atomic_write(ws / "target", b"new data")
    assert tree(ws) == before


def test_atomic_write_replaces_existing_bytes(ws: Path) -> None:
    target = ws / "data.bin"
    target.write_bytes(b"\x00" * 100)
    atomic_write(target, b"fresh")
    assert target.read_bytes() == b"fresh"
    assert [p.name for p in ws.iterdir()] == ["data.bin"]


async def test_failing_write_through_the_tool_keeps_old_content(ws: Path) -> None:
    (ws / "afile").write_text("old")
    (ws / "big.txt").write_text("previous")
    before = tree(ws)
    under_file = await call(ws, "files_write", path="afile/x.txt", content="new")
    assert not under_file.ok and under_file.error_kind is not None
    too_big = await call(ws, "files_write", path="big.txt", content="x" * (MAX_FILE_BYTES + 1))
    assert not too_big.ok and too_big.error_kind == "bad_args"
    assert str(MAX_FILE_BYTES) in too_big.output
    assert tree(ws) == before


# --------------------------------------------------------------------------- jail: attacks end in "denied" with no side effect


async def test_dotdot_write_is_denied(tmp_path: Path, ws: Path) -> None:
    result = await call(ws, "files_write", path="../escape.txt", content="pwned")
    assert not result.ok and result.error_kind == "denied", result
    assert not (tmp_path / "escape.txt").exists()
    assert tree(ws) == {}


async def test_dotdot_read_is_denied(ws: Path, outside: Path) -> None:
    result = await call(ws, "files_read", path="../outside/secret.txt")
    assert not result.ok and result.error_kind == "denied"
    assert SECRET not in result.output


async def test_absolute_path_outside_is_denied(ws: Path, outside: Path) -> None:
    target = outside / "abs.txt"
    for name, args in [
        ("files_write", {"path": str(target), "content": "pwned"}),
        ("files_append", {"path": str(target), "content": "pwned"}),
        ("files_read", {"path": str(outside / "secret.txt")}),
        ("files_list", {"path": str(outside)}),
        ("files_delete", {"path": str(outside / "secret.txt")}),
        ("files_read", {"path": "/etc/passwd"}),
    ]:
        result = await run_tool(TOOLS[name], args, ctx_for(ws))
        assert not result.ok and result.error_kind == "denied", (name, result)
        assert SECRET not in result.output and "root:" not in result.output
    assert not target.exists()
    assert (outside / "secret.txt").read_text() == SECRET
    assert tree(ws) == {}


async def test_writing_through_a_symlinked_folder_is_denied(ws: Path, outside: Path) -> None:
    (ws / "link").symlink_to(outside, target_is_directory=True)
    before_out = tree(outside)
    for name in ("files_write", "files_append"):
        result = await call(ws, name, path="link/pwn.txt", content="pwned")
        assert not result.ok and result.error_kind == "denied", (name, result)
    overwrite = await call(ws, "files_write", path="link/secret.txt", content="pwned")
    assert not overwrite.ok and overwrite.error_kind == "denied"
    listed = await call(ws, "files_list", path="link")
    assert not listed.ok and listed.error_kind == "denied"
    assert "secret.txt" not in listed.output
    nested = await call(ws, "files_write", path="link/deeper/x.txt", content="pwned")
    assert not nested.ok and nested.error_kind == "denied"
    assert tree(outside) == before_out
    assert tree(ws) == {"link": "link->" + str(outside)}


async def test_reading_a_symlinked_file_pointing_outside_is_denied(ws: Path, outside: Path) -> None:
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    result = await call(ws, "files_read", path="leak.txt")
    assert not result.ok and result.error_kind == "denied", result
    assert SECRET not in result.output


async def test_appending_through_a_symlink_to_outside_is_denied(ws: Path, outside: Path) -> None:
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    result = await call(ws, "files_append", path="leak.txt", content="pwned")
    assert not result.ok and result.error_kind == "denied", result
    assert (outside / "secret.txt").read_text() == SECRET


async def test_writing_a_symlinked_file_pointing_outside_is_denied(ws: Path, outside: Path) -> None:
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    result = await call(ws, "files_write", path="leak.txt", content="pwned")
    assert not result.ok and result.error_kind == "denied", result
    assert (outside / "secret.txt").read_text() == SECRET
    assert (ws / "leak.txt").is_symlink()


async def test_writing_a_dangling_symlink_pointing_outside_is_denied(ws: Path, outside: Path) -> None:
    (ws / "dangling.txt").symlink_to(outside / "created.txt")
    for name in ("files_write", "files_append"):
        result = await call(ws, name, path="dangling.txt", content="pwned")
        assert not result.ok and result.error_kind == "denied", (name, result)
    assert not (outside / "created.txt").exists()


async def test_deleting_through_a_symlink_to_outside_is_denied(ws: Path, outside: Path) -> None:
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    result = await call(ws, "files_delete", path="leak.txt")
    assert not result.ok and result.error_kind == "denied", result
    assert (outside / "secret.txt").read_text() == SECRET
    assert (ws / "leak.txt").is_symlink()


@pytest.mark.parametrize("path", [".", "", "./", "sub/..", "__ABS__"])
async def test_deleting_the_workspace_root_is_denied(ws: Path, path: str) -> None:
    (ws / "keep.txt").write_text("k")
    (ws / "sub").mkdir()
    before = tree(ws)
    result = await call(ws, "files_delete", path=str(ws) if path == "__ABS__" else path)
    assert not result.ok and result.error_kind == "denied", result
    assert tree(ws) == before


async def test_workspace_given_as_a_relative_or_symlinked_path_still_jails(tmp_path: Path, ws: Path, outside: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(ws, target_is_directory=True)
    ok = await run_tool(TOOLS["files_write"], {"path": "in.txt", "content": "fine"}, ToolContext(workspace=alias))
    assert ok.ok and (ws / "in.txt").read_text() == "fine"
    bad = await run_tool(TOOLS["files_write"], {"path": "../outside/x.txt", "content": "pwned"}, ToolContext(workspace=alias))
    assert not bad.ok and bad.error_kind == "denied"
    root = await run_tool(TOOLS["files_delete"], {"path": "."}, ToolContext(workspace=alias))
    assert not root.ok and root.error_kind == "denied"
    assert not (outside / "x.txt").exists() and (ws / "in.txt").exists()


async def test_nul_byte_in_path_is_bad_args(ws: Path) -> None:
    result = await call(ws, "files_write", path="a\x00b.txt", content="x")
    assert not result.ok and result.error_kind == "bad_args"
    assert tree(ws) == {}


def test_resolve_in_workspace_directly(ws: Path, outside: Path) -> None:
    assert resolve_in_workspace(ws, "a/b.txt") == ws.resolve() / "a" / "b.txt"
    assert resolve_in_workspace(ws, ".") == ws.resolve()
    for path in ("..", "../outside/secret.txt", str(outside), "a/../../x"):
        with pytest.raises(ToolFailure) as info:
            resolve_in_workspace(ws, path)
        assert info.value.kind == "denied"
        assert "outside the workspace" in info.value.message


# --------------------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("files_write", {"path": "a.txt", "content": 123}, "content"),
        ("files_write", {"content": "x"}, "path"),
        ("files_write", {"path": "a.txt"}, "content"),
        ("files_append", {"path": ["a.txt"], "content": "x"}, "path"),
        ("files_read", {}, "path"),
        ("files_read", {"path": None}, "path"),
        ("files_list", {"path": 5}, "path"),
        ("files_delete", {"path": {"nested": "x"}}, "path"),
    ],
)
async def test_wrong_argument_types_are_bad_args_naming_the_field(ws: Path, name: str, args: dict[str, Any], field: str) -> None:
    (ws / "a.txt").write_text("old")
    before = tree(ws)
    result = await run_tool(TOOLS[name], args, ctx_for(ws))
    assert not result.ok and result.error_kind == "bad_args", result
    assert f"`{name}`" in result.output
    # pydantic's per-field message, e.g. "content: Input should be a valid string" / "path: Field required"
    assert re.search(rf"\b{field}: (Input should be a valid string|Field required)", result.output), result.output
    assert tree(ws) == before


# --------------------------------------------------------------------------- what the model sees and how each tool is gated

EXPECTED_SCHEMA = {
    # name: (properties in order, required)
    "files_read": (["path"], {"path"}),
    "files_write": (["path", "content"], {"path", "content"}),
    "files_append": (["path", "content"], {"path", "content"}),
    "files_list": (["path"], set()),
    "files_delete": (["path"], {"path"}),
    "files_search": (["pattern", "text", "path"], set()),
    "files_move": (["source", "destination", "overwrite"], {"source", "destination"}),
}


@pytest.mark.parametrize("tool", FILES_TOOLS, ids=lambda t: t.name)
def test_schema_given_to_the_model_matches_the_args_model(tool: Tool) -> None:
    schema = openai_schema(tool)
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == tool.name and function["description"] == tool.description
    params = function["parameters"]
    fields = tool.args_model.model_fields
    assert params["type"] == "object"
    assert list(params["properties"]) == list(fields)
    assert set(params.get("required", [])) == {n for n, f in fields.items() if f.is_required()}
    expected_props, expected_required = EXPECTED_SCHEMA[tool.name]
    assert list(params["properties"]) == expected_props  # DESIGN §12: arguments in order of importance
    assert set(params.get("required", [])) == expected_required
    assert "title" not in params
    for prop in params["properties"].values():
        assert prop["type"] in ("string", "boolean") and prop["description"] and "title" not in prop
    # The schema validates exactly like the model: a call built from the schema's required fields passes.
    sample = {name: "x.txt" for name in params.get("required", [])}
    tool.args_model.model_validate(sample)


def test_list_path_defaults_to_dot_in_schema() -> None:
    params = openai_schema(TOOLS["files_list"])["function"]["parameters"]
    assert params["properties"]["path"]["default"] == "."


def test_files_family_names_risks_and_idempotency_are_as_designed() -> None:
    table = {tool.name: (tool.risk, tool.idempotent, tool.family) for tool in FILES_TOOLS}
    assert table == {
        "files_read": ("read", True, "files"),
        "files_write": ("low", True, "files"),
        "files_append": ("low", False, "files"),
        "files_list": ("read", True, "files"),
        "files_delete": ("high", True, "files"),
        "files_search": ("read", True, "files"),
        "files_move": ("low", False, "files"),
    }
    assert set(select_tools(["files"])) == set(table)
    assert set(select_tools(["files_read"])) == {"files_read"}


def test_tool_rejects_nonpositive_timeout_and_tiny_output_limit() -> None:
    async def noop(args: BaseModel, ctx: ToolContext) -> str:
        return ""

    with pytest.raises(ValueError, match="timeout"):
        Tool(name="t_x", description="d", args_model=NoArgs, func=noop, risk="read", idempotent=True, timeout=0)
    with pytest.raises(ValueError, match="output_limit"):
        Tool(name="t_x", description="d", args_model=NoArgs, func=noop, risk="read", idempotent=True, output_limit=99)


# --------------------------------------------------------------------------- output truncation


def test_truncate_keeps_head_2000_and_tail_1000_and_says_how_much_was_cut() -> None:
    head, middle, tail = "H" * 2000, "M" * 7000, "T" * 1000
    text = head + middle + tail
    out = truncate(text, 4000)
    assert out.startswith(head) and out[2000] != "H"
    assert out.endswith(tail) and out[-1001] != "T"
    assert "M" not in out
    marker = out[2000:-1000]
    assert re.search(r"\b7000\b", marker) and "cut" in marker, marker
    assert len(out) < len(text)


def test_truncate_default_limit_is_4000_and_short_text_is_untouched() -> None:
    exact = "".join(chr(97 + i % 26) for i in range(4000))
    assert truncate(exact) == exact
    longer = exact + "Z"
    out = truncate(longer)
    assert out != longer
    assert out.startswith(longer[:2000]) and out.endswith(longer[-1000:])
    assert re.search(r"\b1001\b", out[2000:-1000])


def test_truncate_scales_with_a_custom_limit() -> None:
    text = "".join(f"{i:05d}" for i in range(1000))  # 5,000 distinct-ish characters
    out = truncate(text, 400)
    assert out.startswith(text[:200]) and not out.startswith(text[:201])
    assert out.endswith(text[-100:])
    assert re.search(rf"\b{5000 - 300}\b", out)


async def test_long_file_output_is_truncated_by_run_tool(ws: Path) -> None:
    text = "".join(f"line {i:05d}\n" for i in range(1000))  # 11,000 characters
    (ws / "long.txt").write_text(text)
    result = await call(ws, "files_read", path="long.txt")
    assert result.ok
    assert result.output.startswith(text[:2000]) and result.output.endswith(text[-1000:])
    assert re.search(rf"\b{len(text) - 3000}\b", result.output[2000:-1000])
    assert "line 00500" not in result.output
    assert result.metadata["chars"] == len(text)


async def test_binary_file_is_described_not_dumped(ws: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20
    (ws / "img.png").write_bytes(data)
    result = await call(ws, "files_read", path="img.png")
    assert result.ok
    assert "binary" in result.output and str(len(data)) in result.output
    assert "\x00" not in result.output and "PNG" not in result.output
    assert len(result.output) < 200


# --------------------------------------------------------------------------- failures never raise into the graph


class NoArgs(BaseModel):
    pass


def tiny_tool(func: Any, *, timeout: float = 5.0, output_limit: int = 4000) -> Tool:
    return Tool(name="test_tiny", description="A test tool.", args_model=NoArgs, func=func, risk="read",
                idempotent=True, timeout=timeout, output_limit=output_limit)


async def test_arbitrary_exception_becomes_permanent_error(ws: Path) -> None:
    async def broken(args: NoArgs, ctx: ToolContext) -> str:
        raise RuntimeError("the widget exploded")

    result = await run_tool(tiny_tool(broken), {}, ctx_for(ws))
    assert result == ToolResult(ok=False, output=result.output, error_kind="permanent")
    assert "RuntimeError" in result.output and "the widget exploded" in result.output


async def test_huge_exception_message_is_truncated(ws: Path) -> None:
    async def broken(args: NoArgs, ctx: ToolContext) -> str:
        raise ValueError("x" * 50_000)

    result = await run_tool(tiny_tool(broken, output_limit=400), {}, ctx_for(ws))
    assert not result.ok and result.error_kind == "permanent"
    assert len(result.output) < 500


async def test_tool_failure_keeps_its_kind_and_connection_errors_are_transient(ws: Path) -> None:
    async def refuses(args: NoArgs, ctx: ToolContext) -> str:
        raise ToolFailure("denied", "not today")

    async def flaky(args: NoArgs, ctx: ToolContext) -> str:
        raise ConnectionResetError("peer reset")

    denied = await run_tool(tiny_tool(refuses), {}, ctx_for(ws))
    assert not denied.ok and denied.error_kind == "denied" and "not today" in denied.output
    transient = await run_tool(tiny_tool(flaky), {}, ctx_for(ws))
    assert not transient.ok and transient.error_kind == "transient"


async def test_tool_exceeding_its_timeout_is_cancelled_and_reported(ws: Path) -> None:
    never = asyncio.Event()
    seen: list[str] = []

    async def hangs(args: NoArgs, ctx: ToolContext) -> str:
        seen.append("started")
        try:
            await never.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "unreachable"

    result = await run_tool(tiny_tool(hangs, timeout=0.05), {}, ctx_for(ws))
    assert not result.ok and result.error_kind == "timeout"
    assert "test_tiny" in result.output and "timed out" in result.output and "0.05" in result.output
    assert seen == ["started", "cancelled"]


async def test_non_string_results_are_json_and_tool_results_are_truncated(ws: Path) -> None:
    async def gives_dict(args: NoArgs, ctx: ToolContext) -> Any:
        return {"a": 1}

    async def gives_result(args: NoArgs, ctx: ToolContext) -> ToolResult:
        return ToolResult(ok=True, output="y" * 1000, metadata={"k": "v"})

    as_json = await run_tool(tiny_tool(gives_dict), {}, ctx_for(ws))
    assert as_json.ok and as_json.output == '{"a": 1}'
    limited = await run_tool(tiny_tool(gives_result, output_limit=300), {}, ctx_for(ws))
    assert limited.ok and limited.metadata == {"k": "v"} and len(limited.output) < 400
    assert limited.output.startswith("y" * 150) and limited.output.endswith("y" * 75)


async def test_deleting_a_symlink_inside_the_workspace_removes_the_link_not_its_target(ws: Path) -> None:
    """The human approved deleting `alias.txt`; `real.txt` must survive."""
    (ws / "real.txt").write_text("keep me")
    (ws / "alias.txt").symlink_to(ws / "real.txt")
    result = await call(ws, "files_delete", path="alias.txt")
    assert result.ok, result.output
    assert not (ws / "alias.txt").is_symlink() and (ws / "real.txt").read_text() == "keep me"
