"""Per-call overhead of the command sandbox: ``shell_run`` inside bubblewrap vs unsandboxed.

Both run in this process, through the real tool (``run_tool``: policy check,
process start, output capture, session kill), on the same workspace, with the
same commands; the only difference is ``shell.sandbox`` (``"bwrap"``, the
default, against ``"none"``, the baseline). The commands are ``true`` (pure
start-up cost) and ``ls -la`` of a small folder (start-up plus a little work).
Calls alternate between the two modes so machine noise hits both alike.

Usage::

    python benchmarks/sandbox.py            # 200 calls per mode and command
    python benchmarks/sandbox.py --quick    # 30 calls
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from kasloop.safety.protected import ProtectedPaths  # noqa: E402
from kasloop.tools.base import ToolContext, ToolResources, run_tool  # noqa: E402
from kasloop.tools.registry import all_tools  # noqa: E402
from kasloop.tools.sandbox import sandbox_problem, sandbox_version  # noqa: E402

COMMANDS = ("true", "ls -la")


async def measure(calls: int) -> dict[tuple[str, str], list[float]]:
    tool = all_tools()["shell_run"]
    with tempfile.TemporaryDirectory(prefix="kasloop-bench-sandbox-") as folder:
        ws = Path(folder) / "ws"
        (ws / ".kasloop").mkdir(parents=True)
        for index in range(20):
            (ws / f"file{index}.txt").write_text("x" * index)
        protected = ProtectedPaths((ws / ".kasloop", ws / "kasloop.toml"))
        contexts = {
            mode: ToolContext(workspace=ws, resources=ToolResources(home=ws / ".kasloop" / "tools", protected=protected), extra={"shell": {"sandbox": mode}})
            for mode in ("bwrap", "none")
        }
        times: dict[tuple[str, str], list[float]] = {(m, c): [] for m in contexts for c in COMMANDS}
        for command in COMMANDS:  # warm-up: page cache, bubblewrap's probe
            for ctx in contexts.values():
                await run_tool(tool, {"command": command}, ctx)
        for _ in range(calls):
            for command in COMMANDS:
                for mode, ctx in contexts.items():
                    started = time.perf_counter()
                    result = await run_tool(tool, {"command": command}, ctx)
                    times[(mode, command)].append(time.perf_counter() - started)
                    if not result.ok:
                        raise SystemExit(f"{mode} `{command}` failed: {result.output}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="30 calls per mode and command")
    args = parser.parse_args()
    problem = sandbox_problem()
    if problem is not None:
        raise SystemExit(f"cannot benchmark the sandbox: {problem}")
    calls = 30 if args.quick else args.calls
    times = asyncio.run(measure(calls))
    print(f"{sandbox_version()} · {calls} calls per mode and command · median and p90 per call")
    print(f"{'command':<10} {'sandbox':>12} {'none':>12} {'overhead':>10} {'ratio':>7}")
    for command in COMMANDS:
        boxed = sorted(times[("bwrap", command)])
        bare = sorted(times[("none", command)])
        med_boxed, med_bare = statistics.median(boxed), statistics.median(bare)
        p90_boxed, p90_bare = boxed[int(len(boxed) * 0.9)], bare[int(len(bare) * 0.9)]
        print(
            f"{command:<10} {med_boxed * 1000:7.2f} ms   {med_bare * 1000:7.2f} ms   {(med_boxed - med_bare) * 1000:+6.2f} ms {med_boxed / med_bare:6.2f}x"
            f"   (p90 {p90_boxed * 1000:.2f} / {p90_bare * 1000:.2f} ms)"
        )


if __name__ == "__main__":
    main()
