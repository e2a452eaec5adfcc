"""The kill -9 suite's agent process: drives one thread and lets the parent kill it at chosen moments.

Usage::

    python kill9_agent.py SETUP.json go
    python kill9_agent.py SETUP.json go-and-die N
    python kill9_agent.py SETUP.json approve APPROVAL_ID
    python kill9_agent.py SETUP.json respond APPROVAL_ID TEXT

``SETUP.json`` holds home, workspace, script, autonomy, SMTP port, thread id
and goal (one file, so every process of a scenario runs the same policy).
``go`` continues the thread: ``resume`` if it has a checkpoint, else ``run``
(what a user does after a crash before the first checkpoint). ``go-and-die N``
does the same but the process SIGKILLs itself as it is about to save its
N-th checkpoint (the node's writes before it are saved).

Talking to the parent (the test) over stdin/stdout, one line each:

* ``ready`` once the imports are done: time-based kills are measured from
  here, so no kill is wasted on interpreter start-up.
* ``hs before TOKEN`` / ``hs after TOKEN``: the ``k9_append`` tool stops
  before and after its effect and waits for ``go`` on stdin, so the parent
  can kill it exactly mid-tool (intent committed, result not recorded).
* ``result JSON``: where the thread stands when the process ends on its own.

Why handshakes instead of sleeps: the parent kills while the tool is blocked
on a read, which is deterministic; random timing covers everything else.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kasloop import Agent, AgentConfig
from kasloop.config.schema import Budgets
from kasloop.errors import ThreadNotFound, UsageError
from kasloop.tools import Tool, ToolContext

THREAD = "k9"
APPEND_FILE = "appends.log"
SENDER = "Kill Nine <agent@example.com>"


class AppendArgs(BaseModel):
    token: str


def say(line: str) -> None:
    """One line to the parent, unbuffered (the parent may kill us right after it)."""
    os.write(1, (line + "\n").encode())


def wait_for_go() -> None:
    """Block until the parent says ``go``; a closed pipe means the parent is gone."""
    answer = sys.stdin.buffer.readline()
    if answer.strip() != b"go":
        os._exit(70)


def make_append_tool(workspace: Path) -> Tool:
    """A non-idempotent tool: each run adds one line, so a second run would show as a duplicate."""

    async def append(args: AppendArgs, ctx: ToolContext) -> str:
        say(f"hs before {args.token}")
        wait_for_go()
        fd = os.open(workspace / APPEND_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{args.token} {ctx.idempotency_key}\n".encode())
        finally:
            os.close(fd)
        say(f"hs after {args.token}")
        wait_for_go()
        return f"appended {args.token}"

    return Tool(
        name="k9_append", description="Append a token line to the log.", args_model=AppendArgs, func=append,
        risk="low", idempotent=False, family="k9",
    )


def die_before_checkpoint(n: int) -> None:
    """SIGKILL this process as it is about to save its n-th checkpoint, once the writes before it are saved.

    A node's writes are committed when it finishes and the checkpoint that
    applies them comes after: a kill in between is a moment random timing
    only sometimes hits, so the suite also aims at it exactly. The barrier is
    a no-op unit of work on the database's single worker thread: it runs after
    every write queued before it (first in, first out), so no sleep is needed.
    """
    from kasloop.checkpoints.sqlite import SqliteDatabase as Database

    init = Database.__init__
    seen = {"checkpoints": 0}

    def patched_init(self: Database, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        put = self.saver.aput

        async def aput(*a: Any, **kw: Any) -> Any:
            seen["checkpoints"] += 1
            if seen["checkpoints"] == n:
                await self.call(lambda conn: None)  # the node's writes, queued before, are committed now
                say("dying before checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)
            return await put(*a, **kw)

        self.saver.aput = aput  # type: ignore[method-assign]

    Database.__init__ = patched_init  # type: ignore[method-assign]


def make_agent(setup: dict[str, Any]) -> Agent:
    workspace = Path(setup["workspace"])
    config = AgentConfig(
        autonomy=setup["autonomy"],
        model=f"scripted:{setup['script']}",
        tools=["files_write", "email_send", "k9"],
        workspace=workspace,
        budgets=Budgets(max_steps=None),
        tool_settings={
            "email": {
                "from_address": SENDER,
                "smtp": {"host": "127.0.0.1", "port": setup["smtp_port"], "security": "plain", "timeout": 10},
            }
        },
    )
    return Agent(config, home=setup["home"], tools=[make_append_tool(workspace)])


async def go(agent: Agent, goal: str) -> Any:
    """Resume the thread; start it if it does not exist or died before its first checkpoint."""
    try:
        await agent.status(THREAD)
    except ThreadNotFound:
        say("path run: no thread")
        return await agent.run(goal, thread_id=THREAD)
    try:
        say("path resume")
        return await agent.resume(THREAD)
    except UsageError as exc:
        if "has no checkpoint" not in exc.message:
            raise
        say("path run: no checkpoint")
        return await agent.run(goal, thread_id=THREAD)


async def main_async(setup: dict[str, Any], mode: str, args: list[str]) -> Any:
    agent = make_agent(setup)
    if mode == "go":
        return await go(agent, setup["goal"])
    if mode == "approve":
        return await agent.approve(args[0], channel="kill9")
    if mode == "respond":
        return await agent.respond(args[0], args[1], channel="kill9")
    raise SystemExit(f"unknown mode {mode!r}")


def main() -> None:
    setup = json.loads(Path(sys.argv[1]).read_text())
    mode, args = sys.argv[2], sys.argv[3:]
    if mode == "go-and-die":
        die_before_checkpoint(int(args[0]))
        mode = "go"
    say("ready")
    result = asyncio.run(main_async(setup, mode, args))
    say("result " + json.dumps(result.to_json()))


if __name__ == "__main__":
    main()
