"""``kasloop report THREAD``: write the thread's self-contained HTML report and print where it is."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, make_agent
from kasloop.reporting.report import write_report

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        thread: Annotated[str, typer.Argument(help="Thread id.")],
        out_file: Annotated[
            Path | None, typer.Option("--out", help="HTML file to write, or a folder for THREAD.html (default: HOME/reports/THREAD.html).")
        ] = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Write an HTML report of THREAD (timeline, tool calls, approvals, errors, cost) and print its path."""
        agent = make_agent(home=home, db=db, config_file=config)
        path = asyncio.run(write_report(agent, thread, out_file))
        # The bare path on stdout, so scripts can do `xdg-open "$(kasloop report T)"`.
        sys.stdout.write(f"{path.resolve()}\n")
