"""Re-reading is perceiving: a repeated read runs again, the model hears whether its result changed, and
polling that brings nothing new backs off and then stops; side effects keep their repeat protection."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from kasloop import Agent, AgentConfig
from conftest import call

PY_SHELL: dict[str, Any] = {"allow": ["python"], "path": [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]}
WAITS_FOR_GO = "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.02)\nprint('finished')\nraise SystemExit(3)"


class ProcessWatcher(BaseChatModel):
    """A deterministic model that acts on what it reads, as a real one would: it starts a program that runs
    until a file `go` exists, polls its status, creates `go` once a poll came back unchanged, polls until
    the program exited and reports its exit code. (A script cannot: the process id is only known at run time.)
    ``stubborn``: it polls once more after the program exited."""

    stubborn: bool = False

    @property
    def _llm_type(self) -> str:
        return "process-watcher"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        results = [json.loads(m.content) for m in messages if isinstance(m, ToolMessage)]
        if not results:
            reply = self._call("process_start", command=["python", "-c", WAITS_FOR_GO])
        else:
            last = results[-1]
            started = next(r for r in results if r["tool"] == "process_start")
            process_id = re.search(r"p-[0-9a-f]{6}", started["result"]).group(0)  # type: ignore[union-attr]
            if self.stubborn and last["tool"] == "process_status" and "exited" in last.get("result", ""):
                reply = self._call("process_status", id=process_id)
                self.stubborn = False
            elif last["tool"] == "process_status" and "exited" in last.get("result", "") or last.get("error") == "polled_final":
                text = last.get("result") or next(r["result"] for r in reversed(results) if "exited" in r.get("result", ""))
                code = re.search(r"code (-?\d+)", text)
                reply = AIMessage(content=f"The program exited: {code.group(0) if code else text}")
            elif last.get("since_same_call") == "unchanged" and not any(r["tool"] == "files_write" for r in results):
                reply = self._call("files_write", path="go", content="go")
            else:
                reply = self._call("process_status", id=process_id)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    @staticmethod
    def _call(name: str, **args: Any) -> AIMessage:
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": "c"}])


def agent_for(tmp_path: Path, workspace: Path, model: Any, tools: list[str], **settings: Any) -> Agent:
    config = AgentConfig(**{"autonomy": 4, "tools": tools, "workspace": workspace, "poll_backoff": 0.05, "poll_backoff_max": 0.2, **settings})
    if isinstance(model, str):
        return Agent(config.model_copy(update={"model": model}), home=tmp_path / ".kasloop")
    return Agent(config, home=tmp_path / ".kasloop", model=model)


async def tool_events(agent: Agent, thread: str) -> list[dict[str, Any]]:
    return [e for e in await agent.history(thread) if e["kind"] == "tool"]


async def test_a_real_process_is_polled_until_it_exits_and_its_exit_code_reported(tmp_path: Path, workspace: Path) -> None:
    agent = agent_for(tmp_path, workspace, ProcessWatcher(), ["process", "files"], tool_settings={"shell": PY_SHELL}, poll_limit=50)
    result = await agent.run("Run the program until it finishes and tell me its exit code.", thread_id="p")
    assert result.status == "done", result
    assert "3" in result.output and "exited" in result.output
    polls = [e for e in await tool_events(agent, "p") if e["tool"] == "process_status"]
    assert len(polls) >= 3 and all(e["ok"] for e in polls)
    assert polls[1]["since_same_call"] == "unchanged", "the second poll of a waiting program brought nothing new"
    assert polls[-1]["since_same_call"] == "changed" and "exited" in polls[-1]["output"]
    history = await agent.history("p")
    assert not [e for e in history if e["kind"] == "decide" and any(c["gate"] == "deny" for c in e["calls"])], "no poll was refused"
    assert [e["seconds"] for e in history if e["kind"] == "poll_wait"][:1] == [0.05], "an unchanged poll waits before the next"


async def test_a_file_another_process_appends_to_is_read_again_with_what_changed(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    (workspace / "log.txt").write_text("one\n")
    model = script(
        {"content": "", "tool_calls": [call("files_read", path="log.txt")]},
        {"content": "", "tool_calls": [call("shell_run", command=["python", "-c", "open('log.txt', 'a').write('two\\n')"])]},
        {"content": "", "tool_calls": [call("files_read", path="log.txt")]},
        {"content": "", "tool_calls": [call("files_read", path="log.txt")]},
        {"content": "The log says one, two."},
    )
    agent = agent_for(tmp_path, workspace, model, ["files", "shell"], tool_settings={"shell": PY_SHELL})
    result = await agent.run("Watch log.txt", thread_id="f")
    assert result.status == "done", result
    reads = [e for e in await tool_events(agent, "f") if e["tool"] == "files_read"]
    assert [r.get("since_same_call") for r in reads] == [None, "changed", "unchanged"]
    assert "two" in reads[1]["output"] and "two" not in reads[0]["output"]


async def test_polling_without_change_stops_at_the_limit_and_the_model_is_told_to_wait_or_stop(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    (workspace / "status.txt").write_text("pending\n")
    reads = [{"content": "", "tool_calls": [call("files_read", path="status.txt")]}] * 4
    model = script(*reads, {"content": "Still pending; I stop here."})
    agent = agent_for(tmp_path, workspace, model, ["files"], poll_limit=3, poll_backoff=0.0)
    result = await agent.run("Wait for status.txt to say done", thread_id="w")
    assert result.status == "done", result
    assert len(await tool_events(agent, "w")) == 3, "the fourth identical poll did not run"
    decides = [e for e in await agent.history("w") if e["kind"] == "decide" and e["calls"]]
    assert decides[-1]["calls"][0] == {"tool": "files_read", "gate": "deny", "reason": "polled without change"}


async def test_a_side_effect_repeated_is_still_answered_not_rerun(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """The positive control: a call that changes something keeps today's protection."""
    write = {"content": "", "tool_calls": [call("files_write", path="a.txt", content="x")]}
    agent = agent_for(tmp_path, workspace, script(write, write, {"content": "done"}), ["files"])
    assert (await agent.run("write a.txt", thread_id="s")).status == "done"
    assert len(await tool_events(agent, "s")) == 1
    decides = [e for e in await agent.history("s") if e["kind"] == "decide" and e["calls"]]
    assert decides[-1]["calls"][0]["reason"] == "repeats a call that already succeeded"


async def test_polling_after_a_final_result_is_answered_not_run(tmp_path: Path, workspace: Path) -> None:
    """An exited process's status can never change: the same poll after it is answered with that fact."""
    agent = agent_for(tmp_path, workspace, ProcessWatcher(stubborn=True), ["process", "files"], tool_settings={"shell": PY_SHELL}, poll_limit=50)
    result = await agent.run("Run the program until it finishes and tell me its exit code.", thread_id="p")
    assert result.status == "done" and "code 3" in result.output, result
    decides = [e for e in await agent.history("p") if e["kind"] == "decide" and e["calls"]]
    assert decides[-1]["calls"][0] == {"tool": "process_status", "gate": "deny", "reason": "its last result was final"}
    polls = [e for e in await tool_events(agent, "p") if e["tool"] == "process_status"]
    assert "exited" in polls[-1]["output"], "the refused poll did not run"
