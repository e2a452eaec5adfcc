"""``kasloop mcp list``: the MCP servers of kasloop.toml, their tools and the risk kasloop gives each."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from kasloop.cli._common import ConfigOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import abort, out, print_json
from kasloop.tools.mcp import describe_servers

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    mcp_app = typer.Typer(help="MCP servers ([mcp.NAME] in kasloop.toml).", no_args_is_help=True)
    app.add_typer(mcp_app, name="mcp")

    @mcp_app.command("list")
    def list_servers(home: HomeOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
        """Reach every configured MCP server once; show its tools (as agents see them: NAME__tool) and their risk."""
        agent = make_agent(home=home, db=None, config_file=config)
        if not agent.config.mcp:
            abort("No MCP servers configured; add an [mcp.NAME] table to kasloop.toml (see docs/tools.md#mcp-servers).", 2)
        servers = asyncio.run(describe_servers(agent.config))
        if json_out:
            print_json(servers)
        else:
            table = Table(title="MCP servers", title_justify="left")
            for col in ("server", "tool", "risk", "idempotent", "description"):
                table.add_column(col)
            for entry in servers:
                if entry["error"]:
                    table.add_row(entry["server"], "-", "-", "-", f"[red]{entry['error']}[/red]")
                for tool in entry["tools"]:
                    table.add_row(entry["server"], tool["name"], tool["risk"], "yes" if tool["idempotent"] else "no", tool["description"])
            out.print(table)
        if any(entry["error"] for entry in servers):
            raise typer.Exit(2)
