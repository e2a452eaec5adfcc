"""The ``kasloop`` command: thin commands over the Python API, one exit path for errors.

Exit codes: 0 goal done · 10 waiting for approval · 11 paused by budget ·
12 escalated · 2 usage or config error · 1 internal error.
"""

from __future__ import annotations

import os
import sys

from typing import Annotated

import typer
from rich.markup import escape

from kasloop.cli import approvals, budget, daemon, delete, demo, graph, local_model, mcp, memory, report, rules, run, status
from kasloop.cli._console import err
from kasloop.errors import KasloopError, check_text

__all__ = ["app", "main"]

app = typer.Typer(
    name="kasloop",
    help="Autonomous agents that run for days: durable approvals, hard budgets, crash-proof resume.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"kasloop {version('kasloop')}")
        except PackageNotFoundError:
            print("kasloop (not installed as a package)")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print kasloop's version and exit.")] = False,
) -> None:
    """Autonomous agents that run for days: durable approvals, hard budgets, crash-proof resume."""
for module in (run, approvals, budget, rules, status, delete, report, daemon, demo, graph, local_model, memory, mcp):
    module.register(app)


def check_input(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> None:
    """Refuse arguments and ``KASLOOP_*`` variables holding bytes that are not UTF-8 (a ``UsageError``, exit 2).

    Python keeps such bytes as lone surrogates, which would fail later, far from their cause (storing a
    goal, printing a message); a goal, a ``tell`` message, a path or an id must be UTF-8 text.
    """
    for position, arg in enumerate(argv, start=1):
        check_text(arg, f"Command-line argument {position}")
    for name in sorted(environ):
        if name.startswith("KASLOOP_"):
            check_text(environ[name], f"The environment variable {name}")


def _shown(text: str) -> str:
    """An error line with every secret this process knows redacted (a provider's error can echo a key)."""
    from kasloop.safety.secrets import known_secrets

    return known_secrets().text(text)


def main() -> None:
    """Entry point: user errors print one line and exit with their code; crashes exit 1.

    ``KASLOOP_LOG=json`` writes kasloop's log records and every event as JSON lines to stderr.
    """
    try:
        check_input(sys.argv[1:], os.environ)
    except KasloopError as exc:
        err.print(f"[red]Error:[/red] {escape(exc.message)}", highlight=False)
        sys.exit(exc.exit_code)
    if os.environ.get("KASLOOP_LOG", "").lower() == "json":
        from kasloop.support.logs import configure

        configure(os.environ.get("KASLOOP_LOG_LEVEL", "INFO"))
    try:
        app()
    except KasloopError as exc:
        err.print(f"[red]Error:[/red] {escape(_shown(exc.message))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("Interrupted; the thread's last checkpoint is kept. Continue with `kasloop resume THREAD`.")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("KASLOOP_DEBUG", "").lower() in ("1", "true"):
            err.print_exception(show_locals=True)
        else:
            err.print(f"[red]Internal error:[/red] {type(exc).__name__}: {escape(_shown(str(exc)))}. Rerun with KASLOOP_DEBUG=1 for a traceback, and please report it.", highlight=False)
        sys.exit(1)
