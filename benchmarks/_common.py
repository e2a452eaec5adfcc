"""What the benchmarks share: the two runners (kasloop and LangChain's ``create_agent``), timings, sizes, output.

Both runners drive the same deterministic scripted model (one tool call per
turn for N turns, then a plain answer) against a real SQLite file with the
same storage settings, and run the very same tool function, so the
difference measured is the framework's loop: its nodes, state and
checkpoints. One iteration is one tool call; its time is the interval
between consecutive tool completions (kasloop: ``act`` updates seen by
``Agent(progress=...)``; create_agent: ``tools`` updates of
``astream(stream_mode="updates")``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import aiosqlite  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_core.tools import StructuredTool  # noqa: E402
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: E402

from kasloop import Agent, AgentConfig, Budgets, ScriptedChatModel  # noqa: E402
from kasloop.checkpoints.sqlite import BUSY_TIMEOUT_MS  # noqa: E402
from kasloop.nodes.decide import SYSTEM_PROMPT  # noqa: E402
from kasloop.tools.base import Tool, ToolContext  # noqa: E402

__all__ = [
    "Result", "Turns", "db_megabytes", "final_turns", "fmt", "peak_rss_mb", "print_machine", "rss_mb", "run_create_agent",
    "run_kasloop",
]

Turns = Callable[[int], list[dict[str, Any]]]
"""``turns(n)``: the scripted model's N tool-call turns followed by a final answer."""


def final_turns(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One turn per call, then the final answer ``done``."""
    return [*({"content": "", "tool_calls": [c]} for c in calls), {"content": "done"}]


def db_megabytes(db: Path) -> float:
    """Size of the database file plus its ``-wal`` file, in MB (10^6 bytes)."""
    total = 0
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            total += path.stat().st_size
    return total / 1e6


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux ``/proc``; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN check


def print_machine() -> None:
    print(f"python {platform.python_version()} ({platform.python_implementation()}) on {platform.system()} {platform.machine()}")
    print(f"CPUs: {os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'})")


@dataclass
class Result:
    name: str
    iterations: int
    workspace: Path
    stamps: list[float] = field(default_factory=list)
    wall: float = 0.0
    """Seconds from the call that starts the run until it returned and the database was closed."""
    cpu: float = 0.0
    """CPU seconds this process used meanwhile (all threads): unlike wall time, barely moved by other processes' load."""
    db_mb: float = 0.0
    start: float = 0.0
    rss: dict[int, float] = field(default_factory=dict)
    """RSS in MB after the iteration numbered by the key (kasloop runner, when asked to sample)."""

    @property
    def intervals_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in zip(self.stamps, self.stamps[1:])]

    @property
    def tail(self) -> float:
        """Seconds after the last tool call: final model turn, queued checkpoint writes, closing the file."""
        return self.wall - (self.stamps[-1] - self.start) if self.stamps else float("nan")

    def median(self, part: slice = slice(None)) -> float:
        values = self.intervals_ms[part]
        return statistics.median(values) if values else float("nan")


async def run_kasloop(
    n: int, base: Path, durability: str, *, turns: Turns, goal: str, tools: list[str], extra_tools: tuple[Tool, ...] = (),
    rss_every: int = 0,
) -> Result:
    """Drive one kasloop thread (autonomy 4, no step budget) through ``turns(n)``; sample RSS every ``rss_every`` calls."""
    result = Result("kasloop", n, workspace=base / "ws")
    workspace = result.workspace
    workspace.mkdir(parents=True)
    script = base / "script.jsonl"
    script.write_text("".join(json.dumps(t) + "\n" for t in turns(n)))
    stamps = result.stamps

    def progress(node: str, update: dict[str, Any]) -> None:
        if node == "act":
            stamps.append(time.perf_counter())
            if rss_every and len(stamps) % rss_every == 0:
                result.rss[len(stamps)] = rss_mb()

    config = AgentConfig(
        autonomy=4, model=f"scripted:{script}", tools=tools, workspace=workspace,
        budgets=Budgets(max_steps=None), durability=durability,
    )
    agent = Agent(config, home=base / "home", progress=progress, tools=extra_tools)
    cpu = time.process_time()
    result.start = time.perf_counter()
    outcome = await agent.run(goal)
    result.wall = time.perf_counter() - result.start
    result.cpu = time.process_time() - cpu
    if outcome.status != "done" or len(stamps) != n:
        raise RuntimeError(f"kasloop run ended with status {outcome.status!r} after {len(stamps)} tool calls: {outcome.output}")
    result.db_mb = db_megabytes(agent.db_path)
    return result


def structured_tool(tool: Tool, workspace: Path) -> StructuredTool:
    """``tool`` for create_agent: the very function kasloop's ``act`` runs, with the same arguments model."""
    ctx = ToolContext(workspace=workspace)

    async def run(**kwargs: Any) -> str:
        out = await tool.func(tool.args_model(**kwargs), ctx)
        return out if isinstance(out, str) else out.output

    return StructuredTool.from_function(coroutine=run, name=tool.name, description=tool.description, args_schema=tool.args_model)


async def run_create_agent(n: int, base: Path, durability: str, *, tool: Tool, turns: Turns, goal: str) -> Result:
    """LangChain's ``create_agent`` on LangGraph's stock ``AsyncSqliteSaver``, with kasloop's storage pragmas."""
    from langchain.agents import create_agent

    result = Result("create_agent", n, workspace=base / "ws")
    workspace = result.workspace
    workspace.mkdir(parents=True)
    db = base / "create_agent.db"
    model = ScriptedChatModel(path="create_agent-bench", turns=turns(n))
    cpu = time.process_time()
    result.start = time.perf_counter()
    async with aiosqlite.connect(str(db), timeout=BUSY_TIMEOUT_MS / 1000) as conn:
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        graph = create_agent(model, tools=[structured_tool(tool, workspace)], system_prompt=SYSTEM_PROMPT, checkpointer=saver)
        run_config = {"configurable": {"thread_id": "bench"}, "recursion_limit": 2 * n + 10}
        last: Any = None
        async for chunk in graph.astream({"messages": [HumanMessage(goal)]}, run_config, durability=durability, stream_mode="updates"):
            if "tools" in chunk:
                result.stamps.append(time.perf_counter())
            last = chunk
        final = (last or {}).get("model", {}).get("messages", [])
        if not final or final[-1].content != "done":
            raise RuntimeError(f"create_agent did not finish with the final answer; last update: {last!r:.300}")
    result.wall = time.perf_counter() - result.start
    result.cpu = time.process_time() - cpu
    result.db_mb = db_megabytes(db)
    return result
