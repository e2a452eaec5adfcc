"""Which engine a database URL names, and opening it.

``postgresql://`` (or ``postgres://``) URLs open a ``PostgresDatabase``;
anything else is a SQLite file (a path or ``sqlite:///PATH``). Both implement
``kasloop.checkpoints.database.Database``. The PostgreSQL module is imported
only when a URL names PostgreSQL: psycopg is an optional dependency
(``pip install 'kasloop[postgres]'``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from kasloop.checkpoints.database import Database, is_postgres_url
from kasloop.checkpoints.sqlite import open_sqlite_database
from kasloop.errors import CheckpointError

__all__ = ["open_database"]


@asynccontextmanager
async def open_database(url: str | Path) -> AsyncIterator[Database]:
    """Open (and create the tables of, if needed) the kasloop database at ``url``: a file, ``sqlite:///PATH`` or a
    ``postgresql://`` URL. Deferred rows are committed and the connections closed when the block ends."""
    if not is_postgres_url(url):
        async with open_sqlite_database(url) as db:
            yield db
        return
    try:
        from kasloop.checkpoints.postgres import open_postgres_database  # here: psycopg is optional (the postgres extra)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("psycopg", "langgraph.checkpoint.postgres", "langgraph.store.postgres")):
            raise
        raise CheckpointError(
            f"A PostgreSQL database needs the `postgres` extra (`{exc.name}` is not installed): "
            "pip install 'kasloop[postgres]'."
        ) from None
    async with open_postgres_database(str(url)) as pg:
        yield pg
