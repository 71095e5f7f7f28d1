"""Identity on a real store: a migrated database (SQLite or PostgreSQL) and the SQL adapters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from prosum_contracts import SchemaRegistry
from prosum_identity.adapters.crypto import KeySealer
from prosum_identity.adapters.store import unit_of_work
from prosum_identity.application.ports import UnitOfWork
from prosum_platform.eventstore import EventStore, create_store_engine
from prosum_platform.eventstore.schema import outbox
from prosum_platform.service.migrations import upgrade


@pytest.fixture
def event_store(store_url: str) -> Iterator[EventStore]:
    upgrade("prosum_identity", store_url)
    engine = create_store_engine(store_url)
    try:
        yield EventStore(engine, SchemaRegistry.load())
    finally:
        engine.dispose()


@pytest.fixture
def kek() -> str:
    """The key encryption key (PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS)."""
    return Fernet.generate_key().decode()


@pytest.fixture
def sealer(kek: str) -> KeySealer:
    return KeySealer([kek])


@pytest.fixture
def sql_uow(event_store: EventStore, sealer: KeySealer) -> UnitOfWork:
    return unit_of_work(event_store, sealer)


def outbox_rows(store: EventStore) -> list[dict[str, Any]]:
    """The envelopes in the outbox, oldest first."""
    with store.reading() as conn:
        rows = conn.execute(select(outbox.c.payload).order_by(outbox.c.id)).all()
    return [orjson.loads(row.payload) for row in rows]
