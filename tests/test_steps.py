"""Guided steps: a goal split into steps, shown to the model one at a time, through the real graph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage

from kasloop import Agent, AgentConfig
from kasloop.models.chat import GUIDED_STEPS, build_model
from kasloop.steps import DONE_TEMPLATE, NUDGES_PER_STEP, SINGLE_DONE_TEMPLATE, split_steps
from conftest import call, state_of

COPY_GOAL = "Read a.txt and write the same text into b.txt."


@pytest.mark.parametrize(("goal", "steps"), [
    (COPY_GOAL, ["Read a.txt", "Write the same text into b.txt."]),
    ("List the files in the workspace and write their names into files.txt.", ["List the files in the workspace", "Write their names into files.txt."]),
    ("Fetch the page, then save its title to t.txt; then tell me.", ["Fetch the page", "Save its title to t.txt", "Tell me."]),
    ("Run the command `ls` and write its output to out.txt. Then delete tmp.txt.", ["Run the command `ls`", "Write its output to out.txt.", "Delete tmp.txt."]),
    ("1. Read a.txt\n2) write it to b.txt\n- tell me", ["Read a.txt", "write it to b.txt", "tell me"]),
    # One step: "and" not followed by an imperative verb, quoted text, text after a colon, one-word clauses.
    ("Create numbers.txt containing the numbers 1, 2 and 3, one per line.", None),
    ("Create hello.txt with the content: Read me and write back", None),
    ("Create x.txt with the content: Hello. Then delete y.txt.", None),
    ('Write "Hi. Then read on" into q.txt and delete y.txt', ['Write "Hi. Then read on" into q.txt', "Delete y.txt"]),
    ('Write "read x and write y" into q.txt', None),
    ("Search and replace", None),
    ("Hello. Create a.txt with the text hi.", None),
    ("Create the file docs/index.md with the title Docs.", None),
])
def test_split_steps(goal: str, steps: list[str] | None) -> None:
    assert split_steps(goal) == (steps or [goal])


def test_long_goals_keep_their_tail_in_the_last_step() -> None:
    goal = ". ".join(f"Write f{n}.txt" for n in range(12)) + "."
    steps = split_steps(goal)
    assert len(steps) == 8 and steps[-1].startswith("Write f7.txt") and steps[-1].endswith("Write f11.txt.")


class PromptLog(AsyncCallbackHandler):
    """Records the last message of every prompt the model is sent (a public callback, no patching)."""

    def __init__(self) -> None:
        self.tails: list[str] = []

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        last = messages[0][-1]
        self.tails.append(str(last.content) if isinstance(last, HumanMessage) else f"<{last.type}>")


def guided_agent(tmp_path: Path, workspace: Path, model: str, log: PromptLog, **config: Any) -> Agent:
    cfg = AgentConfig(model=model, tools=["files"], workspace=workspace, **{"autonomy": 4, **config})
    return Agent(cfg, home=tmp_path / ".kasloop", callbacks=[log])


async def test_each_step_is_shown_and_an_early_answer_is_shown_the_next_step(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("apples")
    log = PromptLog()
    agent = guided_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_read", path="a.txt")]},
        {"content": "The task is done."},  # too early: step 2 is left
        {"content": "", "tool_calls": [call("files_write", path="b.txt", content="apples")]},
        {"content": "Copied a.txt to b.txt."},
    ), log, guide_steps=True)
    result = await agent.run(COPY_GOAL)
    assert result.status == "done" and result.output == "Copied a.txt to b.txt."
    assert (workspace / "b.txt").read_text() == "apples"
    assert log.tails == ["Step 1 of 2: Read a.txt", "Step 2 of 2: Write the same text into b.txt.",
                         "Step 2 of 2: Write the same text into b.txt.", DONE_TEMPLATE]
    steps = [e for e in await agent.history(result.thread) if e["kind"] == "step"]
    assert [(e["index"], e["of"], e["nudge"]) for e in steps] == [(2, 2, 1)]
    state = await state_of(agent, result.thread)
    assert state["plan"] == {"steps": ["Read a.txt", "Write the same text into b.txt."], "current": 2, "nudges": 0}
    said = [str(m.content) for m in state["messages"] if isinstance(m, HumanMessage)]
    assert said == [COPY_GOAL], "the step lines are shown, never stored in the conversation"


async def test_an_answer_stands_after_the_nudges_of_a_step(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("apples")
    answers = [{"content": f"I am done ({n})."} for n in range(NUDGES_PER_STEP + 1)]
    log = PromptLog()
    agent = guided_agent(tmp_path, workspace, script({"content": "", "tool_calls": [call("files_read", path="a.txt")]}, *answers), log, guide_steps=True)
    result = await agent.run(COPY_GOAL)
    assert result.status == "done" and result.output == f"I am done ({NUDGES_PER_STEP})."
    assert not (workspace / "b.txt").exists()
    assert result.usage["model_calls"] == 2 + NUDGES_PER_STEP


async def test_a_failed_call_does_not_finish_a_step(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    log = PromptLog()
    agent = guided_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_read", path="missing.txt")]},
        {"content": "", "tool_calls": [call("files_read", path="a.txt")]},
        {"content": "", "tool_calls": [call("files_write", path="b.txt", content="apples")]},
        {"content": "Copied."},
    ), log, guide_steps=True, diagnose_with_model=False)
    (workspace / "a.txt").write_text("apples")
    result = await agent.run(COPY_GOAL)
    assert result.status == "done"
    assert log.tails[:2] == ["Step 1 of 2: Read a.txt", "Step 1 of 2: Read a.txt"]


async def test_unguided_models_see_the_goal_alone_and_their_answer_ends_it(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("apples")
    log = PromptLog()
    agent = guided_agent(tmp_path, workspace, script({"content": "", "tool_calls": [call("files_read", path="a.txt")]}, {"content": "Done."}), log)
    result = await agent.run(COPY_GOAL)
    assert result.status == "done" and result.output == "Done."
    assert log.tails == [COPY_GOAL, "<tool>"]
    assert not [e for e in await agent.history(result.thread) if e["kind"] == "step"]


def test_the_local_model_is_guided_unless_configured_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kasloop.models.local_server.ensure_running", lambda *a, **k: "http://127.0.0.1:9/v1")
    local = build_model("local", AgentConfig())
    openai = build_model("openai:gpt-4o-mini", AgentConfig(openai={"base_url": "http://127.0.0.1:9/v1"}))
    assert (local.metadata or {}).get(GUIDED_STEPS) is True
    assert not (openai.metadata or {}).get(GUIDED_STEPS)


async def test_calls_made_together_finish_a_step_each(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    (workspace / "a.txt").write_text("apples")
    log = PromptLog()
    agent = guided_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_read", path="a.txt"), call("files_write", path="b.txt", content="apples")]},
        {"content": "Copied."},
    ), log, guide_steps=True)
    result = await agent.run(COPY_GOAL)
    assert result.status == "done" and log.tails == ["Step 1 of 2: Read a.txt", DONE_TEMPLATE]


async def test_a_thread_resumed_in_a_new_agent_goes_on_at_its_step(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """Step 2's write waits for approval; another Agent (as another process would) approves it and the thread goes on."""
    (workspace / "a.txt").write_text("apples")
    model = script(
        {"content": "", "tool_calls": [call("files_read", path="a.txt")]},
        {"content": "", "tool_calls": [call("files_write", path="b.txt", content="apples")]},
        {"content": "Copied."},
    )
    first_log = PromptLog()
    rules = [{"tool": "files_write", "action": "ask"}]
    first = guided_agent(tmp_path, workspace, model, first_log, guide_steps=True, autonomy=3, rules=rules)
    waiting = await first.run(COPY_GOAL)
    assert waiting.status == "waiting_approval" and first_log.tails[-1] == "Step 2 of 2: Write the same text into b.txt."
    later_log = PromptLog()
    later = guided_agent(tmp_path, workspace, model, later_log, guide_steps=True, autonomy=3, rules=rules)
    result = await later.approve(waiting.approvals[0]["approval_id"])
    assert result.status == "done" and (workspace / "b.txt").read_text() == "apples"
    assert later_log.tails == [DONE_TEMPLATE]
    assert (await state_of(later, result.thread))["plan"]["current"] == 2


def test_content_after_a_colon_is_kept_to_the_last_character() -> None:
    assert split_steps("Read a.txt and write b.txt with the content: x;") == ["Read a.txt", "Write b.txt with the content: x;"]


async def test_a_one_step_goal_is_asked_whether_it_is_done_after_a_change_not_after_a_read(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    """Measured on the 0.5B model: after the demo's one write it wrote again with its own tool result as content.
    A read does not end a one-step goal ("fix the typo in a.txt" starts with reading it); a change may."""
    (workspace / "a.txt").write_text("teh cat\n")
    log = PromptLog()
    agent = guided_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_read", path="a.txt")]},
        {"content": "", "tool_calls": [call("files_write", path="a.txt", content="the cat\n")]},
        {"content": "Fixed the typo."},
    ), log, guide_steps=True)
    result = await agent.run("Fix the typo in a.txt.")
    assert result.status == "done" and (workspace / "a.txt").read_text() == "the cat\n"
    assert log.tails == ["Fix the typo in a.txt.", "<tool>", SINGLE_DONE_TEMPLATE]
    assert (await state_of(agent, result.thread))["plan"]["current"] == 1


async def test_an_unguided_one_step_goal_gets_no_done_line(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """The control: guidance is for small models; a model run with guide_steps = false sees only the conversation."""
    log = PromptLog()
    agent = guided_agent(tmp_path, workspace, script(
        {"content": "", "tool_calls": [call("files_write", path="a.txt", content="x")]},
        {"content": "Written."},
    ), log, guide_steps=False)
    result = await agent.run("Create a.txt containing x.")
    assert result.status == "done" and SINGLE_DONE_TEMPLATE not in log.tails


def test_a_last_step_that_asks_for_the_answer_is_shown_as_the_answer_and_never_nudged() -> None:
    from kasloop.steps import ANSWER_STEP, Plan, echoes_step_prompt, should_nudge, step_prompt, waits

    plan = Plan(steps=split_steps("Start `python job.py` with process_start. Then check it with process_status until it has exited, and tell me its exit code."), current=2, nudges=0)
    assert plan["steps"][2] == "Tell me its exit code."
    assert step_prompt(plan) == ANSWER_STEP + "Tell me its exit code."
    assert not should_nudge(plan), "answering is how that step is done"
    assert echoes_step_prompt(ANSWER_STEP + "Tell me its exit code.")
    assert waits(Plan(steps=plan["steps"], current=1, nudges=0)) and not waits(plan)
    writes = Plan(steps=split_steps("Read a.txt and write the same text into b.txt."), current=1, nudges=0)
    assert step_prompt(writes) == "Step 2 of 2: Write the same text into b.txt." and should_nudge(writes), "other steps are unchanged"
