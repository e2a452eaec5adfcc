"""A tool's receipt copied into a new call is answered by kasloop, at every level, before anyone approves it.

The failure this guards (measured on the embedded model in `make demo`): the model wrote notes.md
correctly, then proposed `files_write notes.md "Wrote 39 bytes to notes.md."`, a human approved it,
and the file ended as the receipt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kasloop import Agent, AgentConfig
from kasloop.nodes.receipts import copied_receipt
from conftest import call

LINE = "Remember to buy milk and call the bank."


@pytest.mark.parametrize("autonomy", [2, 3, 4])
async def test_a_receipt_written_as_content_is_refused_at_every_level(
    autonomy: int, tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    receipt = f"Wrote {len(LINE)} bytes to notes.md."
    model = script(
        {"tool_calls": [call("files_write", path="notes.md", content=LINE)]},
        {"tool_calls": [call("files_write", path="notes.md", content=receipt)]},
        {"content": "notes.md is written."},
    )
    agent = Agent(AgentConfig(autonomy=autonomy, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("Create notes.md containing the line: " + LINE)
    approvals = 0
    while result.status == "waiting_approval":
        assert all(a["args"].get("content") != receipt for a in result.approvals), "a human was asked to approve the receipt"
        result = await agent.approve(result.approvals[0]["approval_id"])
        approvals += 1
    assert result.status == "done", result
    assert (workspace / "notes.md").read_text() == LINE
    decides = [e for e in await agent.history(result.thread) if e["kind"] == "decide" and e["calls"]]
    assert decides[1]["calls"][0]["reason"] == "repeats an earlier tool result"
    assert approvals == (1 if autonomy == 2 else 0)


async def test_a_refusal_written_as_content_is_refused_too(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """Measured on the embedded model once receipts were refused: it wrote the refusal message into the file."""
    receipt = f"Wrote {len(LINE)} bytes to notes.md."
    refusal = "Refused: `content` repeats what an earlier call returned (\"" + receipt + "\"), which is kasloop's report of that call, " \
        "not content the task asks for. Nothing ran. If the task is done, answer in plain text; otherwise write the content the task asks for."
    model = script(
        {"tool_calls": [call("files_write", path="notes.md", content=LINE)]},
        {"tool_calls": [call("files_write", path="notes.md", content=receipt)]},
        {"tool_calls": [call("files_write", path="notes.md", content=refusal)]},
        {"content": "notes.md is written."},
    )
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("Create notes.md containing the line: " + LINE)
    assert result.status == "done", result
    assert (workspace / "notes.md").read_text() == LINE
    reasons = [e["calls"][0]["reason"] for e in await agent.history(result.thread) if e["kind"] == "decide" and e["calls"]]
    assert reasons[1:] == ["repeats an earlier tool result", "repeats an earlier tool result"]


async def test_copying_read_data_into_a_write_is_a_copy_and_runs(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """The control: a file's content (a ``read`` result) is data; writing it elsewhere is what a copy goal asks."""
    (workspace / "a.txt").write_text("apples and pears")
    model = script(
        {"tool_calls": [call("files_read", path="a.txt")]},
        {"tool_calls": [call("files_write", path="b.txt", content="apples and pears")]},
        {"content": "copied"},
    )
    agent = Agent(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")
    result = await agent.run("Copy a.txt to b.txt.")
    assert result.status == "done" and (workspace / "b.txt").read_text() == "apples and pears"


@pytest.mark.parametrize(
    ("args", "known", "hit"),
    [
        ({"content": "Wrote 39 bytes to notes.md."}, [], "content"),  # by shape, even when no longer in memory
        ({"content": "  Appended 12 bytes to log.txt.\n"}, [], "content"),
        ({"content": "Moved a.txt to b.txt."}, ["Moved a.txt to b.txt."], "content"),  # a receipt in working memory
        ({"text": "Moved a.txt to b.txt."}, [], None),  # not kasloop's shape and not in memory: ordinary text
        ({"content": "The report says: Wrote 39 bytes to notes.md. " + "More text. " * 10}, [], None),  # quoted inside more
        ({"content": LINE}, [f"Wrote {len(LINE)} bytes to notes.md."], None),
        ({"payload": {"note": "Wrote 3 bytes to a."}}, [], "payload"),
    ],
)
def test_copied_receipt(args: dict[str, object], known: list[str], hit: str | None) -> None:
    found = copied_receipt(args, known)
    assert (found[0] if found else None) == hit
