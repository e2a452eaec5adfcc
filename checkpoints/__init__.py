"""Persistence: the kasloop database (LangGraph saver + kasloop tables) on SQLite or PostgreSQL, ledger, event log,
approvals, threads.

``Database`` is the protocol both engines implement (``database.py``); ``open_database`` picks the engine from the
URL (``backends.py``): ``SqliteDatabase`` (``sqlite.py``) or ``PostgresDatabase`` (``postgres.py``, imported only for
a ``postgresql://`` URL). Every table is declared in ``schema.py``.
"""

from kasloop.checkpoints.approvals import ApprovalRecord, ApprovalStore, Decision
from kasloop.checkpoints.backends import open_database
from kasloop.checkpoints.database import Database
from kasloop.checkpoints.events import EventLog
from kasloop.checkpoints.inbox import Inbox, InboxItem
from kasloop.checkpoints.ledger import Ledger, idempotency_key
from kasloop.checkpoints.sqlite import SqliteDatabase
from kasloop.checkpoints.threads import ThreadRecord, ThreadStore

__all__ = [
    "ApprovalRecord",
    "ApprovalStore",
    "Database",
    "Decision",
    "EventLog",
    "Inbox",
    "InboxItem",
    "Ledger",
    "SqliteDatabase",
    "ThreadRecord",
    "ThreadStore",
    "idempotency_key",
    "open_database",
]
