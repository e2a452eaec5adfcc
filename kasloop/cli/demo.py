"""``kasloop demo``: a scripted level-3 run that writes a file, pauses for a risky delete, and finishes.

It uses the deterministic scripted model, so it needs no key and no network,
and it explains each step as it goes.
"""

from __future__ import annotations

import asyncio
import tempfile
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from kasloop.agent import Agent
from kasloop.cli._console import out, print_result
from kasloop.config import AgentConfig, PolicyRule

__all__ = ["register"]


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


LOCAL_GOAL = "Create notes.md containing the line: Remember to buy milk and call the bank."
LOCAL_FILES = {
    "todo.txt": "Buy milk. Fix the login bug. Call the bank about the card.\n",
    "ideas.txt": "A weekly newsletter about home gardening.\n",
}


async def _demo_local(folder: Path) -> int:
    workspace = folder / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    for name, text in LOCAL_FILES.items():
        (workspace / name).write_text(text)
    config = AgentConfig(
        autonomy=3, model="local", tools=["files_write"], workspace=workspace,
        rules=[PolicyRule(tool="files_write", args={"path": "notes.md"}, action="ask")],
    )
    agent = Agent(config, home=folder / ".kasloop")
    _say(f"A level-3 agent on the embedded local model (Qwen2.5-Coder-0.5B via llama.cpp, no API key) works in [bold]{workspace}[/bold].")
    out.print(f"  Files: {', '.join(sorted(LOCAL_FILES))}. A rule says: ask before writing notes.md.")
    _say(f"Goal: {LOCAL_GOAL}")
    result = await agent.run(LOCAL_GOAL)
    print_result(result, as_json=False)
    decisions = 0
    while result.status == "waiting_approval" and decisions < 5:
        request = result.approvals[0]
        if request["kind"] != "tool_call":
            _say(f"The agent is stuck and asks for help: {request['reason']}")
            out.print("  A small local model sometimes gets lost; with --model openai:NAME the same goal is routine.")
            break
        _say(f"Paused for approval of `{request['tool']}` {request['args']} ({request['reason']}). Approving it as the human.")
        result = await agent.approve(request["approval_id"], by="demo", channel="demo")
        decisions += 1
        print_result(result, as_json=False)
    _say("What the agent did (from the event log):")
    for event in await agent.history(result.thread):
        if event["kind"] in ("tool", "approval_decision", "self_diagnose", "error"):
            detail = event.get("tool") or event.get("decision") or event.get("action") or event.get("message") or ""
            ok = "" if event["kind"] != "tool" else ("ok" if event.get("ok") else f"failed ({event.get('error_kind')})")
            out.print(f"  {event['step']:>2} {event['kind']:<18} {str(detail)[:50]} {ok}", markup=False)
    notes = workspace / "notes.md"
    if notes.exists():
        _say("notes.md:")
        out.print(notes.read_text(), markup=False)
    return result.exit_code


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        folder: Annotated[Path | None, typer.Option("--dir", help="Where to put the demo workspace (default: a temp folder).")] = None,
        local: Annotated[bool, typer.Option("--local", help="Run a real goal on the embedded local model instead of the scripted tour.")] = False,
    ) -> None:
        """Watch an agent work: a scripted level-3 tour, or (--local) a real goal on the embedded local model."""
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="kasloop-demo-"))
        raise typer.Exit(asyncio.run(_demo_local(folder) if local else _demo(folder)))
