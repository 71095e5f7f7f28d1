"""The trust projection other services keep of identity's events, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from prosum_auth.trust import SqlTrustStore, tables
from prosum_contracts import Envelope
from prosum_platform.eventstore import EventStore, create_store_engine, metadata
from tests.support.identity_keys import IdentityStandIn


@pytest.fixture
def store(store_url: str) -> EventStore:
    engine = create_store_engine(store_url)
    metadata.create_all(engine)
    tables.create_all(engine)
    return EventStore(engine)


def test_revocations_and_status_are_refused_from_the_moment_they_are_applied(
    store: EventStore,
) -> None:
    identity = IdentityStandIn()
    trust = SqlTrustStore(store.engine)
    assert trust.revoked("th-1", "d-1", "p-1") == "participant_not_active", "unknown is not active"
    identity.apply(store, [identity.status_event("p-1", "registered")])
    assert trust.revoked("th-1", "d-1", "p-1") == "participant_not_active"
    identity.apply(store, [identity.status_event("p-1", "activated")])
    assert trust.revoked("th-1", "d-1", "p-1") is None
    identity.apply(
        store,
        [
            Envelope(
                "identity.device_revoked",
                1,
                "identity",
                "p-1",
                {"device_id": "d-1", "participant_id": "p-1"},
            )
        ],
    )
    assert trust.revoked("th-1", "d-1", "p-1") == "device_revoked"
    identity.apply(
        store,
        [
            Envelope(
                "identity.threshold_revoked",
                1,
                "identity",
                "p-1",
                {"threshold_id": "th-1", "participant_id": "p-1"},
            )
        ],
    )
    assert trust.revoked("th-1", "d-1", "p-1") == "threshold_revoked"
    assert trust.revoked("th-2", "d-2", "p-1") is None
    identity.apply(store, [identity.status_event("p-1", "suspended")])
    assert trust.revoked("th-2", "d-2", "p-1") == "participant_not_active"
    assert trust.participant_status("p-1") == "suspended"


def test_the_latest_published_keys_are_trusted(store: EventStore) -> None:
    identity = IdentityStandIn()
    trust = SqlTrustStore(store.engine, key_cache_s=0)
    assert trust.keys().kids() == frozenset()
    identity.apply(store, identity.events_for_keys())
    identity.apply(store, identity.events_for_keys())  # redelivered: still one row
    assert trust.keys().kids() == {"test-key-1"}
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM auth_trusted_keys")).scalar() == 1
