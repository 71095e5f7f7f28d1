"""The event store port's SQLAlchemy adapter (PostgreSQL and SQLite)."""

from prosum_platform.eventstore.engine import create_store_engine
from prosum_platform.eventstore.repository import Repository, retry_on_conflict
from prosum_platform.eventstore.schema import metadata
from prosum_platform.eventstore.store import (
    EventStore,
    NewEvent,
    OutboxRow,
    Snapshot,
    StoredEvent,
    Transaction,
    as_utc,
)

__all__ = [
    "EventStore",
    "NewEvent",
    "OutboxRow",
    "Repository",
    "Snapshot",
    "StoredEvent",
    "Transaction",
    "as_utc",
    "create_store_engine",
    "metadata",
    "retry_on_conflict",
]
