"""Goals on the embedded local model: how often does the framework get them done, and how fast?

Runs a fixed set of small goals, each several times, on the real local model
(``kasloop local-model install`` first), at autonomy level 4, or at level 3
where a goal's call needs one approval (decided by a reviewer that approves
only the expected call, as the demo's human does).

The goals come in two sets, both written before they were measured:
``TUNING`` is what prompts and heuristics may be changed against (it holds the
first 13 goals and the README demo's own goal); ``HELD_OUT`` is never used
while changing prompts, heuristics or the chat template. Its figure is the
honest one: change nothing because a held-out goal fails, add the case to
``TUNING`` instead and measure again. A goal counts
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
    python benchmarks/local_model.py --set held-out          # only one set
"""

from __future__ import annotations

import argparse
import json
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kasloop import Agent, AgentConfig, Budgets  # noqa: E402
from kasloop.cli.demo import LOCAL_FILES, LOCAL_GOAL, LOCAL_PATH, Review, file_as_asked, review  # noqa: E402
from kasloop.config.schema import PolicyRule  # noqa: E402
from kasloop.models.local_server import start  # noqa: E402
from kasloop.steps import split_steps  # noqa: E402


@dataclass(frozen=True)
class Goal:
    name: str
    text: str
    tools: list[str]
    setup: dict[str, str]
    check: Callable[[Path], bool]
    ask: tuple[str, str] | None = None
    """(tool, path): run at level 3 with an `ask` rule for this call; the reviewer approves only it."""


def _text(ws: Path, name: str) -> str:
    path = ws / name
    return path.read_text().strip() if path.is_file() else ""


TUNING = [
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
    Goal("demo", LOCAL_GOAL, ["files_write"], dict(LOCAL_FILES), file_as_asked, ask=("files_write", LOCAL_PATH)),
    Goal("todo3", "Create todo.md containing the line: call the plumber.", ["files_write"], {},
         lambda ws: _text(ws, "todo.md").lower().rstrip(".") == "call the plumber", ask=("files_write", "todo.md")),
    Goal("purge3", "Delete the file cache.tmp.", ["files_delete"], {"cache.tmp": "x\n"},
         lambda ws: not (ws / "cache.tmp").exists(), ask=("files_delete", "cache.tmp")),
    Goal("rename", "Rename draft.txt to final.txt.", ["files_move"], {"draft.txt": "text\n"},
         lambda ws: _text(ws, "final.txt") == "text" and not (ws / "draft.txt").exists()),
    Goal("shout", "Create shout.txt containing the word HELLO.", ["files_write"], {},
         lambda ws: _text(ws, "shout.txt").rstrip(".!") == "HELLO"),
    Goal("find", "Find the file that contains the word banana and write its name into found.txt.", ["files_search", "files_write"],
         {"a.txt": "apple\n", "b.txt": "banana\n"}, lambda ws: "b.txt" in _text(ws, "found.txt")),
]

HELD_OUT = [
    # Never run while changing prompts, heuristics or the chat template (see the module docstring).
    Goal("city", "Create the file city.txt containing the word Paris.", ["files_write"], {},
         lambda ws: _text(ws, "city.txt").rstrip(".") == "Paris"),
    Goal("agenda", "Write the line Meeting at 3pm into agenda.txt.", ["files_write"], {},
         lambda ws: "Meeting at 3pm" in _text(ws, "agenda.txt")),
    Goal("shopping", "Create shopping.txt listing eggs, bread and milk, one per line.", ["files_write"], {},
         lambda ws: [line.strip().lower() for line in _text(ws, "shopping.txt").splitlines()] == ["eggs", "bread", "milk"]),
    Goal("templog", "Delete the file temp.log.", ["files_delete"], {"temp.log": "noise\n"},
         lambda ws: not (ws / "temp.log").exists()),
    Goal("second", "Append the line second to the file list.txt.", ["files_append"], {"list.txt": "first\n"},
         lambda ws: [line.strip() for line in _text(ws, "list.txt").splitlines()] == ["first", "second"]),
    Goal("backup", "Read source.txt and write the same text into backup.txt.", ["files_read", "files_write"], {"source.txt": "keep me safe\n"},
         lambda ws: _text(ws, "backup.txt") == "keep me safe"),
    Goal("nested", "Create the file notes/today.md with the text Buy stamps.", ["files_write"], {},
         lambda ws: "Buy stamps" in _text(ws, "notes/today.md")),
    Goal("swap", "Delete draft1.txt, then create final.txt with the text approved.", ["files_delete", "files_write"], {"draft1.txt": "wip\n"},
         lambda ws: not (ws / "draft1.txt").exists() and _text(ws, "final.txt").lower().rstrip(".") == "approved"),
    Goal("twofiles", "Create a.txt with the text alpha and create b.txt with the text beta.", ["files_write"], {},
         lambda ws: _text(ws, "a.txt") == "alpha" and _text(ws, "b.txt") == "beta"),
    Goal("guests", "Read name.txt and append its text to guests.txt.", ["files_read", "files_append"], {"name.txt": "Maria\n", "guests.txt": "Tom\n"},
         lambda ws: _text(ws, "guests.txt").startswith("Tom") and "Maria" in _text(ws, "guests.txt")),
    Goal("index", "List the files in the workspace and write their names into index.txt.", ["files_list", "files_write"],
         {"x.md": "x\n", "y.md": "y\n"}, lambda ws: "x.md" in _text(ws, "index.txt") and "y.md" in _text(ws, "index.txt")),
    Goal("yes", "Write the word yes into reply.txt.", ["files_write"], {},
         lambda ws: _text(ws, "reply.txt").lower().rstrip(".") == "yes"),
    Goal("version", "Create version.txt containing 1.0.0", ["files_write"], {},
         lambda ws: _text(ws, "version.txt") == "1.0.0"),
    Goal("move", "Rename old_name.txt to new_name.txt.", ["files_move"], {"old_name.txt": "content\n"},
         lambda ws: _text(ws, "new_name.txt") == "content" and not (ws / "old_name.txt").exists()),
    Goal("ok", "Create the file status.txt containing the text OK", ["files_write"], {},
         lambda ws: _text(ws, "status.txt").rstrip(".") == "OK"),
    Goal("changelog", "Append the line error fixed to the file changelog.md.", ["files_append"], {"changelog.md": "# Changes\n"},
         lambda ws: _text(ws, "changelog.md").startswith("# Changes") and "error fixed" in _text(ws, "changelog.md")),
    Goal("memo3", "Create memo.txt containing the line: Lunch is at noon.", ["files_write"], {},
         lambda ws: _text(ws, "memo.txt").rstrip(".") == "Lunch is at noon", ask=("files_write", "memo.txt")),
    Goal("junk3", "Delete the file junk.txt.", ["files_delete"], {"junk.txt": "junk\n"},
         lambda ws: not (ws / "junk.txt").exists(), ask=("files_delete", "junk.txt")),
    Goal("bills3", "Append the line paid to the file bills.txt.", ["files_append"], {"bills.txt": "rent\n"},
         lambda ws: [line.strip() for line in _text(ws, "bills.txt").splitlines()] == ["rent", "paid"], ask=("files_append", "bills.txt")),
    Goal("script", "Create the file hello.py containing: print('hi')", ["files_write"], {},
         lambda ws: "print(" in _text(ws, "hello.py") and "hi" in _text(ws, "hello.py")),
    Goal("seven", "Write the number 7 into count.txt.", ["files_write"], {},
         lambda ws: _text(ws, "count.txt") == "7"),
    Goal("colors", "Create the file colors.txt with the lines red and green.", ["files_write"], {},
         lambda ws: [line.strip().lower() for line in _text(ws, "colors.txt").splitlines()] == ["red", "green"]),
]

SETS = {"tuning": TUNING, "held-out": HELD_OUT}


@dataclass
class Outcome:
    goal: str
    ok: bool
    status: str
    seconds: float
    model_calls: int
    output_tokens: int
    decide_seconds: float
    story: str = ""
    """With ``--explain``, for a failed run: the calls the model made, its last answer and the files it left."""


def reviewed(goal: Goal, request: dict[str, Any]) -> Review:
    """The reviewing human of a level-3 goal: the demo's own for the demo goal, else tool and path must match."""
    if goal.name == "demo":
        return review(request)
    assert goal.ask is not None
    tool, path = goal.ask
    got = str((request.get("args") or {}).get("path", "")).strip().removeprefix("./")
    if request.get("tool") == tool and got == path:
        return Review(True, "as asked")
    return Review(False, f"the goal needs `{tool}` on {path}, not `{request.get('tool')}` on `{got}`")


def _story(events: list[dict[str, Any]], output: str, ws: Path) -> str:
    """What a failed run did, for reading (never for changing prompts against a held-out goal)."""
    lines = []
    for event in events:
        if event["kind"] in ("decide", "tool", "error", "approval_decision", "self_diagnose"):
            said = {k: v for k, v in event.items() if k not in ("ts", "thread", "step", "kind", "source")}
            lines.append(f"      {event['kind']} {json.dumps(said, default=str)[:220]}")
    lines.append(f"      answer {output[:160]!r}")
    for path in sorted(p for p in ws.rglob("*") if p.is_file()):
        lines.append(f"      file {path.relative_to(ws)} = {path.read_text(errors='replace')[:120]!r}")
    return "\n".join(lines)


async def run_goal(goal: Goal, base: Path, *, seed: int = 1234, guided: bool = True, explain: bool = False) -> Outcome:
    ws = base / "ws"
    ws.mkdir(parents=True)
    for name, text in goal.setup.items():
        (ws / name).write_text(text)
    rules = [PolicyRule(tool=goal.ask[0], args={"path": goal.ask[1]}, action="ask")] if goal.ask else []
    config = AgentConfig(
        autonomy=3 if goal.ask else 4, model="local", tools=goal.tools, workspace=ws, budgets=Budgets(max_steps=8), retry_backoff=0.1,
        model_seed=seed, guide_steps=None if guided else False, rules=rules,
    )
    agent = Agent(config, home=base / ".kasloop")
    started = time.perf_counter()
    try:
        result = await agent.run(goal.text)
        decisions = 0
        while goal.ask and result.status == "waiting_approval" and result.approvals[0]["kind"] == "tool_call" and decisions < 4:
            verdict = reviewed(goal, result.approvals[0])
            decisions += 1
            if verdict.approve:
                result = await agent.approve(result.approvals[0]["approval_id"], by="bench")
            else:
                result = await agent.reject(result.approvals[0]["approval_id"], verdict.reason, by="bench")
        status, usage = result.status, result.usage
    except Exception as exc:  # noqa: BLE001 - a crash is a failed goal; the figure must show it
        print(f"  {goal.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Outcome(goal.name, False, "crashed", time.perf_counter() - started, 0, 0, 0.0)
    seconds = time.perf_counter() - started
    events = await agent.history(result.thread)
    decide_seconds = sum(e["ts"] - prev["ts"] for prev, e in zip(events, events[1:]) if e["kind"] in ("decide", "error") and e.get("source", "model") == "model")
    ok = status == "done" and goal.check(ws)
    story = _story(events, result.output or "", ws) if explain and not ok else ""
    return Outcome(goal.name, ok, status, seconds, usage["model_calls"], usage["output_tokens"], decide_seconds, story)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per goal, each with another seed (default 3)")
    parser.add_argument("--baseline", action="store_true", help="also run every goal without guided steps and compare")
    parser.add_argument("--set", choices=["all", *SETS], default="all", help="which goals: tuning, held-out or all (default)")
    parser.add_argument("--only", default="", help="comma-separated goal names: run only these (e.g. to read why they fail)")
    parser.add_argument("--explain", action="store_true", help="print what each failed run did: calls, errors, answer, files")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    info = start()
    print(f"local model server: {info['base_url']} (pid {info['pid']})")
    chosen = {name: [g for g in goals if not only or g.name in only] for name, goals in SETS.items() if args.set in ("all", name)}
    chosen = {name: goals for name, goals in chosen.items() if goals}
    outcomes: list[Outcome] = []
    unguided: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="kasloop-local-bench-") as tmp:
        for set_name, goals in chosen.items():
            print(f"\n{set_name} set ({len(goals)} goals):")
            for round_no in range(args.repeat):
                seed = 1234 + 1000 * round_no
                for goal in goals:
                    outcome = await run_goal(goal, Path(tmp) / f"{goal.name}-{round_no}", seed=seed, explain=args.explain)
                    outcomes.append(outcome)
                    line = f"  {goal.name:<9} run {round_no + 1}: {'ok ' if outcome.ok else 'FAIL'} {outcome.status:<16} {outcome.seconds:5.1f} s, {outcome.model_calls} model calls"
                    if args.baseline:
                        base = await run_goal(goal, Path(tmp) / f"{goal.name}-{round_no}-unguided", seed=seed, guided=False)
                        unguided.append(base)
                        line += f"   unguided: {'ok ' if base.ok else 'FAIL'} {base.status}"
                    print(line + (f"\n{outcome.story}" if outcome.story else ""), flush=True)
    print(f"\n{'set':<9} {'goal':<10} {'level':>5} {'steps':>5} {'completed':>10}" + (f" {'unguided':>10}" if unguided else ""))
    for set_name, goals in chosen.items():
        for goal in goals:
            mine = [o for o in outcomes if o.goal == goal.name]
            theirs = [o for o in unguided if o.goal == goal.name]
            row = f"{set_name:<9} {goal.name:<10} {3 if goal.ask else 4:>5} {len(split_steps(goal.text)):>5} {sum(o.ok for o in mine):>6} / {len(mine)}"
            print(row + (f" {sum(o.ok for o in theirs):>6} / {len(theirs)}" if theirs else ""))
    print()
    for set_name, goals in chosen.items():
        names = {g.name for g in goals}
        mine = [o for o in outcomes if o.goal in names]
        done = sum(o.ok for o in mine)
        line = f"{set_name} success rate: {done}/{len(mine)} = {done / len(mine):.0%}" + (" (target >= 80%)" if set_name == "held-out" else "")
        theirs = [o for o in unguided if o.goal in names]
        if theirs:
            base_done = sum(o.ok for o in theirs)
            line += f"; unguided (guide_steps = false), same goals and seeds: {base_done}/{len(theirs)} = {base_done / len(theirs):.0%}"
        print(line)
    turns = [o.seconds / o.model_calls for o in outcomes if o.model_calls]
    decide_time = sum(o.decide_seconds for o in outcomes)
    tokens = sum(o.output_tokens for o in outcomes)
    print(f"median seconds per model turn (run wall time / model calls): {statistics.median(turns):.2f}")
    print(f"median seconds per run: {statistics.median(o.seconds for o in outcomes):.2f}")
    if decide_time:
        print(f"output tokens per second of model time (incl. prompt evaluation): {tokens / decide_time:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
