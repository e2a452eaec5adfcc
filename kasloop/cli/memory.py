"""``kasloop memory list|add|search|delete|export|import``: the long-term memory of a kasloop home.

Thin commands over :class:`kasloop.memory.long_term.LongTermMemory`: each opens the
home's database, uses the namespace from ``tool_settings.memory`` (the one
the agent's ``remember`` / ``recall`` use) and prints a table or ``--json``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from kasloop.checkpoints import open_database
from kasloop.cli._common import ConfigOpt, DbOpt, HomeOpt, JsonOpt, make_agent
from kasloop.cli._console import out, print_json
from kasloop.errors import UsageError
from kasloop.memory.items import DEFAULT_NAMESPACE, KINDS, MemoryItem
from kasloop.memory.long_term import LongTermMemory

__all__ = ["app", "register"]

T = TypeVar("T")

app = typer.Typer(help="Long-term memory: goals, learnings and notes shared by every thread of this home.", no_args_is_help=True)

KindOpt = Annotated[str | None, typer.Option("--kind", help=f"One of {', '.join(KINDS)}.")]
FormatOpt = Annotated[str | None, typer.Option("--format", help="json or markdown (default: from the file suffix).")]


def _with_memory(home: Path | None, db: str | None, config: Path | None, action: Callable[[LongTermMemory], Awaitable[T]]) -> T:
    """Open the home's database and memory, run ``action``, close both."""
    agent = make_agent(home=home, db=db, config_file=config)
    namespace = (agent.config.tool_settings.get("memory") or {}).get("namespace", DEFAULT_NAMESPACE)

    async def main() -> T:
        async with open_database(agent.db_path) as database:
            memory = await LongTermMemory.open(database, namespace)
            try:
                return await action(memory)
            finally:
                memory.close()

    return asyncio.run(main())


def _kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind `{kind}` does not exist; use one of {', '.join(KINDS)}.")
    return kind


def _limit(limit: int | None) -> int | None:
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be 1 or more, got `{limit}`.")
    return limit


def _table(title: str, items: list[MemoryItem], *, scores: bool = False) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("key", "kind", *(["score"] if scores else []), "updated", "tags", "text"):
        table.add_column(col, overflow="fold")
    for i in items:
        score = [f"{i.score:.2f}" if i.score is not None else "-"] if scores else []
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.updated_at))
        table.add_row(i.key, i.kind, *score, when, ", ".join(i.tags), i.text[:300])
    return table


def _print_items(items: list[MemoryItem], *, as_json: bool, title: str, empty: str, scores: bool = False) -> None:
    if as_json:
        print_json([{**i.to_json(), **({"score": i.score} if scores else {})} for i in items])
    elif not items:
        out.print(empty)
    else:
        out.print(_table(title, items, scores=scores))


@app.command("list")
def list_cmd(
    kind: KindOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the N most recently updated.")] = None,
    home: HomeOpt = None, db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False,
) -> None:
    """List remembered items, most recently updated first."""
    chosen, most = _kind(kind), _limit(limit)
    items = _with_memory(home, db, config, lambda m: m.list(chosen, most))
    _print_items(items, as_json=json_out, title="Memory", empty="Memory is empty. Add with [bold]kasloop memory add TEXT[/bold].")


@app.command("add")
def add_cmd(
    text: Annotated[str, typer.Argument(help="What to remember.")],
    kind: Annotated[str, typer.Option("--kind", help=f"One of {', '.join(KINDS)}.")] = "note",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeat for several).")] = None,
    home: HomeOpt = None, db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False,
) -> None:
    """Remember TEXT (the same kind and text again updates that item)."""
    _kind(kind)
    item = _with_memory(home, db, config, lambda m: m.add(text, kind=kind, tags=tag or (), source="cli"))
    if json_out:
        print_json(item.to_json())
    else:
        out.print(f"Remembered {item.kind} [bold]{item.key}[/bold].")


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="Words to look for.")],
    kind: KindOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="At most N items.")] = 5,
    home: HomeOpt = None, db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False,
) -> None:
    """Find items by keywords, most relevant first."""
    chosen, most = _kind(kind), _limit(limit) or 5
    items = _with_memory(home, db, config, lambda m: m.search(query, kinds=None if chosen is None else [chosen], limit=most))
    _print_items(items, as_json=json_out, title=f"Memory matching {query!r}", empty="Nothing matches.", scores=True)


@app.command("delete")
def delete_cmd(
    key: Annotated[str, typer.Argument(help="The item's key (see `kasloop memory list`).")],
    home: HomeOpt = None, db: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Forget one item."""
    if not _with_memory(home, db, config, lambda m: m.delete(key)):
        raise UsageError(f"No memory item has the key `{key}`; see the keys with `kasloop memory list`.")
    out.print(f"Forgot {key}.")


@app.command("export")
def export_cmd(
    file: Annotated[Path, typer.Argument(help="Where to write (.json or .md).")],
    fmt: FormatOpt = None,
    home: HomeOpt = None, db: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Write every item to FILE as JSON or markdown (atomically: the old file stays whole on failure)."""
    count = _with_memory(home, db, config, lambda m: m.export(file, fmt))
    out.print(f"Exported {count} items to {file}.")


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="A JSON or markdown memory export.")],
    fmt: FormatOpt = None,
    home: HomeOpt = None, db: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Add the items of FILE; a bad entry stops the import before anything is written."""
    count = _with_memory(home, db, config, lambda m: m.import_(file, fmt))
    out.print(f"Imported {count} items from {file}.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="memory")
