"""Persistence: the SQLite database (LangGraph saver + kasloop tables), ledger, event log, approvals, threads."""

from kasloop.checkpoints.approvals import ApprovalRecord, ApprovalStore, Decision
from kasloop.checkpoints.events import EventLog
from kasloop.checkpoints.inbox import Inbox, InboxItem
from kasloop.checkpoints.ledger import Ledger, idempotency_key
from kasloop.checkpoints.sqlite import Database, open_database
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
    "ThreadRecord",
    "ThreadStore",
    "idempotency_key",
    "open_database",
]
