"""Polling on the real local model: it starts a program, polls its status while it runs until it exits, and
reports the exit code. Assertions are on the event log and the reported number, not on wording.

Measured on the 0.5B model (sleep 20 s): running, running (``unchanged``), exited with code 7 (``changed``),
then the answer "7". The program runs long enough that the first poll finds it running on a busy machine too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kasloop import Agent, AgentConfig

PY_SHELL = {"allow": ["python"], "path": [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]}


async def test_the_local_model_polls_a_process_until_it_exits_and_reports_its_exit_code(local_model: str, tmp_path: Path, workspace: Path) -> None:
    (workspace / "job.py").write_text("import time\ntime.sleep(25)\nraise SystemExit(7)\n")
    agent = Agent(
        AgentConfig(autonomy=4, model="local", tools=["process_start", "process_status"], workspace=workspace,
                    tool_settings={"shell": PY_SHELL}, poll_backoff=0.5, poll_backoff_max=2, poll_limit=30),
        home=tmp_path / ".kasloop",
    )
    result = await agent.run("Start `python job.py` with process_start. Then check it with process_status until it has exited, and tell me its exit code.")
    events = await agent.history(result.thread)
    polls = [e for e in events if e["kind"] == "tool" and e["tool"] == "process_status" and e["ok"]]
    assert result.status == "done", (result, [(e["kind"], e.get("tool"), e.get("output", "")[:80]) for e in events])
    assert "running" in polls[0]["output"], "it polled while the program ran"
    assert "exited with code 7" in polls[-1]["output"] and polls[-1]["since_same_call"] == "changed"
    assert "7" in result.output
