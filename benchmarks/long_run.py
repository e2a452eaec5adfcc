"""A long kasloop thread: does an iteration cost the same at 10,000 as at 1, and how big does the database get?

One kasloop thread runs 10,000 iterations (one tool call each) with the
deterministic scripted model and durable checkpoints (durability ``sync``,
kasloop's default: every node's writes and checkpoint are committed before
the next node starts). The tool is ``bench_echo``, a tiny idempotent custom
tool passed with ``Agent(tools=[...])`` that returns its argument without
touching the disk, so what is measured is the loop (nodes, state,
checkpoints, act ledger, event log), not the disk's fsync. Each call has a
different argument, as real work has (the same call three times would be
stopped by loop detection).

Printed: median ms per iteration over the first and the last 1,000
iterations and their ratio (flat is the goal: bounded working memory plus
checkpoint pruning), the database size (file + WAL) and the process's peak
RSS; then, in the same process, LangChain's ``create_agent`` with the same
model script, the same tool body and the same storage settings on LangGraph's
stock ``AsyncSqliteSaver`` for 1,000 iterations, for the speed ratio.
Goals: median <= 5 ms, last/first <= 1.2, database <= 50 MB, >= 3x faster than
create_agent at 1,000 iterations.

An iteration's time is the interval between consecutive tool completions, so
iteration 1 (which has no previous one) is left out of the first window.

Usage (from the repository root, with the project's virtualenv; ``pip install -e .[bench]``)::

    python benchmarks/long_run.py           # 10,000 kasloop iterations, 1,000 create_agent (a few minutes)
    python benchmarks/long_run.py --quick   # 1,000 and 200
    python benchmarks/long_run.py --iterations 3000 --baseline 0   # no create_agent
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also under `python -m cProfile`
from _common import Result, final_turns, fmt, peak_rss_mb, print_machine, rss_mb, run_create_agent, run_kasloop  # noqa: E402

from kasloop.tools.base import Tool, ToolContext  # noqa: E402

GOAL = "Echo each number you are given, one call per step, then say you are done."
WARMUP_ITERATIONS = 5
GOALS = {"median_ms": 5.0, "last_first": 1.2, "db_mb": 50.0, "speedup": 3.0}


class EchoArgs(BaseModel):
    n: int = Field(description="The number to echo.")


async def _echo(args: EchoArgs, ctx: ToolContext) -> str:
    return f"echo {args.n}"


ECHO_TOOL = Tool(
    name="bench_echo", description="Echo a number back.", args_model=EchoArgs, func=_echo, risk="read", idempotent=True, family="bench"
)


def script_turns(n: int) -> list[dict[str, Any]]:
    """N turns with one ``bench_echo`` call each (a different number every time), then a final answer."""
    return final_turns([{"name": "bench_echo", "args": {"n": i}} for i in range(n)])


async def kasloop(n: int, base: Path, rss_every: int = 0) -> Result:
    return await run_kasloop(
        n, base, "sync", turns=script_turns, goal=GOAL, tools=["bench"], extra_tools=(ECHO_TOOL,), rss_every=rss_every
    )


async def create_agent(n: int, base: Path) -> Result:
    return await run_create_agent(n, base, "sync", tool=ECHO_TOOL, turns=script_turns, goal=GOAL)


def goal(value: float, limit: float, *, at_least: bool = False) -> str:
    met = value >= limit if at_least else value <= limit
    return f"goal {'>=' if at_least else '<='} {limit:g}: {'ok' if met else 'MISSED'}"


def table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print()
    print(title)
    width = max(40, *(len(label) + 2 for label, _, _ in rows))
    for label, value, note in rows:
        print(f"  {label:<{width}}{value:>9}   {note}".rstrip())


def report(k: Result, c: Result | None, window: int, peak_mb: float, rss_start: float) -> None:
    n = k.iterations
    first = k.median(slice(None, window - 1))  # intervals[i] is iteration i + 2
    last = k.median(slice(-window, None))
    samples = ", ".join(f"{i}: {fmt(mb, 1)}" for i, mb in sorted(k.rss.items()))
    table(f"kasloop: {n} iterations in one thread, tool bench_echo (no disk I/O), durability sync", [
        (f"median ms/iter, iterations 2-{window}", fmt(first), goal(first, GOALS["median_ms"])),
        (f"median ms/iter, iterations {n - window + 1}-{n}", fmt(last), goal(last, GOALS["median_ms"])),
        ("last / first", fmt(last / first, 3), goal(last / first, GOALS["last_first"])),
        ("median ms/iter, all", fmt(k.median()), ""),
        ("p95 ms/iter, all", fmt(statistics.quantiles(k.intervals_ms, n=20)[-1]), ""),
        ("wall ms / iteration", fmt(k.wall * 1000 / n), f"(wall time {fmt(k.wall, 1)} s)"),
        ("CPU ms / iteration", fmt(k.cpu * 1000 / n), "(this process, all threads)"),
        ("database + WAL (MB)", fmt(k.db_mb, 1), goal(k.db_mb, GOALS["db_mb"])),
        ("peak RSS of the process (MB)", fmt(peak_mb, 1), f"(RSS before the run {fmt(rss_start, 1)}; after iteration {samples})"),
    ])
    if c is None:
        return
    mine = k.median(slice(None, c.iterations - 1))
    theirs = c.median()
    tail = min(100, c.iterations - 1)
    table(f"create_agent (LangChain) on AsyncSqliteSaver: {c.iterations} iterations, same script, tool body, storage settings", [
        ("median ms/iter, all", fmt(theirs), ""),
        (f"median ms/iter, last {tail}", fmt(c.median(slice(-tail, None))), ""),
        ("wall ms / iteration", fmt(c.wall * 1000 / c.iterations), ""),
        ("CPU ms / iteration", fmt(c.cpu * 1000 / c.iterations), ""),
        ("database + WAL (MB)", fmt(c.db_mb, 1), ""),
        (f"kasloop speed-up, first {c.iterations}", f"{fmt(theirs / mine, 1)}x",
         f"(medians {fmt(theirs)} / {fmt(mine)} ms; {goal(theirs / mine, GOALS['speedup'], at_least=True)})"),
    ])


def load() -> str:
    """The 1-minute load average: other work on the machine shows up in every figure above."""
    return fmt(os.getloadavg()[0]) if hasattr(os, "getloadavg") else "?"


async def main_async(args: argparse.Namespace) -> None:
    n = args.iterations or (1000 if args.quick else 10_000)
    baseline = args.baseline if args.baseline is not None else (200 if args.quick else 1000)
    if n < 20 or (baseline and baseline < 20):
        raise SystemExit("--iterations and --baseline must be at least 20 (or --baseline 0 to skip create_agent)")
    window = min(1000, n // 10)
    print_machine()
    start_load = load()
    with tempfile.TemporaryDirectory(prefix="kasloop-long-") as tmp:
        root = Path(tmp)
        print(f"temp dir: {root}")
        await kasloop(WARMUP_ITERATIONS, root / "warmup-kasloop")
        gc.collect()
        rss_start = rss_mb()
        print(f"running kasloop: {n} iterations ...", flush=True)
        k = await kasloop(n, root / "kasloop", rss_every=max(1, n // 5))
        peak = peak_rss_mb()
        c = None
        if baseline:
            await create_agent(WARMUP_ITERATIONS, root / "warmup-create_agent")
            gc.collect()
            print(f"running create_agent: {baseline} iterations ...", flush=True)
            c = await create_agent(baseline, root / "create_agent")
        report(k, c, window, peak, rss_start)
        print(f"\nload average (1 min) at the start: {start_load}, at the end: {load()} (on {os.cpu_count()} CPUs; "
              "a load near the CPU count means other processes shared the machine and the timings are inflated)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=None, help="kasloop iterations (default 10,000; 1,000 with --quick)")
    parser.add_argument("--baseline", type=int, default=None, help="create_agent iterations (default 1,000; 200 with --quick; 0 skips it)")
    parser.add_argument("--quick", action="store_true", help="a fast check: 1,000 kasloop and 200 create_agent iterations")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
