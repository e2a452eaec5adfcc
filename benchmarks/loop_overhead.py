"""Per-iteration overhead of kasloop's agent loop vs LangChain's ``create_agent``.

Both run in this process, against LangGraph's ``AsyncSqliteSaver`` on a real
SQLite file in a temporary folder, with a deterministic scripted model that
asks for one tool call per turn for N turns and then answers in plain text.
Both do the same tool work: kasloop's ``files_write`` body (resolve the path
in the workspace, atomic write with fsync of the file and the folder) writing
``fNNNNN.txt`` with ``iteration N``.

One iteration is one tool call:

* kasloop: perceive → decide → act; timed between consecutive ``act`` updates
  (taken from ``Agent(progress=...)``, which sees every ``astream`` update).
* create_agent: model → tools; timed between consecutive ``tools`` updates of
  ``astream(stream_mode="updates")``.

Both databases get the pragmas kasloop sets (WAL, ``synchronous=NORMAL``,
busy timeout) and both graphs run with the same checkpoint durability
(``--durability``, default ``sync``: kasloop's default; LangGraph's is ``async``), so
storage settings are not what is compared. With ``async`` a checkpoint is
written while the next step runs; writes that fall behind are finished before
the run returns, so the per-iteration medians can hide them: the table also
shows the run's wall time, the part of it after the last tool call, and wall
time / N.

Run it from the repository root (or anywhere; the
checkout's root is put on ``sys.path``) with the project's virtualenv, which
has ``langchain`` (``pip install -e .[bench]``).

Usage::

    python benchmarks/loop_overhead.py            # 1,000 iterations each
    python benchmarks/loop_overhead.py --quick    # 100 iterations each
    python benchmarks/loop_overhead.py --durability async  # checkpoints written while the next step runs
    python -m cProfile -s cumtime benchmarks/loop_overhead.py --only kasloop --iterations 300
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
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
from kasloop.tools.base import ToolContext  # noqa: E402
from kasloop.tools.files import FILES_TOOLS, WriteArgs  # noqa: E402

GOAL = "Write one small file per step, then say you are done."
WARMUP_ITERATIONS = 5
KASLOOP_RECURSION_LIMIT = 10_000  # hard-coded in Agent._drive; kasloop uses 3 supersteps per iteration
WRITE_TOOL = next(t for t in FILES_TOOLS if t.name == "files_write")


def script_turns(n: int) -> list[dict[str, Any]]:
    """N turns with one ``files_write`` call each, then a final answer."""
    turns: list[dict[str, Any]] = [
        {"content": "", "tool_calls": [{"name": "files_write", "args": {"path": f"f{i:05d}.txt", "content": f"iteration {i}"}}]}
        for i in range(n)
    ]
    turns.append({"content": "done"})
    return turns


def db_megabytes(db: Path) -> float:
    """Size of the database file plus its ``-wal`` file, in MB (10^6 bytes)."""
    total = 0
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            total += path.stat().st_size
    return total / 1e6


@dataclass
class Result:
    name: str
    iterations: int
    stamps: list[float] = field(default_factory=list)
    wall: float = 0.0
    """Seconds from the call that starts the run until it returned and the database was closed."""
    db_mb: float = 0.0
    files: int = 0
    start: float = 0.0

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


# -- kasloop ------------------------------------------------------------------------------


async def run_kasloop(n: int, base: Path, durability: str) -> Result:
    result = Result("kasloop", n)
    workspace = base / "ws"
    workspace.mkdir(parents=True)
    script = base / "script.jsonl"
    script.write_text("\n".join(json.dumps(t) for t in script_turns(n)) + "\n")
    home = base / "home"
    stamps = result.stamps

    def progress(node: str, update: dict[str, Any]) -> None:
        if node == "act":
            stamps.append(time.perf_counter())

    config = AgentConfig(
        autonomy=4, model=f"scripted:{script}", tools=["files"], workspace=workspace,
        budgets=Budgets(max_steps=None), durability=durability,
    )
    agent = Agent(config, home=home, progress=progress)
    result.start = time.perf_counter()
    outcome = await agent.run(GOAL)
    result.wall = time.perf_counter() - result.start
    if outcome.status != "done":
        raise RuntimeError(f"kasloop run ended with status {outcome.status!r}: {outcome.output}")
    result.db_mb = db_megabytes(agent.db_path)
    result.files = sum(1 for _ in workspace.glob("f*.txt"))
    return result


# -- LangChain create_agent ---------------------------------------------------------------


def make_write_tool(workspace: Path) -> StructuredTool:
    """``files_write`` for create_agent: the very function kasloop's tool runs."""
    ctx = ToolContext(workspace=workspace)

    async def files_write(path: str, content: str) -> str:
        return await WRITE_TOOL.func(WriteArgs(path=path, content=content), ctx)

    return StructuredTool.from_function(
        coroutine=files_write, name="files_write", description=WRITE_TOOL.description, args_schema=WriteArgs
    )


async def run_create_agent(n: int, base: Path, durability: str) -> Result:
    from langchain.agents import create_agent

    result = Result("create_agent", n)
    workspace = base / "ws"
    workspace.mkdir(parents=True)
    db = base / "create_agent.db"
    model = ScriptedChatModel(path="create_agent-bench", turns=script_turns(n))
    result.start = time.perf_counter()
    async with aiosqlite.connect(str(db), timeout=BUSY_TIMEOUT_MS / 1000) as conn:
        # The same storage settings kasloop's open_database uses.
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        graph = create_agent(model, tools=[make_write_tool(workspace)], system_prompt=SYSTEM_PROMPT, checkpointer=saver)
        run_config = {"configurable": {"thread_id": "bench"}, "recursion_limit": 2 * n + 10}
        last: Any = None
        async for chunk in graph.astream(
            {"messages": [HumanMessage(GOAL)]}, run_config, durability=durability, stream_mode="updates"
        ):
            if "tools" in chunk:
                result.stamps.append(time.perf_counter())
            last = chunk
        final = (last or {}).get("model", {}).get("messages", [])
        if not final or final[-1].content != "done":
            raise RuntimeError(f"create_agent did not finish with the final answer; last update: {last!r:.300}")
    result.wall = time.perf_counter() - result.start
    result.db_mb = db_megabytes(db)
    result.files = sum(1 for _ in workspace.glob("f*.txt"))
    return result


RUNNERS: dict[str, Callable[[int, Path, str], Any]] = {"kasloop": run_kasloop, "create_agent": run_create_agent}


# -- report -------------------------------------------------------------------------------


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN check


def report(results: dict[str, Result], n: int) -> None:
    head = min(100, max(n - 1, 1))
    print()
    print(f"Iterations per framework: {n}  (intervals between consecutive tool-call completions: {n - 1})")
    if n <= 200:
        print(f"note: with {n} iterations the first-100 and last-100 windows overlap")
    rows = [
        ("median ms/iter (all)", lambda r: fmt(r.median())),
        (f"median ms/iter (first {head})", lambda r: fmt(r.median(slice(None, head)))),
        (f"median ms/iter (last {head})", lambda r: fmt(r.median(slice(-head, None)))),
        ("mean ms/iter (all)", lambda r: fmt(statistics.fmean(r.intervals_ms)) if r.intervals_ms else "n/a"),
        ("p95 ms/iter (all)", lambda r: fmt(statistics.quantiles(r.intervals_ms, n=20)[-1]) if len(r.intervals_ms) > 1 else "n/a"),
        ("wall time of the run (s)", lambda r: fmt(r.wall)),
        ("  of which after last tool call (s)", lambda r: fmt(r.tail)),
        ("wall ms / iteration (wall / N)", lambda r: fmt(r.wall * 1000 / r.iterations)),
        ("database + WAL (MB)", lambda r: fmt(r.db_mb, 3)),
        ("files written", lambda r: str(r.files)),
    ]
    names = list(results)
    width = max(len(label) for label, _ in rows) + 2
    print("".join([f"{'':<{width}}", *(f"{name:>14}" for name in names)]))
    for label, get in rows:
        print("".join([f"{label:<{width}}", *(f"{get(results[name]):>14}" for name in names)]))
    for r in results.values():
        if r.tail > 0.1 * r.wall and r.tail > 0.5:
            print(
                f"note: {r.name} spent {r.tail:.1f} s after its last tool call (mostly checkpoint writes that fell behind "
                "the loop); the per-iteration medians do not include them: compare wall ms / iteration, or run --durability sync"
            )
    if "kasloop" in results and "create_agent" in results:
        k, c = results["kasloop"], results["create_agent"]
        print()
        print("ratio kasloop / create_agent of the medians (lower is better; goal <= 1.0 at 1,000 iterations):")
        for label, part in (("all", slice(None)), (f"first {head}", slice(None, head)), (f"last {head}", slice(-head, None))):
            print(f"  {label:<10} {fmt(k.median(part) / c.median(part), 3)}")


async def main_async(args: argparse.Namespace) -> None:
    n = 100 if args.quick and args.iterations is None else (args.iterations or 1000)
    if n < 2:
        raise SystemExit("--iterations must be at least 2")
    names = ["kasloop", "create_agent"] if args.only == "both" else [args.only]
    if "kasloop" in names and 3 * n + 5 > KASLOOP_RECURSION_LIMIT:
        print(f"warning: kasloop's recursion_limit of {KASLOOP_RECURSION_LIMIT} allows about {KASLOOP_RECURSION_LIMIT // 3} iterations per run")
    print(f"python {platform.python_version()} ({platform.python_implementation()}) on {platform.system()} {platform.machine()}")
    print(f"CPUs: {os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'})")
    with tempfile.TemporaryDirectory(prefix="kasloop-bench-") as tmp:
        root = Path(tmp)
        print(f"temp dir: {root}; checkpoint durability: {args.durability}")
        if not args.no_warmup:
            for name in names:  # imports, first compile, lazy caches: not part of the comparison
                await RUNNERS[name](WARMUP_ITERATIONS, root / f"warmup-{name}", args.durability)
        results: dict[str, Result] = {}
        for name in names:
            gc.collect()
            print(f"running {name}: {n} iterations ...", flush=True)
            results[name] = await RUNNERS[name](n, root / name, args.durability)
        report(results, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=None, help="tool-call iterations per framework (default 1000)")
    parser.add_argument("--quick", action="store_true", help="100 iterations (unless --iterations is given)")
    parser.add_argument("--only", choices=["both", "kasloop", "create_agent"], default="both", help="run one framework, e.g. for profiling")
    parser.add_argument(
        "--durability", choices=["async", "sync", "exit"], default="sync",
        help="LangGraph checkpoint durability for both (default sync: kasloop's default; LangGraph's is async)",
    )
    parser.add_argument("--no-warmup", action="store_true", help=f"skip the {WARMUP_ITERATIONS}-iteration warm-up run of each framework")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
