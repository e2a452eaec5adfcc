"""A run ends ``done`` only on a real answer: a reply cut off at the token limit, or text that starts like
a tool call and does not parse, is a model error that goes through the recovery ladder.

Measured on the embedded model: asked to create river.txt, it began a files_write whose content repeated
"River" until the 512-token limit cut it off; kasloop took the cut-off text as the answer and reported
done, with no file written. These tests drive the same replies through a real OpenAI-wire server.
"""

from __future__ import annotations

from pathlib import Path

from kasloop import Agent, AgentConfig, OpenAISettings
from wire_model import wire_model

CUT_OFF = '{"name": "files_write", "arguments": {"path": "river.txt", "content": "' + "River " * 80


def agent_for(tmp_path: Path, workspace: Path, base_url: str) -> Agent:
    config = AgentConfig(
        autonomy=4, model="openai:test-model", tools=["files"], workspace=workspace, retry_backoff=0.001, diagnose_with_model=False,
        openai=OpenAISettings(base_url=base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
    )
    return Agent(config, home=tmp_path / ".kasloop")


async def test_a_reply_cut_off_at_the_token_limit_is_not_an_answer(tmp_path: Path, workspace: Path) -> None:
    with wire_model() as model:
        model.reply(CUT_OFF, finish="length")
        model.reply(None, [("files_write", {"path": "river.txt", "content": "river"}, "c1")])
        model.reply("river.txt now holds the word river.")
        agent = agent_for(tmp_path, workspace, model.base_url)
        result = await agent.run("Create the file river.txt containing the word river.")
    assert result.status == "done", result
    assert (workspace / "river.txt").read_text() == "river"
    errors = [e for e in await agent.history(result.thread) if e["kind"] == "error"]
    assert errors and "cut off at the model's token limit" in errors[0]["message"]
    # The model was told what went wrong and how to fit, in the next decide request.
    retry = " ".join(str(m.get("content")) for m in model.decisions[1]["messages"])
    assert "token limit" in retry and "short" in retry


async def test_text_that_starts_like_a_call_but_does_not_parse_is_not_an_answer(tmp_path: Path, workspace: Path) -> None:
    with wire_model() as model:
        model.reply('{"name": "files_write", "arguments": {"path": "a.txt", "content": "x" oops')
        model.reply(None, [("files_write", {"path": "a.txt", "content": "x"}, "c1")])
        model.reply("a.txt is written.")
        agent = agent_for(tmp_path, workspace, model.base_url)
        result = await agent.run("Create a.txt containing x.")
    assert result.status == "done" and (workspace / "a.txt").read_text() == "x"
    errors = [e for e in await agent.history(result.thread) if e["kind"] == "error"]
    assert errors and "looks like a tool call but is not valid JSON" in errors[0]["message"]


async def test_a_model_that_never_finishes_a_reply_escalates_instead_of_done(tmp_path: Path, workspace: Path) -> None:
    with wire_model() as model:
        for _ in range(12):
            model.reply(CUT_OFF, finish="length")
        result = await agent_for(tmp_path, workspace, model.base_url).run("Create the file river.txt containing the word river.")
    assert result.status == "escalated" and result.exit_code == 12, result
    assert not (workspace / "river.txt").exists()


async def test_a_plain_answer_is_still_an_answer(tmp_path: Path, workspace: Path) -> None:
    """The control: a complete reply (finish_reason "stop") in prose, even one naming a tool, ends done."""
    with wire_model() as model:
        model.reply("Nothing to do: files_write is not needed, river.txt already exists.")
        result = await agent_for(tmp_path, workspace, model.base_url).run("Check river.txt.")
    assert result.status == "done" and "already exists" in result.output


async def test_a_reply_that_is_only_a_tool_name_is_not_an_answer(tmp_path: Path, workspace: Path) -> None:
    """Measured on the embedded model after an error: it answered `files_write`, and the run ended done with nothing written."""
    with wire_model() as model:
        model.reply("files_write")
        model.reply(None, [("files_write", {"path": "a.txt", "content": "x"}, "c1")])
        model.reply("a.txt holds x.")
        agent = agent_for(tmp_path, workspace, model.base_url)
        result = await agent.run("Create a.txt containing x.")
    assert result.status == "done" and (workspace / "a.txt").read_text() == "x"
    errors = [e for e in await agent.history(result.thread) if e["kind"] == "error"]
    assert errors and "only the name `files_write`" in errors[0]["message"]


async def test_a_file_name_called_as_a_function_gets_the_right_shape_back(tmp_path: Path, workspace: Path) -> None:
    """Measured: {"name": "notes.md", "arguments": {"content": ...}}. Nothing runs; the hint shows the call with `path` filled in."""
    with wire_model() as model:
        model.reply('{"name": "notes.md", "arguments": {"content": "hi"}}')
        model.reply(None, [("files_write", {"path": "notes.md", "content": "hi"}, "c1")])
        model.reply("notes.md holds hi.")
        config = AgentConfig(
            autonomy=4, model="openai:test-model", tools=["files_write"], workspace=workspace, retry_backoff=0.001, diagnose_with_model=False,
            openai=OpenAISettings(base_url=model.base_url, api_key="sk-test-key"),  # type: ignore[arg-type]
        )
        agent = Agent(config, home=tmp_path / ".kasloop")
        result = await agent.run("Create notes.md containing hi.")
    assert result.status == "done" and (workspace / "notes.md").read_text() == "hi"
    [error] = [e for e in await agent.history(result.thread) if e["kind"] == "error"]
    assert "`notes.md`, which is not a tool" in error["message"]
    assert '{"name": "files_write", "arguments": {"path": "notes.md", "content": "hi"}}' in error["message"]


async def test_an_echoed_result_with_name_for_tool_is_the_answer_not_a_call(tmp_path: Path, workspace: Path) -> None:
    """Measured: after its write the model replied {"name": "files_write", "ok": true, "result": "Wrote ..."}.
    That is kasloop's envelope copied back (no `arguments`), so it is taken as "that was it", and nothing runs again."""
    with wire_model() as model:
        model.reply(None, [("files_write", {"path": "a.txt", "content": "x"}, "c1")])
        model.reply('{"name": "files_write", "ok": true, "result": "Wrote 1 bytes to a.txt."}')
        agent = agent_for(tmp_path, workspace, model.base_url)
        result = await agent.run("Create a.txt containing x.")
    assert result.status == "done" and result.output == "files_write: Wrote 1 bytes to a.txt."
    assert [e["tool"] for e in await agent.history(result.thread) if e["kind"] == "tool"] == ["files_write"]


async def test_an_answer_that_only_repeats_kasloops_prompt_line_reports_what_was_done(tmp_path: Path, workspace: Path) -> None:
    """Measured on the embedded model: after "The call succeeded. If nothing else is needed, answer the user in
    plain text, not JSON." it sometimes answers with that very line. The run is done (the file is right), but
    the output a person reads is what was done, not kasloop's own prompt."""
    from kasloop.steps import SINGLE_DONE_TEMPLATE

    with wire_model() as model:
        model.reply(None, [("files_append", {"path": "log.txt", "content": "paid\n"}, "c1")])
        model.reply(SINGLE_DONE_TEMPLATE)
        agent = agent_for(tmp_path, workspace, model.base_url)
        result = await agent.run("Append the line paid to log.txt.")
    assert result.status == "done" and (workspace / "log.txt").read_text().endswith("paid\n")
    assert result.output == "Done. Last result: Appended 5 bytes to log.txt.", result.output


def test_only_kasloops_own_lines_count_as_echoes() -> None:
    from kasloop.steps import DONE_TEMPLATE, SINGLE_DONE_TEMPLATE, echoes_step_prompt

    assert echoes_step_prompt(SINGLE_DONE_TEMPLATE) and echoes_step_prompt(DONE_TEMPLATE.lower())
    assert echoes_step_prompt("Step 2 of 2: write it into b.txt")
    assert not echoes_step_prompt("The call succeeded: log.txt now ends with paid.")
    assert not echoes_step_prompt("") and not echoes_step_prompt("Done, log.txt has the new line.")
