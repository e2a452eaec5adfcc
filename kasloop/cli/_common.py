"""Options shared by commands, and building an ``Agent`` from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kasloop.agent import Agent, ProgressCallback
from kasloop.config.loading import load_config

__all__ = ["ConfigOpt", "DbOpt", "HomeOpt", "JsonOpt", "make_agent"]

HomeOpt = Annotated[Path | None, typer.Option("--home", help="kasloop home (default: $KASLOOP_HOME or ./.kasloop).")]
DbOpt = Annotated[str | None, typer.Option("--db", envvar="KASLOOP_DB", help="Database: a file, sqlite:///PATH or postgresql://USER@HOST/DB (default: HOME/kasloop.db).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Config file (default: ./kasloop.toml if present).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def make_agent(
    *, home: Path | None, db: str | None, config_file: Path | None, progress: ProgressCallback | None = None, **flags: Any
) -> Agent:
    config = load_config(config_file, **flags)
    return Agent(config, home=home, db=db, progress=progress, config_file=config_file)
