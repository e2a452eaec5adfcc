"""``kasloop approvals``, ``approve``, ``reject``: decide what a paused thread may do.

``approve``/``reject`` record the decision and, once every request of that
pause is decided, continue the thread in this process (``--no-resume``
only records; ``kasloop resume THREAD`` continues later).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import abort, print_approvals, print_json, print_result

__all__ = ["register"]

ResumeOpt = Annotated[bool, typer.Option("--resume/--no-resume", help="Continue the thread once all its requests are decided.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides (recorded in the audit log; default: your user name).")]


def _parse_edit(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        abort(f"--edit is not valid JSON ({exc.msg} at char {exc.pos}); pass an object like '{{\"path\": \"notes.md\"}}'.", 2)
    if not isinstance(value, dict):
        abort("--edit must be a JSON object of arguments, like '{\"path\": \"notes.md\"}'.", 2)
    return value


def register(app: typer.Typer) -> None:
    @app.command()
    def approvals(
        thread: Annotated[str | None, typer.Option("--thread", help="Only this thread.")] = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """List pending approval requests."""
        agent = make_agent(home=home, db=db, config_file=config)
        pending = asyncio.run(agent.approvals(thread))
        if json_out:
            print_json(pending)
        else:
            print_approvals(pending)

    @app.command()
    def approve(
        approval_id: Annotated[str, typer.Argument(help="Approval id from `kasloop approvals`.")],
        edit: Annotated[str | None, typer.Option("--edit", help="Run with these JSON arguments instead.")] = None,
        respond: Annotated[str | None, typer.Option("--respond", help="Do not run the call; give the model this text as its result.")] = None,
        always: Annotated[bool, typer.Option("--always", help="Also allow this tool from now on, in every thread (a standing rule).")] = False,
        resume: ResumeOpt = True,
        by: ByOpt = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Approve a pending call (optionally edited, or answered instead) and continue its thread."""
        if edit is not None and respond is not None:
            abort("--edit and --respond exclude each other; pass one.", 2)
        if always and respond is not None:
            abort("--always and --respond exclude each other: --always allows the tool to run.", 2)
        args = _parse_edit(edit) if edit is not None else None
        agent = make_agent(home=home, db=db, config_file=config)
        if respond is not None:
            result = asyncio.run(agent.respond(approval_id, respond, by=by, channel="cli", resume=resume))
        else:
            result = asyncio.run(agent.approve(approval_id, edit=args, by=by, channel="cli", resume=resume, always=always))
        print_result(result, as_json=json_out)
        raise typer.Exit(result.exit_code if resume else 0)

    @app.command()
    def reject(
        approval_id: Annotated[str, typer.Argument(help="Approval id from `kasloop approvals`.")],
        reason: Annotated[str, typer.Option("--reason", help="Why; the model is told.")] = "",
        never: Annotated[bool, typer.Option("--never", help="Also deny this tool from now on, in every thread (a standing rule).")] = False,
        resume: ResumeOpt = True,
        by: ByOpt = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Reject a pending call; the model hears the reason and plans again."""
        agent = make_agent(home=home, db=db, config_file=config)
        result = asyncio.run(agent.reject(approval_id, reason, by=by, channel="cli", resume=resume, never=never))
        print_result(result, as_json=json_out)
        raise typer.Exit(result.exit_code if resume else 0)
