"""``kasloop status`` and ``kasloop history``: where threads stand and what they did."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from kasloop.tools.sandbox import describe_sandbox
from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import out, print_json
from kasloop.reporting.timeline import goal_summaries
from kasloop.runtime.daemon import daemon_status

__all__ = ["register"]

_SKIP = {"id", "ts", "step", "kind"}


def _daemon_line(beat: dict[str, Any]) -> str:
    now = time.time()
    if beat["stopped_at"]:
        return f"Daemon: stopped {now - beat['stopped_at']:.0f} s ago (pid {beat['pid']}, {beat['cycles']} cycles)."
    wake = f", next wake-up in {max(0.0, beat['next_wake_at'] - now):.0f} s" if beat["next_wake_at"] else ""
    error = f", last error: {beat['last_error']}" if beat["last_error"] else ""
    return f"Daemon: pid {beat['pid']}, last heartbeat {now - beat['heartbeat_at']:.0f} s ago, {beat['cycles']} cycles{wake}{error}."


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        thread: Annotated[str | None, typer.Argument(help="Thread id (default: all threads).")] = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Show threads: status, goal, usage, pending approvals."""
        agent = make_agent(home=home, db=db, config_file=config)
        rows = asyncio.run(agent.status(thread))
        beat = asyncio.run(daemon_status(agent.db_path))
        goals = goal_summaries(rows[0]["status"], asyncio.run(agent.history(thread)), rows[0]["goal"]) if thread else []
        if json_out:
            # The daemon serves the whole database; each thread row says who drives it (null: no daemon ever ran).
            rows = [{**r, "daemon": beat} for r in rows]
            print_json({**rows[0], "goals": goals} if thread else rows)
            return
        if beat is not None:
            out.print(_daemon_line(beat))
        out.print(f"command sandbox: {describe_sandbox(agent.config.tool_settings)}", markup=False)
        if not rows:
            out.print("No threads yet. Start one with [bold]kasloop run GOAL[/bold].")
            return
        table = Table(title="Threads", title_justify="left")
        for col in ("thread", "status", "autonomy", "steps", "tool calls", "tokens", "approvals", "updated", "goal"):
            table.add_column(col, overflow="fold")
        for r in rows:
            u = r["usage"]
            table.add_row(
                r["thread"], r["status"], str(r["autonomy"]), str(u["steps"]), str(u["tool_calls"]),
                str(u["input_tokens"] + u["output_tokens"]), str(len(r["approvals"])),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["updated_at"])), r["goal"][:80],
            )
        out.print(table)
        if goals:
            per_goal = Table(title=f"Goals of {thread} (this run's usage: ${rows[0]['usage']['usd']:.4f})", title_justify="left")
            for col in ("#", "goal", "outcome", "cycles", "tool calls", "model calls", "tokens", "cost"):
                per_goal.add_column(col, overflow="fold")
            for g in goals:
                per_goal.add_row(
                    str(g["index"]), g["goal"][:60], g["outcome"], str(g["cycles"]), f"{g['tool_calls']} ({g['failed']} failed)",
                    str(g["model_calls"]), str(g["input_tokens"] + g["output_tokens"]), f"${g['usd']:.4f}",
                )
            out.print(per_goal)

    @app.command()
    def history(
        thread: Annotated[str, typer.Argument(help="Thread id.")],
        limit: Annotated[int | None, typer.Option("--limit", help="Only the last N events.")] = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Show THREAD's event log: every node, tool call, approval and error, in order."""
        agent = make_agent(home=home, db=db, config_file=config)
        events = asyncio.run(agent.history(thread, limit=limit))
        if json_out:
            print_json(events)
            return
        table = Table(title=f"History of {thread}", title_justify="left")
        for col in ("#", "time", "step", "event", "details"):
            table.add_column(col, overflow="fold")
        for e in events:
            details = json.dumps({k: v for k, v in e.items() if k not in _SKIP}, ensure_ascii=False, default=str)
            table.add_row(str(e["id"]), time.strftime("%H:%M:%S", time.localtime(e["ts"])), str(e["step"]), e["kind"], details[:300])
        out.print(table)
