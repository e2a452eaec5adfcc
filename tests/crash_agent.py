"""A kasloop agent process that dies inside a tool, for crash/resume tests.

Usage: python crash_agent.py HOME WORKSPACE SCRIPT AUTONOMY KIND (run GOAL | resume THREAD)

KIND: 1 idempotent; 0 not idempotent; r not idempotent, reconciled by looking
for its idempotency key in crash_runs.txt; n not idempotent, whose reconcile
always answers "did not take effect"; L1 a LangChain ``@tool`` declared
idempotent with ``kasloop.tool``; L0 a LangChain tool that declares nothing
(so: high risk, not idempotent).

The tool ``crash_once`` records that it started, and the first time it runs
it kills the process (``os._exit``) after the ledger's intent row and before
its result row: exactly the window crash safety is about.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from typing import Any

from langchain_core.tools import tool as langchain_tool
from pydantic import BaseModel

import kasloop
from kasloop import Agent, AgentConfig
from kasloop.tools import Tool, ToolContext


class NoArgs(BaseModel):
    pass


def main() -> None:
    home, workspace, script, autonomy, idempotent, mode, arg = sys.argv[1:8]
    ws = Path(workspace)

    async def crash_once(args: NoArgs, ctx: ToolContext) -> str:
        with (ws / "crash_runs.txt").open("a") as fh:
            fh.write(ctx.idempotency_key + "\n")
        marker = ws / "crashed.marker"
        if not marker.exists():
            marker.write_text("1")
            os._exit(37)
        return "crash_once finished"

    async def look_for_key(args: NoArgs, ctx: ToolContext) -> bool:
        runs = ws / "crash_runs.txt"
        return runs.exists() and ctx.idempotency_key in runs.read_text().split()

    async def never_happened(args: NoArgs, ctx: ToolContext) -> bool:
        return False

    tool: Any = Tool(name="crash_once", description="Does something fragile.", args_model=NoArgs, func=crash_once,
                     risk="low", idempotent=idempotent == "1", family="fragile", reconcile={"r": look_for_key, "n": never_happened}.get(idempotent))
    if idempotent.startswith("L"):
        @langchain_tool("crash_once")
        async def crash_once_lc() -> str:
            """Does something fragile."""
            return await crash_once(NoArgs(), ToolContext(workspace=ws, idempotency_key="langchain"))

        tool = kasloop.tool(risk="low", idempotent=True)(crash_once_lc) if idempotent == "L1" else crash_once_lc
    config = AgentConfig(autonomy=int(autonomy), model=f"scripted:{script}", tools=["files", "crash_once"], workspace=ws)
    agent = Agent(config, home=home, db=os.environ.get("KASLOOP_TEST_DB"), tools=[tool])  # a Postgres URL in its variant
    result = asyncio.run(agent.run(arg, thread_id="crashy") if mode == "run" else agent.resume(arg))
    print(json.dumps(result.to_json()))


if __name__ == "__main__":
    main()
