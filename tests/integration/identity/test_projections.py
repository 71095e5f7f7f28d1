"""On SQLite and PostgreSQL: identity's read models are projections of its events (rebuilt
from the event store they come out the same, and they agree with the aggregates), and of many
concurrent answers to one challenge exactly one gets a threshold."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from prosum_identity.adapters.projections import rebuild_read_models
from prosum_identity.adapters.store import CODEC
from prosum_identity.adapters.tables import READ_MODELS, devices, participants, thresholds
from prosum_identity.application.ports import UnitOfWork
from prosum_identity.cli import main
from prosum_identity.domain.device import Device
from prosum_identity.domain.errors import IdentityError
from prosum_identity.domain.keyring import KEY_RING_STREAM, SigningKeyRing
from prosum_identity.domain.model import Limits
from prosum_identity.domain.participant import Participant
from prosum_identity.domain.threshold import Threshold
from prosum_platform.eventstore import EventStore
from tests.integration.identity.conftest import outbox_rows
from tests.unit.identity.harness import Harness


@pytest.fixture
def identity(event_store: EventStore, sql_uow: UnitOfWork) -> Harness:
    return Harness(
        uow=sql_uow,
        published=lambda: [(e["type"], e["subject"], e["data"]) for e in outbox_rows(event_store)],
    )


def read_models(store: EventStore) -> dict[str, list[dict[str, Any]]]:
    with store.reading() as conn:
        return {
            table.name: sorted(
                (dict(row._mapping) for row in conn.execute(select(table))),
                key=lambda r: str(next(iter(r.values()))),
            )
            for table in READ_MODELS
        }


def a_busy_day(identity: Harness) -> None:
    identity.active_participant("p-1", "prosumer")
    identity.active_participant("p-2", "consumer")
    identity.participants.register("C", "producer", "MP-p-3", None, "ops", "p-3")
    identity.confirm("p-3", confirmed=False)
    identity.participants.set_limits("p-1", Limits(5_000, 20_000, 3_000), "ops")
    meter = identity.device("p-1", "meter-1")
    identity.device("p-1", "battery-1")
    charger = identity.device("p-2", "charger-2", actions=("bid", "read_data"))
    kept = identity.threshold(meter)
    lost = identity.threshold(charger)
    identity.thresholds.revoke(lost.threshold_id, "phone lost", "ops")
    identity.devices.revoke("battery-1", "replaced", "ops")
    identity.participants.suspend("p-2", "unpaid", "ops")
    identity.clients.create("Aggregator", frozenset({"partner"}), None, "ops")
    identity.keys.rotate()
    identity.clock.advance(identity.policy.key_retention.total_seconds())
    identity.keys.maintain()
    assert kept.threshold_id


def test_rebuilt_from_the_events_the_read_models_are_the_same(
    identity: Harness, event_store: EventStore
) -> None:
    a_busy_day(identity)
    live = read_models(event_store)
    assert all(live.values()), "every read model has rows"
    with event_store.transaction() as tx:
        replayed = rebuild_read_models(tx.conn, CODEC)
    assert replayed > 30
    assert read_models(event_store) == live


def test_the_read_models_agree_with_the_aggregates_rebuilt_from_events(
    identity: Harness, event_store: EventStore, sql_uow: UnitOfWork
) -> None:
    a_busy_day(identity)
    rows = read_models(event_store)
    with sql_uow() as store:
        for row in rows[participants.name]:
            participant = store.get(Participant, row["participant_id"])
            assert participant is not None
            assert (row["status"], row["role"], row["metering_point"]) == (
                participant.status.value,
                participant.role.value,
                participant.metering_point,
            )
            assert row["version"] == participant.version
            own = participant.limits
            assert (row["max_order_wh"], row["max_open_wh"], row["max_ecoin"]) == (
                (own.max_order_wh, own.max_open_wh, own.max_ecoin) if own else (None, None, None)
            )
        for row in rows[devices.name]:
            device = store.get(Device, row["device_id"])
            assert device is not None
            assert (row["status"], row["dact_sha256"], row["public_key"]) == (
                device.status.value,
                device.dact_sha256,
                device.public_key,
            )
        for row in rows[thresholds.name]:
            threshold = store.get(Threshold, row["threshold_id"])
            assert threshold is not None
            assert (row["revoked_at"] is not None, row["actions"].split()) == (
                threshold.revoked,
                list(threshold.actions),
            )
        ring = store.get(SigningKeyRing, KEY_RING_STREAM)
    assert ring is not None
    published = {k.kid for k in ring.published()}
    assert {r["kid"] for r in rows["identity_signing_keys"] if r["removed_at"] is None} == published


def test_of_many_concurrent_answers_to_one_challenge_one_gets_a_threshold(
    identity: Harness,
) -> None:
    identity.active_participant("p-1")
    meter = identity.device("p-1", "meter-1")
    challenge = identity.thresholds.challenge("meter-1")
    request = identity.request(meter, challenge)

    def answer(_: int) -> str:
        try:
            return identity.thresholds.issue(request).threshold_id
        except IdentityError as refused:
            return refused.reason

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(answer, range(8)))
    issued = [o for o in outcomes if o.startswith("th-")]
    assert len(issued) == 1, outcomes
    assert outcomes.count("challenge_used") == 7
    assert [t for t, _s, _d in identity.published() if t == "identity.threshold_issued"] == [
        "identity.threshold_issued"
    ]


def test_ops_can_rebuild_the_read_models_from_the_command_line(
    identity: Harness,
    event_store: EventStore,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a_busy_day(identity)
    live = read_models(event_store)
    with event_store.transaction() as tx:
        for table in READ_MODELS:
            tx.conn.execute(table.delete())
    monkeypatch.setenv("PROSUM_DB_URL", store_url)
    with pytest.raises(SystemExit) as done:
        main(["rebuild-read-models"])
    assert done.value.code == 0
    assert "read models rebuilt from" in capsys.readouterr().out
    assert read_models(event_store) == live
