"""``kasloop daemon``: serve every thread of the home until SIGTERM (see ``kasloop.runtime.daemon``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, make_agent
from kasloop.checkpoints.database import display_db
from kasloop.cli._console import err
from kasloop.runtime.daemon import Daemon

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command()
    def daemon(
        interval: Annotated[float, typer.Option("--interval", help="Seconds between cycles (jittered; backs off after errors).")] = 30.0,
        thread: Annotated[list[str] | None, typer.Option("--thread", help="Serve only this thread (repeatable).")] = None,
        once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit (for cron or a systemd timer).")] = False,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Keep threads moving: resume interrupted ones, continue decided approvals, read inbox messages."""
        agent = make_agent(home=home, db=db, config_file=config)
        runner = Daemon(agent.sessions, threads=thread or None, interval=interval)

        def announce() -> None:
            err.print(f"kasloop daemon on {display_db(agent.db_path)} (every {interval:g} s); SIGTERM or Ctrl-C stops it after the current node.")

        raise typer.Exit(asyncio.run(runner.run(once=once, on_start=announce)))
