"""Every kasloop table, declared once: its SQLite DDL and its PostgreSQL DDL side by side.

Both engines create all of them when the database opens
(``SqliteDatabase.setup``, ``PostgresDatabase.setup``), so no table module,
tool or channel runs DDL in a unit of work. On PostgreSQL that matters beyond
speed: DDL locks tables even when it changes nothing, and taking those locks
while other sessions write several tables in one transaction deadlocks.

Each engine's DDL is written for it, not translated from the other. What
differs, table by table:

* SQLite ``REAL`` is PostgreSQL ``DOUBLE PRECISION`` (PostgreSQL's ``REAL`` is
  4 bytes: a ``time.time()`` in it is off by minutes), SQLite ``INTEGER`` is
  ``BIGINT`` (SQLite integers are 8 bytes), ``INTEGER PRIMARY KEY
  AUTOINCREMENT`` is ``BIGSERIAL PRIMARY KEY``.
* SQLite gives every table an implicit ``rowid`` (insertion order); the
  PostgreSQL tables that had one from the first release declare it as
  ``rowid BIGSERIAL``, so ``ORDER BY rowid`` (ledger, approvals, processes)
  reads the same on both.
* The event log's append-only trigger is a ``RAISE(ABORT)`` trigger on SQLite
  and a PL/pgSQL function on PostgreSQL.

Statements (DML) are written once, in the SQL both engines speak (see
``kasloop.checkpoints.database``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MEMORY_FTS_BACKFILL",
    "MEMORY_FTS_TABLES",
    "MEMORY_FTS_TRIGGERS",
    "POSTGRES_SCHEMA_VERSIONS",
    "SQLITE_PRAGMAS",
    "TABLES",
    "Column",
    "Table",
    "postgres_script",
    "sqlite_script",
]


@dataclass(frozen=True)
class Column:
    """A column added after its table first shipped (``CREATE TABLE IF NOT EXISTS`` leaves an old table as it was)."""

    name: str
    sqlite: str
    """Its declaration on SQLite (added when ``PRAGMA table_info`` lacks it: SQLite has no ``ADD COLUMN IF NOT EXISTS``)."""
    postgres: str
    """Its declaration on PostgreSQL (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``)."""


@dataclass(frozen=True)
class Table:
    """One kasloop table: the module that owns its rows and its DDL per engine (table, indexes, triggers)."""

    name: str
    owner: str
    """The module that reads and writes its rows."""
    sqlite: str
    postgres: str
    added: tuple[Column, ...] = ()
    """Columns added since the first release, in the order they were added (also in the DDL above)."""


TABLES: tuple[Table, ...] = (
    Table(
        name="kasloop_threads",
        owner="kasloop.checkpoints.threads",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_threads (
    thread_id TEXT PRIMARY KEY,
    goal TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_threads (
    rowid BIGSERIAL NOT NULL,
    thread_id TEXT PRIMARY KEY,
    goal TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);""",
    ),
    Table(
        name="kasloop_events",
        owner="kasloop.checkpoints.events",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL,
    ts REAL NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kasloop_events_thread ON kasloop_events(thread_id, id);
CREATE TRIGGER IF NOT EXISTS kasloop_events_no_update BEFORE UPDATE ON kasloop_events
BEGIN SELECT RAISE(ABORT, 'the kasloop event log is append-only'); END;""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_events (
    id BIGSERIAL PRIMARY KEY,
    thread_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    step BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kasloop_events_thread ON kasloop_events(thread_id, id);
CREATE OR REPLACE FUNCTION kasloop_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the kasloop event log is append-only'; END $$;
CREATE OR REPLACE TRIGGER kasloop_events_no_update BEFORE UPDATE ON kasloop_events
FOR EACH ROW EXECUTE FUNCTION kasloop_events_append_only();""",
    ),
    Table(
        name="kasloop_ledger",
        owner="kasloop.checkpoints.ledger",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_ledger (
    key TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arg_hash TEXT NOT NULL,
    idempotent INTEGER NOT NULL,
    intent_at REAL NOT NULL,
    result TEXT,
    result_at REAL
);
CREATE INDEX IF NOT EXISTS kasloop_ledger_thread ON kasloop_ledger(thread_id);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_ledger (
    rowid BIGSERIAL NOT NULL,
    key TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arg_hash TEXT NOT NULL,
    idempotent BIGINT NOT NULL,
    intent_at DOUBLE PRECISION NOT NULL,
    result TEXT,
    result_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS kasloop_ledger_thread ON kasloop_ledger(thread_id);""",
    ),
    Table(
        name="kasloop_approvals",
        owner="kasloop.checkpoints.approvals",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_approvals (
    approval_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    tool TEXT NOT NULL,
    args TEXT NOT NULL,
    risk TEXT NOT NULL,
    reason TEXT NOT NULL,
    arg_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    decided_at REAL,
    decided_by TEXT,
    channel TEXT,
    path TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS kasloop_approvals_thread ON kasloop_approvals(thread_id, status);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_approvals (
    rowid BIGSERIAL NOT NULL,
    approval_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    tool TEXT NOT NULL,
    args TEXT NOT NULL,
    risk TEXT NOT NULL,
    reason TEXT NOT NULL,
    arg_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    decided_at DOUBLE PRECISION,
    decided_by TEXT,
    channel TEXT,
    path TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS kasloop_approvals_thread ON kasloop_approvals(thread_id, status);""",
        added=(Column("path", sqlite="TEXT NOT NULL DEFAULT ''", postgres="TEXT NOT NULL DEFAULT ''"),),
    ),
    Table(
        name="kasloop_inbox",
        owner="kasloop.checkpoints.inbox",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at REAL NOT NULL,
    taken_at REAL
);
CREATE INDEX IF NOT EXISTS kasloop_inbox_pending ON kasloop_inbox(thread_id, taken_at, id);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_inbox (
    id BIGSERIAL PRIMARY KEY,
    thread_id TEXT NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    taken_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS kasloop_inbox_pending ON kasloop_inbox(thread_id, taken_at, id);""",
    ),
    Table(
        name="kasloop_rules",
        owner="kasloop.checkpoints.rules",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_rules (
    id BIGSERIAL PRIMARY KEY,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);""",
    ),
    Table(
        name="kasloop_announcements",
        owner="kasloop.channels.announcements",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_announcements (
    approval_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    ref TEXT NOT NULL,
    code TEXT NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (approval_id, channel)
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_announcements (
    rowid BIGSERIAL NOT NULL,
    approval_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    ref TEXT NOT NULL,
    code TEXT NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (approval_id, channel)
);""",
    ),
    Table(
        name="kasloop_spend",
        owner="kasloop.checkpoints.spend",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_spend (
    day TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    model_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, thread_id)
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_spend (
    rowid BIGSERIAL NOT NULL,
    day TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    model_calls BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (day, thread_id)
);""",
    ),
    Table(
        name="kasloop_daemon",
        owner="kasloop.runtime.daemon",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_daemon (
    name TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    next_wake_at REAL,
    cycles INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    last_error TEXT,
    stopped_at REAL
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_daemon (
    rowid BIGSERIAL NOT NULL,
    name TEXT PRIMARY KEY,
    pid BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    next_wake_at DOUBLE PRECISION,
    cycles BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    last_error TEXT,
    stopped_at DOUBLE PRECISION
);""",
    ),
    Table(
        name="kasloop_processes",
        owner="kasloop.checkpoints.processes",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_processes (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_ticks INTEGER,
    command TEXT NOT NULL,
    log_path TEXT NOT NULL,
    started_at REAL NOT NULL,
    idempotency_key TEXT,
    stopped_at REAL,
    exit_code INTEGER,
    name TEXT
);
CREATE INDEX IF NOT EXISTS kasloop_processes_thread ON kasloop_processes(thread_id, started_at);
CREATE UNIQUE INDEX IF NOT EXISTS kasloop_processes_key
    ON kasloop_processes(thread_id, idempotency_key) WHERE idempotency_key IS NOT NULL;""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_processes (
    rowid BIGSERIAL NOT NULL,
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    pid BIGINT NOT NULL,
    start_ticks BIGINT,
    command TEXT NOT NULL,
    log_path TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    idempotency_key TEXT,
    stopped_at DOUBLE PRECISION,
    exit_code BIGINT,
    name TEXT
);
CREATE INDEX IF NOT EXISTS kasloop_processes_thread ON kasloop_processes(thread_id, started_at);
CREATE UNIQUE INDEX IF NOT EXISTS kasloop_processes_key
    ON kasloop_processes(thread_id, idempotency_key) WHERE idempotency_key IS NOT NULL;""",
    ),
    Table(
        name="kasloop_webhook_seen",
        owner="kasloop.channels.webhook_receiver",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_webhook_seen (
    key TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_webhook_seen (
    key TEXT PRIMARY KEY,
    seen_at DOUBLE PRECISION NOT NULL
);""",
    ),
    Table(
        name="kasloop_telegram",
        owner="kasloop.tools.telegram",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_telegram (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_telegram (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, key)
);""",
    ),
    Table(
        name="kasloop_receivers",
        owner="kasloop.safety.receivers",
        sqlite="""
CREATE TABLE IF NOT EXISTS kasloop_receivers (
    address TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    label TEXT NOT NULL,
    node TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL
);""",
        postgres="""
CREATE TABLE IF NOT EXISTS kasloop_receivers (
    address TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    label TEXT NOT NULL,
    node TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL
);""",
    ),
)
"""kasloop's own tables, created on both engines when the database opens."""

SQLITE_PRAGMAS = "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=NORMAL;"
"""Run with the SQLite tables: WAL lets other processes read while one writes; NORMAL is durable in WAL mode."""

POSTGRES_SCHEMA_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS kasloop_schema (version TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
)
"""PostgreSQL only: the versions (hashes) of ``postgres_script()`` applied to this database, so the DDL runs once per
version and opening a set-up database takes no table lock (``PostgresDatabase.setup``)."""


def sqlite_script() -> str:
    """The SQLite DDL of every table (``CREATE ... IF NOT EXISTS``), for ``executescript`` on each open."""
    return "\n".join([SQLITE_PRAGMAS, *(t.sqlite.strip() for t in TABLES)]) + "\n"


def postgres_script() -> str:
    """The PostgreSQL DDL of every table, the added columns included, as one script (run once per version)."""
    added = [f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS {c.name} {c.postgres};" for t in TABLES for c in t.added]
    return "\n".join([*(t.postgres.strip() for t in TABLES), *added]) + "\n"


# --------------------------------------------------------------------------- long-term memory's keyword index (SQLite)

# SQLite only: on PostgreSQL the store's keyword search ranks ``to_tsvector`` of the ``store`` rows themselves
# (``KasloopPostgresStore``), no table of its own. Created by ``KasloopStore.setup`` after LangGraph's store
# migrations, since the triggers are on LangGraph's ``store`` table; they keep the index in sync with writes by any
# LangGraph code in any process.

MEMORY_FTS_TABLES = (
    "CREATE TABLE IF NOT EXISTS kasloop_memory_fts_keys ("
    " id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, key TEXT NOT NULL, UNIQUE (prefix, key))",
    "CREATE VIRTUAL TABLE IF NOT EXISTS kasloop_memory_fts USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')",
)
# Every string in an item's value except its kind (which the namespace already says) is searchable.
_BODY = "(SELECT group_concat(j.value, ' ') FROM json_tree(CAST({v}.value AS TEXT)) AS j WHERE j.type = 'text' AND j.fullkey <> '$.kind')"
_ID = "(SELECT id FROM kasloop_memory_fts_keys WHERE prefix = {v}.prefix AND key = {v}.key)"
_INDEX_NEW = (
    "INSERT OR IGNORE INTO kasloop_memory_fts_keys (prefix, key) VALUES (new.prefix, new.key);"
    f" DELETE FROM kasloop_memory_fts WHERE rowid = {_ID.format(v='new')};"
    f" INSERT INTO kasloop_memory_fts (rowid, body) VALUES ({_ID.format(v='new')}, coalesce({_BODY.format(v='new')}, ''));"
)
_UNINDEX_OLD = (
    f"DELETE FROM kasloop_memory_fts WHERE rowid = {_ID.format(v='old')};"
    " DELETE FROM kasloop_memory_fts_keys WHERE prefix = old.prefix AND key = old.key;"
)
# INSERT OR REPLACE fires only the insert trigger (recursive_triggers is off), so it re-indexes too.
MEMORY_FTS_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS kasloop_memory_fts_ai AFTER INSERT ON store BEGIN {_INDEX_NEW} END",
    f"CREATE TRIGGER IF NOT EXISTS kasloop_memory_fts_ad AFTER DELETE ON store BEGIN {_UNINDEX_OLD} END",
    f"CREATE TRIGGER IF NOT EXISTS kasloop_memory_fts_au AFTER UPDATE ON store BEGIN {_UNINDEX_OLD} {_INDEX_NEW} END",
)
MEMORY_FTS_BACKFILL = (
    "INSERT OR IGNORE INTO kasloop_memory_fts_keys (prefix, key) SELECT prefix, key FROM store",
    "DELETE FROM kasloop_memory_fts",
    f"INSERT INTO kasloop_memory_fts (rowid, body) SELECT {_ID.format(v='s')}, coalesce({_BODY.format(v='s')}, '') FROM store AS s",
)
"""Index the items written before kasloop indexed this file (a fresh index on an existing store)."""
