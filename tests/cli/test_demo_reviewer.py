"""The local demo's human is a reviewer: it approves only the call the goal asks for, rejects anything else with
a reason the model reads, and the demo exits 0 only when the run is done and the file is exactly as asked.

The model here is a real OpenAI-wire server on 127.0.0.1 replaying replies; the real local model runs the same
demo in tests/local_model/test_local_demo.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kasloop import OpenAISettings
from kasloop.cli.demo import LOCAL_LINE, LOCAL_PATH, review, run_local_demo
from wire_model import wire_model


def request(tool: str = "files_write", **args: Any) -> dict[str, Any]:
    return {"kind": "tool_call", "tool": tool, "args": args}


@pytest.mark.parametrize(("proposed", "approve", "words"), [
    (request(path="notes.md", content=LOCAL_LINE), True, "exactly"),
    (request(path="./notes.md", content=LOCAL_LINE + "\n"), True, "exactly"),
    (request(path="notes.md", content="Wrote 39 bytes to notes.md."), False, "Wrote 39 bytes"),
    (request(path="notes.md", content="Remember to buy milk"), False, "must contain exactly"),
    (request(path="todo.txt", content=LOCAL_LINE), False, "not `todo.txt`"),
    (request("files_delete", path="todo.txt"), False, "`files_delete` is not needed"),
])
def test_review_approves_only_what_the_goal_asks(proposed: dict[str, Any], approve: bool, words: str) -> None:
    verdict = review(proposed)
    assert verdict.approve is approve and words in verdict.reason


def wire_config(base_url: str) -> dict[str, Any]:
    return {
        "model": "openai:test-model", "retry_backoff": 0.001, "diagnose_with_model": False,
        "openai": OpenAISettings(base_url=base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
    }


async def test_a_wrong_call_is_rejected_with_a_reason_the_model_reads_then_the_right_one_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with wire_model() as model:
        model.reply(None, [("files_write", {"path": LOCAL_PATH, "content": "milk, bank"}, "c1")])
        model.reply(None, [("files_write", {"path": LOCAL_PATH, "content": LOCAL_LINE}, "c2")])
        model.reply("notes.md holds the line.")
        code = await run_local_demo(tmp_path, **wire_config(model.base_url))
        told = " ".join(str(m.get("content")) for m in model.decisions[1]["messages"])
    shown = capsys.readouterr().out
    assert code == 0, shown
    assert (tmp_path / "workspace" / LOCAL_PATH).read_text() == LOCAL_LINE
    assert f"must contain exactly the line `{LOCAL_LINE}`" in told, "the model reads the rejection's reason"
    assert "rejects" in shown and "must contain exactly" in shown and "Done:" in shown


async def test_a_model_that_never_gets_it_right_ends_the_demo_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with wire_model() as model:
        for n in range(10):
            model.reply(None, [("files_write", {"path": LOCAL_PATH, "content": f"try {n}"}, f"c{n}")])
        code = await run_local_demo(tmp_path, **wire_config(model.base_url))
    shown = capsys.readouterr().out
    assert code != 0
    assert not (tmp_path / "workspace" / LOCAL_PATH).exists(), "nothing was approved, so nothing was written"
    assert "did not finish" in shown


async def test_a_stuck_agent_ends_the_demo_with_the_escalated_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with wire_model() as model:
        for _ in range(12):
            model.reply('{"name": "files_write", "arguments": {"path": "notes.md", "content": "x" oops')
        code = await run_local_demo(tmp_path, **wire_config(model.base_url))
    shown = capsys.readouterr().out
    assert code == 12, shown
    assert "could not finish on its own" in shown
