"""The ``kasloop`` command: thin commands over the Python API, one exit path for errors.

Exit codes: 0 goal done · 10 waiting for approval · 11 paused by budget ·
12 escalated · 2 usage or config error · 1 internal error.
"""

from __future__ import annotations

import os
import sys

import typer

from kasloop.cli import approvals, budget, daemon, demo, graph, local_model, memory, report, rules, run, status
from kasloop.cli._console import err
from kasloop.errors import KasloopError

__all__ = ["app", "main"]

app = typer.Typer(
    name="kasloop",
    help="Autonomous agents that run for days: durable approvals, hard budgets, crash-proof resume.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for module in (run, approvals, budget, rules, status, report, daemon, demo, graph, local_model, memory):
    module.register(app)


def main() -> None:
    """Entry point: user errors print one line and exit with their code; crashes exit 1.

    ``KASLOOP_LOG=json`` writes kasloop's log records and every event as JSON lines to stderr.
    """
    if os.environ.get("KASLOOP_LOG", "").lower() == "json":
        from kasloop.logs import configure

        configure(os.environ.get("KASLOOP_LOG_LEVEL", "INFO"))
    try:
        app()
    except KasloopError as exc:
        err.print(f"[red]Error:[/red] {exc.message}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("Interrupted; the thread's last checkpoint is kept. Continue with `kasloop resume THREAD`.")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("KASLOOP_DEBUG", "").lower() in ("1", "true"):
            err.print_exception(show_locals=True)
        else:
            err.print(f"[red]Internal error:[/red] {type(exc).__name__}: {exc}. Rerun with KASLOOP_DEBUG=1 for a traceback, and please report it.", highlight=False)
        sys.exit(1)
