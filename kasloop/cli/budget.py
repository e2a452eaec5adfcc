"""``kasloop budget``: show or change a thread's budgets (a paused thread then continues with ``kasloop resume``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from kasloop.guardrails.budget import LIMITS
from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import out, print_json

__all__ = ["register"]

USAGE_OF = {
    "max_steps": "steps", "max_tool_calls": "tool_calls", "max_tokens": None, "max_usd": "usd", "max_seconds": "seconds",
    "max_tokens_per_day": None, "max_usd_per_day": None,
}


def _used(limit: str, usage: dict[str, Any]) -> str:
    if limit == "max_tokens":
        return str(usage["input_tokens"] + usage["output_tokens"])
    key = USAGE_OF.get(limit)
    return f"{usage[key]:g}" if key else "(all threads)"


def register(app: typer.Typer) -> None:
    @app.command()
    def budget(
        thread: Annotated[str, typer.Argument(help="Thread id.")],
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cycles per run.")] = None,
        max_tool_calls: Annotated[int | None, typer.Option("--max-tool-calls", help="Tool calls per run.")] = None,
        max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Model tokens per run.")] = None,
        max_usd: Annotated[float | None, typer.Option("--max-usd", help="Model spend per run, USD.")] = None,
        max_seconds: Annotated[float | None, typer.Option("--max-seconds", help="Working seconds per run.")] = None,
        max_tokens_per_day: Annotated[int | None, typer.Option("--max-tokens-per-day", help="Tokens per UTC day, all threads.")] = None,
        max_usd_per_day: Annotated[float | None, typer.Option("--max-usd-per-day", help="USD per UTC day, all threads.")] = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Show THREAD's budgets and what it used; with --max-... options, change them (then `kasloop resume THREAD`)."""
        agent = make_agent(home=home, db=db, config_file=config)
        given = {
            "max_steps": max_steps, "max_tool_calls": max_tool_calls, "max_tokens": max_tokens, "max_usd": max_usd,
            "max_seconds": max_seconds, "max_tokens_per_day": max_tokens_per_day, "max_usd_per_day": max_usd_per_day,
        }
        changes = {k: v for k, v in given.items() if v is not None}
        if changes:
            asyncio.run(agent.set_budget(thread, **changes))
        [row] = asyncio.run(agent.status(thread))
        budgets = row["budgets"]
        if json_out:
            print_json({"thread": thread, "status": row["status"], "budgets": budgets, "usage": row["usage"]})
            return
        table = Table(title=f"Budgets of {thread} ({row['status']})", title_justify="left")
        for col in ("budget", "limit", "used"):
            table.add_column(col)
        for limit, unit in LIMITS.items():
            value = budgets.get(limit)
            table.add_row(f"{limit} ({unit})", "-" if value is None else f"{value:g}", _used(limit, row["usage"]))
        out.print(table)
        if changes and row["status"] == "paused_budget":
            out.print(f"Continue it with [bold]kasloop resume {thread}[/bold].")
