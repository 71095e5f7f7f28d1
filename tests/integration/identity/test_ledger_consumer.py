"""Identity's consumer on the real broker and a real store (SQLite and PostgreSQL): the ledger's
confirmation activates the participant once; the same event delivered again, and the same
outcome sent again under a new event id, change nothing."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy import select

from prosum_contracts import Envelope
from prosum_contracts.topics import LEDGER_EVENTS
from prosum_identity.adapters.crypto import KeySealer
from prosum_identity.application.ports import UnitOfWork
from prosum_identity.domain.participant import Participant, ParticipantStatus
from prosum_identity.entrypoints.consumers import ledger_handlers
from prosum_platform.eventstore import EventStore
from prosum_platform.eventstore.schema import processed_messages
from prosum_platform.messaging import EventConsumer, KafkaConfig, Subscription
from tests.integration.identity.conftest import outbox_rows
from tests.support.kafka_io import publish
from tests.unit.identity.harness import Harness

pytestmark = [pytest.mark.kafka]


def confirmation(command_id: str, participant_id: str) -> Envelope:
    return Envelope(
        type="ledger.command_confirmed",
        schema_version=1,
        source="ledger-adapter",
        subject=command_id,
        data={
            "command_id": command_id,
            "command_type": "ledger.grant_permissions",
            "backend": "evm",
            "tx_id": "0x" + "ab" * 32,
            "block": 12,
            "fee": 0,
            "participant_id": participant_id,
        },
    )


def processed(store: EventStore, consumer: str) -> set[str]:
    with store.reading() as conn:
        rows = conn.execute(
            select(processed_messages.c.event_id).where(processed_messages.c.consumer == consumer)
        )
        return {row[0] for row in rows}


async def test_a_redelivered_confirmation_changes_nothing(
    event_store: EventStore, sql_uow: UnitOfWork, sealer: KeySealer, kafka: KafkaConfig
) -> None:
    identity = Harness(
        uow=sql_uow,
        published=lambda: [(e["type"], e["subject"], e["data"]) for e in outbox_rows(event_store)],
    )
    pid = f"p-{uuid.uuid4().hex[:8]}"
    identity.participants.register("Alice", "prosumer", f"MP-{pid}", None, "ops", pid)
    [grant] = [d for t, _s, d in identity.published() if t == "ledger.grant_permissions"]

    name = f"identity-test-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(
        name,
        event_store,
        event_store.registry,
        kafka,
        Subscription((LEDGER_EVENTS,), ledger_handlers(sealer, identity.clock)),
    )
    await consumer.start()
    running = asyncio.create_task(consumer.run())
    try:
        first = confirmation(grant["command_id"], pid)
        resent = confirmation(grant["command_id"], pid)  # the same outcome, a new event id
        await publish(kafka, LEDGER_EVENTS, [first, first, resent])
        deadline = time.monotonic() + 60
        while not {first.event_id, resent.event_id} <= processed(event_store, name):
            assert time.monotonic() < deadline, "the consumer did not get there"
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        running.cancel()

    assert consumer.stats.duplicates >= 1, "the second delivery was recognised"
    with sql_uow() as store:
        participant = store.get(Participant, pid)
    assert participant is not None
    assert participant.status is ParticipantStatus.ACTIVE
    assert participant.version == 3, "registered, grant requested, granted: nothing more"
    activated = [
        e for e in outbox_rows(event_store) if e["type"] == "identity.participant_activated"
    ]
    assert len(activated) == 1
    assert activated[0]["causation_id"] == first.event_id, "it says what caused it"
