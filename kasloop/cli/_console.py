"""One place for CLI output: results, tables, JSON, and the single exit path for errors."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from kasloop.agent import RunResult

__all__ = ["abort", "err", "out", "print_json", "print_result", "print_approvals"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_STATUS_STYLE = {"done": "green", "waiting_approval": "yellow", "paused_budget": "yellow", "escalated": "red", "failed": "red"}


def abort(message: str, code: int) -> NoReturn:
    """Print one error line to stderr and exit with ``code``."""
    err.print(f"[red]Error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _json_default(value: Any) -> Any:
    """Typed results (``Approval``, ``RunResult``) print as their JSON shape; anything else as its text."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def print_approvals(approvals: list[dict[str, Any]]) -> None:
    if not approvals:
        out.print("No pending approvals.")
        return
    table = Table(title="Pending approvals", title_justify="left")
    # The ids are what people copy into `kasloop approve` / `kasloop resume`: never wrapped or cut, at any
    # width or in a pipe; nor is the tool's name. The long columns (args, reason) fold instead.
    table.add_column("approval_id", no_wrap=True, min_width=len("ap-0123456789"))
    table.add_column("thread", no_wrap=True, min_width=len("t-0123456789"))
    table.add_column("tool", no_wrap=True, min_width=len("files_write"))
    for col in ("args", "risk", "reason", "expires"):
        table.add_column(col, overflow="fold")
    for a in approvals:
        args = json.dumps(a["args"], ensure_ascii=False)
        where = f"{a['thread']} › {a['path']}" if a.get("path") else a["thread"]  # a team's specialist: its path
        table.add_row(a["approval_id"], where, a["tool"], args[:200], a["risk"], a["reason"], _when(a["expires_at"]))
    out.print(table)
    out.print("Decide with [bold]kasloop approve ID[/bold] [--edit JSON], [bold]kasloop reject ID[/bold] --reason TEXT.")


def print_result(result: RunResult, *, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
        return
    style = _STATUS_STYLE.get(result.status, "white")
    out.print(f"thread [bold]{result.thread}[/bold]: [{style}]{result.status}[/{style}]")
    if result.output:
        out.print(result.output, markup=False)
    if result.approvals:
        print_approvals(result.approvals)
    u = result.usage
    out.print(f"[dim]steps {u['steps']} · tool calls {u['tool_calls']} · model calls {u['model_calls']} · tokens {u['input_tokens']}+{u['output_tokens']}[/dim]")
