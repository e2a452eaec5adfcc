"""Goals on the embedded local model: how often does the framework get them done, and how fast?

Runs a fixed set of small goals, each several times, at autonomy level 4 on
the real local model (``kasloop local-model install`` first). A goal counts
as completed when the run ends ``done`` *and* its check on the workspace
passes; recovery is the framework's own (retries, errors fed back to the
model): no run is retried here. Prints the success rate per goal and overall,
the median seconds per model turn, and generation speed. Each repeat samples with another seed
(``model_seed``), so repeats measure how often a goal works, not one lucky
draw. With ``--baseline`` every run is made a second time without guided
steps (``guide_steps = false``), in the same process, and both rates are
printed.

Usage::

    python benchmarks/local_model.py                         # every goal 3 times
    python benchmarks/local_model.py --repeat 1              # a quick look
    python benchmarks/local_model.py --repeat 2 --baseline   # and the same runs unguided
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kasloop import Agent, AgentConfig, Budgets  # noqa: E402
from kasloop.local_server import start  # noqa: E402
from kasloop.steps import split_steps  # noqa: E402


@dataclass(frozen=True)
class Goal:
    name: str
    text: str
    tools: list[str]
    setup: dict[str, str]
    check: Callable[[Path], bool]


def _text(ws: Path, name: str) -> str:
    path = ws / name
    return path.read_text().strip() if path.is_file() else ""


GOALS = [
    Goal("hello", "Create the file hello.txt with the content: Hello, world!", ["files_write"], {},
         lambda ws: _text(ws, "hello.txt") == "Hello, world!"),
    Goal("answer", "Write the number 42 into answer.txt.", ["files_write"], {},
         lambda ws: "42" in _text(ws, "answer.txt")),
    Goal("greeting", "Create greeting.txt containing the text Hi Bob", ["files_write"], {},
         lambda ws: "Hi Bob" in _text(ws, "greeting.txt")),
    Goal("numbers", "Create numbers.txt containing the numbers 1, 2 and 3, one per line.", ["files_write"], {},
         lambda ws: [line.strip() for line in _text(ws, "numbers.txt").splitlines()] == ["1", "2", "3"]),
    Goal("delete", "Delete the file old.txt.", ["files_delete"], {"old.txt": "obsolete\n"},
         lambda ws: not (ws / "old.txt").exists()),
    Goal("append", "Append the line done to the file log.txt.", ["files_append"], {"log.txt": "started\n"},
         lambda ws: _text(ws, "log.txt").startswith("started") and "done" in _text(ws, "log.txt")),
    Goal("docs", "Create the file docs/index.md with the title Docs.", ["files_write"], {},
         lambda ws: "Docs" in _text(ws, "docs/index.md")),
    Goal("copy", "Read a.txt and write the same text into b.txt.", ["files_read", "files_write"], {"a.txt": "apples and pears\n"},
         lambda ws: _text(ws, "b.txt") == "apples and pears"),
    Goal("list", "List the files in the workspace and write their names into files.txt.", ["files_list", "files_write"],
         {"red.txt": "r\n", "blue.txt": "b\n"}, lambda ws: "red.txt" in _text(ws, "files.txt") and "blue.txt" in _text(ws, "files.txt")),
    Goal("color", "Create the file color.txt that says: blue", ["files_write"], {},
         lambda ws: "blue" in _text(ws, "color.txt").lower()),
    Goal("carry", "Read notes.txt and append its text to log.txt.", ["files_read", "files_append"],
         {"notes.txt": "call Ann\n", "log.txt": "monday\n"}, lambda ws: _text(ws, "log.txt").startswith("monday") and "call Ann" in _text(ws, "log.txt")),
    Goal("replace", "Delete old.txt, then create new.txt with the text fresh.", ["files_delete", "files_write"], {"old.txt": "stale\n"},
         lambda ws: not (ws / "old.txt").exists() and "fresh" in _text(ws, "new.txt").lower()),
    Goal("pair", "Create one.txt with the text 1 and create two.txt with the text 2.", ["files_write"], {},
         lambda ws: _text(ws, "one.txt") == "1" and _text(ws, "two.txt") == "2"),
]


@dataclass
class Outcome:
    goal: str
    ok: bool
    status: str
    seconds: float
    model_calls: int
    output_tokens: int
    decide_seconds: float


async def run_goal(goal: Goal, base: Path, *, seed: int = 1234, guided: bool = True) -> Outcome:
    ws = base / "ws"
    ws.mkdir(parents=True)
    for name, text in goal.setup.items():
        (ws / name).write_text(text)
    config = AgentConfig(
        autonomy=4, model="local", tools=goal.tools, workspace=ws, budgets=Budgets(max_steps=8), retry_backoff=0.1,
        model_seed=seed, guide_steps=None if guided else False,
    )
    agent = Agent(config, home=base / ".kasloop")
    started = time.perf_counter()
    try:
        result = await agent.run(goal.text)
        status, usage = result.status, result.usage
    except Exception as exc:  # noqa: BLE001 - a crash is a failed goal; the figure must show it
        print(f"  {goal.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Outcome(goal.name, False, "crashed", time.perf_counter() - started, 0, 0, 0.0)
    seconds = time.perf_counter() - started
    events = await agent.history(result.thread)
    decide_seconds = sum(e["ts"] - prev["ts"] for prev, e in zip(events, events[1:]) if e["kind"] in ("decide", "error") and e.get("source", "model") == "model")
    ok = status == "done" and goal.check(ws)
    return Outcome(goal.name, ok, status, seconds, usage["model_calls"], usage["output_tokens"], decide_seconds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per goal, each with another seed (default 3)")
    parser.add_argument("--baseline", action="store_true", help="also run every goal without guided steps and compare")
    args = parser.parse_args()
    info = start()
    print(f"local model server: {info['base_url']} (pid {info['pid']})")
    outcomes: list[Outcome] = []
    unguided: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="kasloop-local-bench-") as tmp:
        for round_no in range(args.repeat):
            seed = 1234 + 1000 * round_no
            for goal in GOALS:
                outcome = await run_goal(goal, Path(tmp) / f"{goal.name}-{round_no}", seed=seed)
                outcomes.append(outcome)
                line = f"  {goal.name:<9} run {round_no + 1}: {'ok ' if outcome.ok else 'FAIL'} {outcome.status:<16} {outcome.seconds:5.1f} s, {outcome.model_calls} model calls"
                if args.baseline:
                    base = await run_goal(goal, Path(tmp) / f"{goal.name}-{round_no}-unguided", seed=seed, guided=False)
                    unguided.append(base)
                    line += f"   unguided: {'ok ' if base.ok else 'FAIL'} {base.status}"
                print(line, flush=True)
    print(f"\n{'goal':<10} {'steps':>5} {'completed':>10}" + (f" {'unguided':>10}" if unguided else ""))
    for goal in GOALS:
        mine = [o for o in outcomes if o.goal == goal.name]
        theirs = [o for o in unguided if o.goal == goal.name]
        row = f"{goal.name:<10} {len(split_steps(goal.text)):>5} {sum(o.ok for o in mine):>6} / {len(mine)}"
        print(row + (f" {sum(o.ok for o in theirs):>6} / {len(theirs)}" if theirs else ""))
    done = sum(o.ok for o in outcomes)
    turns = [o.seconds / o.model_calls for o in outcomes if o.model_calls]
    decide_time = sum(o.decide_seconds for o in outcomes)
    tokens = sum(o.output_tokens for o in outcomes)
    print(f"\nsuccess rate: {done}/{len(outcomes)} = {done / len(outcomes):.0%} (goal >= 80%)")
    if unguided:
        base_done = sum(o.ok for o in unguided)
        print(f"unguided (guide_steps = false), same goals and seeds: {base_done}/{len(unguided)} = {base_done / len(unguided):.0%}")
    print(f"median seconds per model turn (run wall time / model calls): {statistics.median(turns):.2f}")
    print(f"median seconds per run: {statistics.median(o.seconds for o in outcomes):.2f}")
    if decide_time:
        print(f"output tokens per second of model time (incl. prompt evaluation): {tokens / decide_time:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
