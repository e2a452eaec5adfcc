"""``kasloop delete``: remove a thread for good, stopping its background processes first."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import out, print_json

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command()
    def delete(
        thread: Annotated[str, typer.Argument(help="Thread id.")],
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Delete THREAD: stop the processes it started, remove its checkpoints, approvals, events, ledger and inbox."""
        agent = make_agent(home=home, db=db, config_file=config)
        deleted = asyncio.run(agent.delete_thread(thread))
        if json_out:
            print_json(deleted)
            return
        stopped = deleted["processes_stopped"]
        processes = f"; stopped its processes {', '.join(stopped)}" if stopped else ""
        out.print(f"Deleted thread [bold]{thread}[/bold] ({deleted['rows']} rows{processes}).")
