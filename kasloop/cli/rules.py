"""``kasloop rules``: standing allow / ask / deny rules people add while agents run (see checkpoints/rules.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import abort, out, print_json
from kasloop.config.schema import PolicyRule

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    rules_app = typer.Typer(help="Standing rules for every thread: always allow, always ask, never.", no_args_is_help=True)
    app.add_typer(rules_app, name="rules")

    @rules_app.command("list")
    def list_rules(home: HomeOpt = None, db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
        """List the standing rules (configured ones are in kasloop.toml)."""
        found = asyncio.run(make_agent(home=home, db=db, config_file=config).rules())
        if json_out:
            print_json(found)
            return
        if not found:
            out.print("No standing rules. Add one with [bold]kasloop approve ID --always[/bold] or [bold]kasloop rules add TOOL --action allow[/bold].")
            return
        table = Table(title="Standing rules", title_justify="left")
        for col in ("id", "tool", "action", "args", "by", "added"):
            table.add_column(col)
        for r in found:
            args = ", ".join(f"{k}={v}" for k, v in r["args"].items()) or "-"
            table.add_row(str(r["id"]), r["tool"], r["action"], args, r["created_by"], time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])))
        out.print(table)

    @rules_app.command("add")
    def add_rule(
        tool: Annotated[str, typer.Argument(help="Tool name or glob, e.g. files_* .")],
        action: Annotated[str, typer.Option("--action", help="allow, ask or deny.")] = "allow",
        arg: Annotated[list[str] | None, typer.Option("--arg", help="NAME=GLOB the argument must match (repeatable), e.g. path=notes/*.")] = None,
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Add a standing rule for every thread of the database (from their next step)."""
        pairs = [a.partition("=") for a in arg or []]
        if any(not name or not sep for name, sep, _ in pairs):
            abort("--arg must look like NAME=GLOB, e.g. --arg path=notes/*.", 2)
        try:
            rule = PolicyRule(tool=tool, action=action, args={name: glob for name, _, glob in pairs})  # type: ignore[arg-type]
        except ValidationError:
            abort(f"--action must be allow, ask or deny, not `{action}`.", 2)
        rule_id = asyncio.run(make_agent(home=home, db=db, config_file=config).add_rule(rule))
        out.print(f"Rule {rule_id}: {action} {tool}.")

    @rules_app.command("remove")
    def remove_rule(
        rule_id: Annotated[int, typer.Argument(help="Rule id from `kasloop rules list`.")],
        home: HomeOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Remove a standing rule."""
        asyncio.run(make_agent(home=home, db=db, config_file=config).remove_rule(rule_id))
        out.print(f"Rule {rule_id} removed.")
