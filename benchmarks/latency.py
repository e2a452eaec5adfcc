"""Time to first result on the embedded local model: cold start, first turn, steady turns.

Measured on the real local model (``kasloop local-model install`` first):

* **cold start**: from launching ``llama-server`` to its ``/health`` answering ok
  (``kasloop.models.local_server.start``: what the first command pays when no server
  runs, e.g. after a reboot or ``kasloop local-model stop``);
* **first turn**: the first model call of the first kasloop run after the
  server is up; its prompt is evaluated from scratch (the server's prompt cache
  is empty);
* **next runs' first turns**: the first model call of each later run (a new
  thread on the warm server: what the next command sees);
* **steady turn**: the median of every model call after the first one.

A turn is one model call as kasloop makes it (``decide``: prompt evaluation
and generation), timed by a LangChain callback around the chat model call; tool
calls and checkpoints are not in it. Each run is a small level-4 goal with the
``files_write`` tool (the demo's goal and two like it), so a run is usually two
turns: the call, then the answer. The figures are printed with their ratios to
the steady turn, measured in the same process.

By default the benchmark starts a server of its own (a private cache folder
whose model and binary are links to the installed ones) and stops it at the
end, so a server already running for other work is neither used nor stopped
(on a 2-core machine, work that server does meanwhile slows both: the load
average is printed). ``--shared`` uses the installed cache's server instead
(starting it if needed, never stopping it) and measures no cold start. The
model file is usually in the OS page cache (it was just installed or another
server maps it): the cold start is the process start and model load from
memory, not from disk.

Usage::

    python benchmarks/latency.py              # 3 runs (about 6 turns), private server
    python benchmarks/latency.py --runs 6
    python benchmarks/latency.py --shared     # the installed server; no cold start
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.outputs import LLMResult  # noqa: E402

from kasloop import Agent, AgentConfig, Budgets  # noqa: E402
from kasloop.models.local_install import LocalPaths, local_paths  # noqa: E402
from kasloop.models.local_server import server_status, start, stop  # noqa: E402

GOALS = [
    ("Create notes.md containing the line: Remember to buy milk and call the bank.", "notes.md"),
    ("Create the file hello.txt with the content: Hello, world!", "hello.txt"),
    ("Write the number 42 into answer.txt.", "answer.txt"),
]


@dataclass
class Turn:
    run: int
    index: int
    """0 for a run's first model call."""
    seconds: float
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str = ""


class TurnTimer(BaseCallbackHandler):
    """Times every chat model call of the runs it is given to (start → end or error)."""

    run_inline = True  # called in the event loop's thread, not in an executor: no extra delay in the figure

    def __init__(self) -> None:
        self.run = 0
        self.turns: list[Turn] = []
        self._started: dict[UUID, float] = {}

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._started[run_id] = time.perf_counter()

    def _end(self, run_id: UUID, **extra: Any) -> None:
        began = self._started.pop(run_id, None)
        if began is not None:
            index = sum(1 for t in self.turns if t.run == self.run)
            self.turns.append(Turn(self.run, index, time.perf_counter() - began, **extra))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        usage: dict[str, Any] = {}
        try:
            usage = response.generations[0][0].message.usage_metadata or {}  # type: ignore[attr-defined]
        except (IndexError, AttributeError):
            pass
        self._end(run_id, input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error=type(error).__name__)


def private_cache(installed: LocalPaths, folder: Path) -> LocalPaths:
    """A cache folder of our own whose model and server binary are links to the installed ones."""
    paths = LocalPaths(folder / "llm")
    paths.model.parent.mkdir(parents=True)
    paths.server.parent.mkdir(parents=True)
    paths.model.symlink_to(installed.model)
    paths.server.symlink_to(installed.server)
    return paths


async def run_goals(runs: int, folder: Path, timer: TurnTimer) -> list[str]:
    statuses = []
    for run in range(runs):
        goal, _ = GOALS[run % len(GOALS)]
        workspace = folder / f"run{run}" / "ws"
        workspace.mkdir(parents=True)
        config = AgentConfig(autonomy=4, model="local", tools=["files_write"], workspace=workspace, budgets=Budgets(max_steps=8))
        timer.run = run
        agent = Agent(config, home=folder / f"run{run}" / ".kasloop", callbacks=[timer])
        result = await agent.run(goal)
        statuses.append(result.status)
    return statuses


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="kasloop runs on the warm server (default 3, about 2 turns each)")
    parser.add_argument("--shared", action="store_true", help="use the installed cache's server (no cold start measured)")
    args = parser.parse_args()
    installed = local_paths()
    if not installed.installed:
        print(f"The local model is not installed in {installed.root}: run `kasloop local-model install` first.", file=sys.stderr)
        return 2
    print(f"CPUs: {os.cpu_count()} · load average before: {load_average()} · model: {installed.model}")
    timer = TurnTimer()
    with tempfile.TemporaryDirectory(prefix="kasloop-latency-") as tmp:
        folder = Path(tmp)
        cold: float | None = None
        if args.shared:
            paths = installed
            was_running = bool(server_status(paths).get("healthy"))
            info = start(paths)
            print(f"server: the installed one ({'already running' if was_running else 'started'}), pid {info['pid']}")
            if was_running:
                print("  its prompt cache may hold an earlier prompt: the first turn is not a cold-cache turn")
        else:
            paths = private_cache(installed, folder / "cache")
            os.environ["KASLOOP_CACHE"] = str(folder / "cache")  # the runs' `local` model finds this server
            began = time.perf_counter()
            info = start(paths)
            cold = time.perf_counter() - began
            print(f"server: a private one, pid {info['pid']}, {info['base_url']}")
        try:
            statuses = asyncio.run(run_goals(args.runs, folder, timer))
        finally:
            if not args.shared:
                stop(paths)
    turns = timer.turns
    if len(turns) < 2:
        print(f"only {len(turns)} model call(s) were made; nothing to compare", file=sys.stderr)
        return 1
    print(f"runs: {len(statuses)} ({', '.join(statuses)}), model calls: {len(turns)}, load average after: {load_average()}")
    for t in turns:
        tokens = f"{t.input_tokens} in, {t.output_tokens} out" if t.input_tokens is not None else "tokens n/a"
        print(f"  run {t.run} turn {t.index + 1}: {t.seconds:6.2f} s  ({tokens}){'  ' + t.error if t.error else ''}")
    first = turns[0].seconds
    later_firsts = [t.seconds for t in turns[1:] if t.index == 0]
    steady = statistics.median(t.seconds for t in turns[1:])
    print()
    print(f"{'figure':<44}{'seconds':>9}{'vs steady':>11}")
    if cold is not None:
        print(f"{'cold start (launch to healthy)':<44}{cold:>9.2f}{ratio(cold, steady):>11}")
    print(f"{'first turn after the server is up':<44}{first:>9.2f}{ratio(first, steady):>11}")
    if later_firsts:
        median_later = statistics.median(later_firsts)
        label = f"next runs' first turns (median of {len(later_firsts)})"
        print(f"{label:<44}{median_later:>9.2f}{ratio(median_later, steady):>11}")
    label = f"steady turn (median of {len(turns) - 1})"
    print(f"{label:<44}{steady:>9.2f}{'1.0x':>11}")
    if cold is not None:
        total = cold + first
        print(f"{'time to first result (cold start + turn 1)':<44}{total:>9.2f}{ratio(total, steady):>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
