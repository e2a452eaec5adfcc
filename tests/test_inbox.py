"""The inbox: `kasloop tell` / ``Agent.tell`` instructions reach the thread's next cycle, in order, exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from langchain_core.messages import HumanMessage

from kasloop import Agent, AgentConfig
from kasloop.checkpoints import Inbox, open_database
from conftest import CLIResult, call, db_fingerprint, state_of


def agent_for(tmp_path: Path, workspace: Path, model: str, autonomy: int = 4) -> Agent:
    return Agent(AgentConfig(autonomy=autonomy, model=model, tools=["files"], workspace=workspace), home=tmp_path / ".kasloop")


async def test_told_instructions_continue_a_finished_thread_in_order_and_once(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    model = script(
        {"content": "first task done"},
        {"tool_calls": [call("files_write", path="a.txt", content="from the inbox")]},
        {"content": "second task done"},
    )
    agent = agent_for(tmp_path, workspace, model)
    first = await agent.run("say hello")
    assert first.status == "done" and first.output == "first task done"
    one = await agent.tell(first.thread, "write a.txt")
    two = await agent.tell(first.thread, "then report back")
    assert two > one
    second = await agent.resume(first.thread)
    assert second.status == "done" and second.output == "second task done", second
    assert (workspace / "a.txt").read_text() == "from the inbox"
    state = await state_of(agent, first.thread)
    humans = [m.content for m in state["messages"] if isinstance(m, HumanMessage)]
    assert humans == ["say hello", "write a.txt", "then report back"]
    assert state["inbox_seen"] == two
    assert [g["text"] for g in state["goals"]] == ["say hello", "write a.txt", "then report back"]
    events = await agent.history(first.thread)
    assert [(e["message_id"], e["source"]) for e in events if e["kind"] == "inbox"] == [(one, "python"), (two, "python")]
    # Nothing new: resuming again reads nothing and asks the model nothing (the script has no turn left).
    again = await agent.resume(first.thread)
    assert again.status == "done"
    assert [e for e in await agent.history(first.thread) if e["kind"] == "inbox"] == [e for e in events if e["kind"] == "inbox"]


async def test_a_message_told_while_waiting_for_approval_is_read_at_the_next_cycle(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    model = script(
        {"tool_calls": [call("files_delete", path="old.txt")]},
        {"content": "deleted; and noted the message"},
    )
    (workspace / "old.txt").write_text("x")
    agent = agent_for(tmp_path, workspace, model, autonomy=3)
    waiting = await agent.run("delete old.txt")
    assert waiting.status == "waiting_approval"
    message = await agent.tell(waiting.thread, "also: the report is due Friday")
    done = await agent.approve(waiting.approvals[0]["approval_id"])
    assert done.status == "done" and not (workspace / "old.txt").exists()
    state = await state_of(agent, waiting.thread)
    humans = [m.content for m in state["messages"] if isinstance(m, HumanMessage)]
    assert humans == ["delete old.txt", "also: the report is due Friday"] and state["inbox_seen"] == message


async def test_take_is_keyed_by_what_the_state_has_seen_so_a_crash_redelivers(tmp_path: Path) -> None:
    """perceive passes the checkpointed ``inbox_seen``: until that checkpoint is written, the same messages come back."""
    async with open_database(tmp_path / "k.db") as db:
        inbox = Inbox(db)
        a = await inbox.put("t", "cli", "a")
        b = await inbox.put("t", "cli", "b")
        await inbox.put("other", "cli", "not mine")
        first = [i.text for i in await inbox.take("t", 0)]
        after_crash = [i.text for i in await inbox.take("t", 0)]  # the checkpoint with inbox_seen=b never landed
        assert first == after_crash == ["a", "b"]
        assert await inbox.take("t", b) == [] and not await inbox.newer("t", b) and await inbox.newer("t", a)
        assert await inbox.pending("t") == []  # marked taken for display


async def test_tell_an_unknown_thread_or_an_empty_message_is_a_usage_error(tmp_path: Path, kasloop: Callable[..., CLIResult]) -> None:
    unknown = kasloop("tell", "t-nope", "hello")
    assert unknown.code == 2 and "No thread `t-nope`" in unknown.err and len(unknown.err.strip().splitlines()) == 1


def test_cli_tell_then_resume(tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]) -> None:
    model = script({"content": "ready"}, {"tool_calls": [call("files_write", path="note.txt", content="told")]}, {"content": "done"})
    first = kasloop("run", "get ready", "--model", model, "--workspace", str(workspace), "--autonomy", "4", "--json")
    assert first.code == 0, first.err
    thread = first.json()["thread"]
    db = tmp_path / ".kasloop" / "kasloop.db"
    before = db_fingerprint(db)
    empty = kasloop("tell", thread, "   ")
    assert empty.code == 2 and "empty" in empty.err and db_fingerprint(db) == before
    told = kasloop("tell", thread, "write note.txt", "--json")
    assert told.code == 0 and told.json()["thread"] == thread
    resumed = kasloop("resume", thread, "--json")
    assert resumed.code == 0 and resumed.json()["output"] == "done", resumed.err
    assert (workspace / "note.txt").read_text() == "told"


async def test_take_skips_reads_while_nothing_signals_a_new_message(tmp_path: Path) -> None:
    from kasloop.checkpoints import open_database
    from kasloop.checkpoints.inbox import RECHECK_EVERY, Inbox

    async with open_database(tmp_path / "k.db") as db, open_database(tmp_path / "k.db") as other:
        reader, writer = Inbox(db), Inbox(other)
        reads = {"n": 0}
        real = db.call

        async def counting(fn):  # type: ignore[no-untyped-def]
            reads["n"] += 1
            return await real(fn)

        db.call = counting  # type: ignore[method-assign]
        assert await reader.take("t") == []
        assert await reader.take("t") == [] and reads["n"] == 1, "unchanged signal: no second read"
        first = await writer.put("t", "cli", "one")
        second = await writer.put("t", "cli", "two")  # same clock tick or not, the signal changes each time
        assert [m.text for m in await reader.take("t")] == ["one", "two"]
        assert await reader.take("t", second) == []
        third = await writer.put("t", "cli", "three")
        assert [m.id for m in await reader.take("t", second)] == [third] and first < second < third

        await other.execute("INSERT INTO kasloop_inbox (thread_id, source, text, data, received_at) VALUES ('t', 'raw', 'unsignalled', '{}', 0)")
        seen: list[str] = []
        after = third
        for _ in range(RECHECK_EVERY + 1):
            got = await reader.take("t", after)
            seen += [m.text for m in got]
            after = got[-1].id if got else after
        assert seen == ["unsignalled"], "a message written without the signal is still read within RECHECK_EVERY cycles"
