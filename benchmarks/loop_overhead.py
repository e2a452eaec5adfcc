"""Per-iteration overhead of kasloop's agent loop vs LangChain's ``create_agent``.

Both run in this process on a real SQLite file in a temporary folder (kasloop
with its own saver, ``KasloopSaver``; create_agent with LangGraph's
``AsyncSqliteSaver``), with a deterministic scripted model that
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
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also under `python -m cProfile`
from _common import Result, final_turns, fmt, print_machine, run_create_agent, run_kasloop  # noqa: E402

from kasloop.tools.files import FILES_TOOLS  # noqa: E402

GOAL = "Write one small file per step, then say you are done."
WARMUP_ITERATIONS = 5
WRITE_TOOL = next(t for t in FILES_TOOLS if t.name == "files_write")


def script_turns(n: int) -> list[dict[str, Any]]:
    """N turns with one ``files_write`` call each, then a final answer."""
    return final_turns([{"name": "files_write", "args": {"path": f"f{i:05d}.txt", "content": f"iteration {i}"}} for i in range(n)])


async def kasloop(n: int, base: Path, durability: str) -> Result:
    return await run_kasloop(n, base, durability, turns=script_turns, goal=GOAL, tools=["files"])


async def create_agent(n: int, base: Path, durability: str) -> Result:
    return await run_create_agent(n, base, durability, tool=WRITE_TOOL, turns=script_turns, goal=GOAL)


RUNNERS: dict[str, Callable[[int, Path, str], Any]] = {"kasloop": kasloop, "create_agent": create_agent}


# -- report -------------------------------------------------------------------------------


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
        ("files written", lambda r: str(sum(1 for _ in r.workspace.glob("f*.txt")))),
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
    print_machine()
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
