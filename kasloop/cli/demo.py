"""``kasloop demo``: a scripted level-3 run that writes a file, pauses for a risky delete, and finishes.

It uses the deterministic scripted model, so it needs no key and no network,
and it explains each step as it goes.
"""

from __future__ import annotations

import asyncio
import tempfile
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from kasloop.agent import EXIT_CODES, Agent
from kasloop.cli._console import out, print_result
from kasloop.config.schema import AgentConfig, PolicyRule

__all__ = ["LOCAL_GOAL", "LOCAL_LINE", "LOCAL_PATH", "Review", "file_as_asked", "register", "review", "run_local_demo"]


def _say(text: str) -> None:
    out.print(f"\n[bold cyan]▶[/bold cyan] {text}")


async def _demo(folder: Path) -> int:
    workspace = folder / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "draft.txt").write_text("shipped loop; approvals durable\n")
    script = folder / "level3.jsonl"
    script.write_text(resources.files("kasloop").joinpath("demo/level3.jsonl").read_text())
    config = AgentConfig(autonomy=3, model=f"scripted:{script}", tools=["files"], workspace=workspace)
    agent = Agent(config, home=folder / ".kasloop")

    _say(f"A level-3 agent (acts alone, asks before risky calls) works in [bold]{workspace}[/bold].")
    out.print("  Its model is scripted (deterministic replay), so this demo needs no API key.")
    _say("Running the goal: list the workspace, read the draft, write report.md, remove the draft.")
    result = await agent.run("Turn draft.txt into report.md and tidy up.")
    print_result(result, as_json=False)
    if result.status != "waiting_approval":
        out.print("[red]The demo expected a pause for approval.[/red]")
        return 1
    request = result.approvals[0]
    _say(
        f"It paused: `{request['tool']}` has risk `{request['risk']}`, which needs a human at level 3. "
        "The request is in the database, so it survives this process."
    )
    out.print(f"  report.md already exists: {(workspace / 'report.md').exists()} · draft.txt still exists: {(workspace / 'draft.txt').exists()}")
    out.print(f"  From any shell you could now run: [bold]kasloop approve {request['approval_id']} --home {folder / '.kasloop'}[/bold]")
    _say("Approving it (as the human), which resumes the thread from its checkpoint.")
    result = await agent.approve(request["approval_id"], by="demo", channel="demo")
    print_result(result, as_json=False)
    _say("The event log records every node, tool call and decision:")
    for event in await agent.history(result.thread):
        detail = event.get("tool") or event.get("decision") or event.get("observation") or event.get("content") or event.get("text") or ""
        out.print(f"  {event['step']:>2} {event['kind']:<18} {str(detail)[:70]}", markup=False)
    out.print(f"\n  draft.txt deleted: {not (workspace / 'draft.txt').exists()} · report.md:\n")
    out.print((workspace / "report.md").read_text(), markup=False)
    return result.exit_code


LOCAL_PATH = "notes.md"
LOCAL_LINE = "Remember to buy milk and call the bank."
LOCAL_GOAL = f"Create {LOCAL_PATH} containing the line: {LOCAL_LINE}"
LOCAL_FILES = {
    "todo.txt": "Buy milk. Fix the login bug. Call the bank about the card.\n",
    "ideas.txt": "A weekly newsletter about home gardening.\n",
}
MAX_DECISIONS = 6
"""Approvals the demo's reviewer decides before it gives up on the run."""


@dataclass(frozen=True)
class Review:
    approve: bool
    reason: str


def review(request: dict[str, Any]) -> Review:
    """The demo's human: approves a call only when it does exactly what the goal asked.

    Why a reviewer and not a rubber stamp: a person approving every call is no
    protection, and the first thing a newcomer sees should be approvals doing
    their job. A rejection's reason goes to the model, which plans again.
    """
    args = request.get("args") or {}
    if request.get("tool") != "files_write":
        return Review(False, f"the goal only asks to write {LOCAL_PATH}; `{request.get('tool')}` is not needed")
    path = str(args.get("path", "")).strip().removeprefix("./")
    if path != LOCAL_PATH:
        return Review(False, f"the goal asks for {LOCAL_PATH}, not `{path}`")
    content = str(args.get("content", ""))
    if content.strip() != LOCAL_LINE:
        shown = content if len(content) <= 60 else content[:57] + "..."
        return Review(False, f"{LOCAL_PATH} must contain exactly the line `{LOCAL_LINE}`, not `{shown}`")
    return Review(True, f"it writes exactly the line the goal asked for into {LOCAL_PATH}")


def file_as_asked(workspace: Path) -> bool:
    notes = workspace / LOCAL_PATH
    return notes.is_file() and notes.read_text().strip() == LOCAL_LINE


async def run_local_demo(folder: Path, *, seed: int | None = None, **config: Any) -> int:
    """The README's ``make demo``: a real goal on the local model, reviewed by a scripted human.

    Exit 0 only when the run ended ``done`` *and* the file is exactly as asked. ``seed`` samples
    another way (the benchmark); ``config`` overrides settings (tests drive it with a wire model).
    """
    workspace = folder / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    for name, text in LOCAL_FILES.items():
        (workspace / name).write_text(text)
    settings: dict[str, Any] = {
        "autonomy": 3, "model": "local", "tools": ["files_write"], "workspace": workspace,
        "rules": [PolicyRule(tool="files_write", args={"path": LOCAL_PATH}, action="ask")],
        **({"model_seed": seed} if seed is not None else {}), **config,
    }
    agent = Agent(AgentConfig(**settings), home=folder / ".kasloop")
    _say(f"A level-3 agent on the embedded local model (Qwen2.5-Coder-0.5B via llama.cpp, no API key) works in [bold]{workspace}[/bold].")
    out.print(f"  Files: {', '.join(sorted(LOCAL_FILES))}. A rule says: ask a human before writing {LOCAL_PATH}.")
    out.print("  The human here is the demo itself: it approves a call only if it writes exactly what the goal asks.")
    _say(f"Goal: {LOCAL_GOAL}")
    result = await agent.run(LOCAL_GOAL)
    print_result(result, as_json=False)
    decisions = 0
    while result.status == "waiting_approval" and decisions < MAX_DECISIONS:
        request = result.approvals[0]
        if request["kind"] != "tool_call":
            _say(f"The agent could not finish on its own and asks for help: {request['reason']}")
            out.print("  The 0.5B local model is small; with --model openai:NAME the same goal is routine.")
            await agent.reject(request["approval_id"], "the demo stops here", by="demo", channel="demo", resume=False)
            return EXIT_CODES["escalated"]
        verdict = review(request)
        decisions += 1
        if verdict.approve:
            _say(f"The agent asks to run `{request['tool']}` {request['args']}. The reviewer approves: {verdict.reason}.")
            result = await agent.approve(request["approval_id"], by="demo", channel="demo")
        else:
            _say(f"The agent asks to run `{request['tool']}` {request['args']}. The reviewer [bold]rejects[/bold] it: {verdict.reason}.")
            out.print("  The model reads this reason and plans again.")
            result = await agent.reject(request["approval_id"], verdict.reason, by="demo", channel="demo")
        print_result(result, as_json=False)
    _say("What the agent did (from the event log):")
    for event in await agent.history(result.thread):
        if event["kind"] in ("tool", "approval_decision", "self_diagnose", "error"):
            detail = event.get("tool") or event.get("decision") or event.get("action") or event.get("message") or ""
            if event["kind"] == "approval_decision" and event.get("reason"):
                detail = f"{detail}: {event['reason']}"
            ok = "" if event["kind"] != "tool" else ("ok" if event.get("ok") else f"failed ({event.get('error_kind')})")
            out.print(f"  {event['step']:>2} {event['kind']:<18} {str(detail)[:70]} {ok}", markup=False)
    notes = workspace / LOCAL_PATH
    if notes.exists():
        _say(f"{LOCAL_PATH}:")
        out.print(notes.read_text(), markup=False)
    if result.status != "done":
        _say(f"[red]The run did not finish ({result.status}).[/red] See `kasloop history {result.thread} --home {folder / '.kasloop'}`.")
        return result.exit_code or EXIT_CODES["escalated"]
    if not file_as_asked(workspace):
        _say(f"[red]The run ended done, but {LOCAL_PATH} is not exactly as asked.[/red]")
        return 1
    _say(f"[green]Done: {LOCAL_PATH} holds exactly the line the goal asked for.[/green]")
    return 0


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        folder: Annotated[Path | None, typer.Option("--dir", help="Where to put the demo workspace (default: a temp folder).")] = None,
        local: Annotated[bool, typer.Option("--local", help="Run a real goal on the embedded local model instead of the scripted tour.")] = False,
    ) -> None:
        """Watch an agent work: a scripted level-3 tour, or (--local) a real goal on the embedded local model."""
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="kasloop-demo-"))
        raise typer.Exit(asyncio.run(run_local_demo(folder) if local else _demo(folder)))
