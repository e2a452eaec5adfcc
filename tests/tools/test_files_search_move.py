"""``files_search`` and ``files_move`` (tools/files.py) on real folders, escapes included."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kasloop.tools.base import ToolContext, ToolResult, run_tool
from kasloop.tools.files import FILES_TOOLS, MAX_SEARCH_MATCHES

TOOLS = {tool.name: tool for tool in FILES_TOOLS}
SECRET = "TOP-SECRET-OUTSIDE-THE-WORKSPACE"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    (path / "notes").mkdir(parents=True)
    (path / "notes" / "a.md").write_text("# Alpha\nthe launch is on Monday\n")
    (path / "notes" / "b.txt").write_text("nothing here\nLAUNCH checklist\n")
    (path / "readme.md").write_text("top level\n")
    (path / "blob.bin").write_bytes(b"\x00\x01launch\x00")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(f"launch {SECRET}\n")
    return path


async def call(ws: Path, name: str, **args: Any) -> ToolResult:
    return await run_tool(TOOLS[name], args, ToolContext(workspace=ws))


# --------------------------------------------------------------------------- files_search


async def test_search_by_glob_lists_matching_files_in_every_folder(ws: Path) -> None:
    result = await call(ws, "files_search", pattern="*.md")
    assert result.ok and sorted(result.output.splitlines()) == ["notes/a.md", "readme.md"]


async def test_search_by_text_shows_file_line_and_text_case_insensitively(ws: Path) -> None:
    result = await call(ws, "files_search", text="launch")
    assert result.output.splitlines() == ["notes/a.md:2: the launch is on Monday", "notes/b.txt:2: LAUNCH checklist"]


async def test_search_skips_binary_files_and_reports_no_matches(ws: Path) -> None:
    assert "blob.bin" not in (await call(ws, "files_search", text="launch")).output
    assert (await call(ws, "files_search", text="no-such-words")).output == "(no matches)"


async def test_a_word_given_as_the_name_pattern_is_told_to_use_text(ws: Path) -> None:
    """Measured on the local model: "find the file that contains launch" became pattern="launch"; the empty
    result says how to search by content, and a real glob with no match stays a plain "(no matches)"."""
    hint = (await call(ws, "files_search", pattern="launch")).output
    assert hint.startswith("(no matches") and "pass it as `text`" in hint
    assert len((await call(ws, "files_search", text="launch")).output.splitlines()) == 2
    assert (await call(ws, "files_search", pattern="*.nothing")).output == "(no matches)"


async def test_search_in_a_subfolder_only(ws: Path) -> None:
    assert (await call(ws, "files_search", pattern="*.md", path="notes")).output == "notes/a.md"


async def test_search_does_not_follow_a_symlinked_folder_out_of_the_workspace(ws: Path, tmp_path: Path) -> None:
    (ws / "escape").symlink_to(tmp_path / "outside")
    (ws / "escape-file.md").symlink_to(tmp_path / "outside" / "secret.md")
    result = await call(ws, "files_search", text="launch")
    assert SECRET not in result.output and "secret.md" not in result.output and "escape" not in result.output


@pytest.mark.parametrize("path", ["..", "../outside", "/etc"])
async def test_search_refuses_a_start_folder_outside_the_workspace(ws: Path, path: str) -> None:
    result = await call(ws, "files_search", text="launch", path=path)
    assert result.error_kind == "denied" and "outside the workspace" in result.output and SECRET not in result.output


async def test_search_stops_at_the_match_limit_and_says_so(ws: Path) -> None:
    (ws / "many.txt").write_text("hit\n" * (MAX_SEARCH_MATCHES + 50))
    lines = (await call(ws, "files_search", text="hit", pattern="many.txt")).output.splitlines()
    assert len(lines) == MAX_SEARCH_MATCHES + 1 and "narrow the search" in lines[-1]


# --------------------------------------------------------------------------- files_move


async def test_move_renames_a_file(ws: Path) -> None:
    result = await call(ws, "files_move", source="readme.md", destination="docs/README.md")
    assert result.ok, result
    assert not (ws / "readme.md").exists() and (ws / "docs" / "README.md").read_text() == "top level\n"


async def test_move_into_an_existing_folder_keeps_the_name(ws: Path) -> None:
    await call(ws, "files_move", source="readme.md", destination="notes")
    assert (ws / "notes" / "readme.md").read_text() == "top level\n"


async def test_move_refuses_to_overwrite_unless_asked(ws: Path) -> None:
    (ws / "other.md").write_text("keep me")
    refused = await call(ws, "files_move", source="readme.md", destination="other.md")
    assert refused.error_kind == "bad_args" and "overwrite=true" in refused.output
    assert (ws / "other.md").read_text() == "keep me" and (ws / "readme.md").exists()
    done = await call(ws, "files_move", source="readme.md", destination="other.md", overwrite=True)
    assert done.ok and (ws / "other.md").read_text() == "top level\n" and not (ws / "readme.md").exists()


async def test_move_of_a_missing_file_is_bad_args(ws: Path) -> None:
    result = await call(ws, "files_move", source="nope.md", destination="x.md")
    assert result.error_kind == "bad_args" and "files_list" in result.output


async def test_move_a_folder_into_itself_is_refused(ws: Path) -> None:
    result = await call(ws, "files_move", source="notes", destination="notes/inner")
    assert result.error_kind == "bad_args" and (ws / "notes" / "a.md").exists()


@pytest.mark.parametrize(
    ("source", "destination"),
    [("readme.md", "../stolen.md"), ("readme.md", "/tmp/stolen.md"), ("../outside/secret.md", "got.md"), (".", "x"), ("..", "x")],
)
async def test_move_across_the_workspace_boundary_is_refused_and_nothing_moves(ws: Path, tmp_path: Path, source: str, destination: str) -> None:
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    result = await call(ws, "files_move", source=source, destination=destination)
    assert result.error_kind == "denied", result
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/stolen.md").exists()


async def test_move_of_a_symlink_moves_the_link_not_its_target(ws: Path, tmp_path: Path) -> None:
    (ws / "link.md").symlink_to(ws / "readme.md")
    result = await call(ws, "files_move", source="link.md", destination="moved-link.md")
    assert result.ok, result
    assert (ws / "moved-link.md").is_symlink() and os.readlink(ws / "moved-link.md") == str(ws / "readme.md")
    assert (ws / "readme.md").read_text() == "top level\n"


async def test_move_into_a_symlinked_folder_pointing_outside_is_refused(ws: Path, tmp_path: Path) -> None:
    (ws / "out").symlink_to(tmp_path / "outside")
    result = await call(ws, "files_move", source="readme.md", destination="out/readme.md")
    assert result.error_kind == "denied" and (ws / "readme.md").exists()
    assert not (tmp_path / "outside" / "readme.md").exists()
