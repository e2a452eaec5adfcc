"""``kasloop run`` and ``kasloop resume``: drive a thread until done, waiting, paused or escalated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from kasloop.agent import RunResult
from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import err, out, print_json, print_result
from kasloop.models.chat import resolve_model_specs
from kasloop.models.structured import read_schema_file
from kasloop.tools.sandbox import sandbox_warning

__all__ = ["register"]


class LiveProgress:
    """A one-line spinner on stderr: ``step N · <node running now> · last tool X``. Silent when not on a terminal.

    A ``ProgressCallback`` with ``node_started``: the agent names each node as it starts (so the line shows
    the node that is running, not the last one that finished) and hands over each finished node's update
    (for the step count and the last tool proposed).
    """

    def __init__(self, enabled: bool, announce: str | None = None, *, console: Console | None = None) -> None:
        self.console = console or err
        self.enabled = enabled and self.console.is_terminal
        self.announce = announce if enabled else None
        self.step = 0
        self.node = "starting…"
        self.last_tool = "-"
        self._spinner = Spinner("dots", text=Text(self.node))
        self._live: Live | None = None

    @property
    def line(self) -> str:
        return f"step {self.step} · {self.node} · last tool {self.last_tool}"

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self._live = Live(self._spinner, console=self.console, transient=True, refresh_per_second=12.5)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def _started_run(self) -> None:
        if self.announce:  # said once the run really started, so a refused run prints only its error
            self.console.print(f"[dim]{self.announce}[/dim]")
            self.announce = None

    def node_started(self, node: str) -> None:
        self._started_run()
        self.node = node
        self._show()

    def __call__(self, node: str, update: dict[str, Any]) -> None:
        self._started_run()
        usage = update.get("usage")
        if usage:
            self.step = usage["steps"]
        for call in update.get("pending", []) or []:
            self.last_tool = call.get("tool", self.last_tool)
        self._show()  # the node shown stays the running one: the next start names the next node

    def handle(self, event: Any) -> None:
        """One event of the run's stream (``Agent.astream``): the line follows the run."""
        if event.kind == "node_started":
            self.node_started(event.node)
        elif event.kind == "node_finished":
            self._started_run()
            if event.step is not None:
                self.step = event.step
            self._show()
        elif event.kind == "call_proposed":
            self.last_tool = event.tool
            self._show()

    def _show(self) -> None:
        if self._live is not None:
            self._spinner.update(text=Text(self.line))
            self._live.refresh()  # drawn now, not at the next tick: the line always names the running node


def describe_model(spec: str) -> str:
    if spec == "local":
        return "local (embedded llama.cpp server with Qwen2.5-Coder-0.5B; no API key needed)"
    if spec.startswith("openai:"):
        return f"{spec} (OpenAI-compatible API)"
    return spec


async def _streamed(events: AsyncIterator[Any], progress: LiveProgress) -> RunResult:
    """Drive a run through its event stream (the live line follows it); the result from its ``Done``."""
    result: dict[str, Any] = {}
    async for event in events:
        progress.handle(event)
        if event.kind == "done":
            result = event.result
    return RunResult.model_validate({**result, "structured": "data" in result})


def _finish(result: RunResult, as_json: bool) -> None:
    print_result(result, as_json=as_json)
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        goal: Annotated[str, typer.Argument(help="What the agent should achieve.")],
        thread: Annotated[str | None, typer.Option("--thread", help="Thread id (new or existing).")] = None,
        autonomy: Annotated[int | None, typer.Option("--autonomy", help="2 approve every call · 3 approve risky calls · 4 autonomous.")] = None,
        model: Annotated[str | None, typer.Option("--model", help="scripted:FILE, openai:NAME or local.")] = None,
        workspace: Annotated[Path | None, typer.Option("--workspace", help="Folder the file tools are jailed to.")] = None,
        tools: Annotated[str | None, typer.Option("--tools", help="Comma list of tool families or tools, e.g. files.")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Budget: cycles per run.")] = None,
        team: Annotated[str | None, typer.Option("--team", help="Run as the manager of this team (`default` or a \\[team.NAME] table of kasloop.toml).")] = None,
        collaboration: Annotated[
            str | None, typer.Option("--collaboration", help="Run as this collaboration of peers (a \\[collaboration.NAME] table of kasloop.toml).")
        ] = None,
        output_schema: Annotated[
            Path | None, typer.Option("--output-schema", help="A JSON schema file the final answer must match (`--json` then has `data`).")
        ] = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Run GOAL as a thread: exits 0 done, 10 waiting for approval, 11 paused by budget, 12 escalated."""
        schema = read_schema_file(output_schema) if output_schema is not None else None
        agent = make_agent(
            home=home, db=db, config_file=config,
            autonomy=autonomy, model=model, workspace=workspace, tools=tools, max_steps=max_steps, run_team=team,
            run_collaboration=collaboration,
        )
        warning = sandbox_warning(agent.config.tool_settings)
        if warning is not None:
            err.print(warning, markup=False, style="bold red")
        announce = f"model: {describe_model(resolve_model_specs(agent.config)[0])}"
        with LiveProgress(not json_out, announce) as progress:
            result = asyncio.run(_streamed(agent.astream(goal, thread_id=thread, text=False, output=schema), progress))
        _finish(result, json_out)

    @app.command()
    def resume(
        thread: Annotated[str, typer.Argument(help="Thread id.")],
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Continue THREAD where it stopped (after a crash, once its approvals are decided, or with `tell` messages)."""
        with LiveProgress(not json_out) as progress:
            agent = make_agent(home=home, db=db, config_file=config)
            result = asyncio.run(_streamed(agent.astream_resume(thread, text=False), progress))
        _finish(result, json_out)

    @app.command()
    def tell(
        thread: Annotated[str, typer.Argument(help="Thread id.")],
        text: Annotated[str, typer.Argument(help="The instruction.")],
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Queue an instruction for THREAD; its next cycle reads it (`kasloop resume THREAD` continues a finished one)."""
        agent = make_agent(home=home, db=db, config_file=config)
        message_id = asyncio.run(agent.tell(thread, text, source="cli"))
        if json_out:
            print_json({"thread": thread, "message_id": message_id})
        else:
            out.print(f"Queued message {message_id} for [bold]{thread}[/bold]; it is read at the thread's next cycle.")
