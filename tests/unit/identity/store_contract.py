"""The contract of identity's store port, run against the in-memory fake (unit tests) and the
SQL store on SQLite and PostgreSQL (integration tests). A subclass provides the fixtures
``uow`` (a UnitOfWork) and ``outbox`` (what was published, oldest first)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from prosum_identity.application.ports import UnitOfWork
from prosum_identity.domain.dact import Dact
from prosum_identity.domain.device import Device, RateLimit
from prosum_identity.domain.model import Limits
from prosum_identity.domain.participant import Participant, ParticipantStatus
from prosum_platform.domain import ConcurrencyConflict
from tests.unit.identity.fakes import START

PUBLIC_KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
Outbox = Callable[[], list[tuple[str, str, dict[str, Any]]]]


def registered(pid: str = "p-1") -> Participant:
    participant = Participant.register(
        pid, "Alice", "prosumer", f"MP-{pid}", Limits(1, 2, 3), START, "ops"
    )
    participant.request_grant(f"grant-{pid}", START)
    return participant


class IdentityStoreContract:
    def test_an_aggregate_comes_back_as_it_was_saved(self, uow: UnitOfWork) -> None:
        with uow() as store:
            store.save(registered())
        with uow() as store:
            participant = store.get(Participant, "p-1")
        assert participant is not None
        assert participant.version == 2
        assert (participant.name, participant.status, participant.limits) == (
            "Alice",
            ParticipantStatus.PENDING,
            Limits(1, 2, 3),
        )
        assert participant.pending is not None
        assert participant.pending.command_id == "grant-p-1"
        assert participant.registered_at == START

    def test_an_unknown_aggregate_is_none(self, uow: UnitOfWork) -> None:
        with uow() as store:
            assert store.get(Participant, "nobody") is None

    def test_kinds_of_aggregate_do_not_share_streams(self, uow: UnitOfWork) -> None:
        with uow() as store:
            store.save(registered("same"))
        with uow() as store:
            assert store.get(Device, "same") is None

    def test_a_unit_that_fails_keeps_nothing(self, uow: UnitOfWork, outbox: Outbox) -> None:
        with pytest.raises(RuntimeError), uow() as store:
            store.save(registered())
            store.publish("identity.participant_activated", "p-1", {"participant_id": "p-1"})
            store.put_private_key("k1", b"\x01" * 32)
            raise RuntimeError("the command failed half-way")
        with uow() as store:
            assert store.get(Participant, "p-1") is None
            assert store.private_key("k1") is None
        assert outbox() == []

    def test_a_writer_with_a_stale_aggregate_conflicts_and_changes_nothing(
        self, uow: UnitOfWork
    ) -> None:
        with uow() as store:
            store.save(registered())
        with uow() as store:
            stale = store.get(Participant, "p-1")
        with uow() as store:
            fresh = store.get(Participant, "p-1")
            assert fresh is not None
            fresh.suspend("first writer", "revoke-1", START, "ops")
            store.save(fresh)
        assert stale is not None
        stale.close("second writer", "revoke-2", START, "ops")
        with pytest.raises(ConcurrencyConflict), uow() as store:
            store.save(stale)
        with uow() as store:
            now = store.get(Participant, "p-1")
        assert now is not None
        assert now.status is ParticipantStatus.SUSPENDED

    def test_published_events_are_kept_in_order(self, uow: UnitOfWork, outbox: Outbox) -> None:
        with uow() as store:
            store.publish("identity.participant_activated", "p-1", {"participant_id": "p-1"})
            store.publish("identity.participant_suspended", "p-1", {"participant_id": "p-1"})
        assert [(t, s) for t, s, _ in outbox()] == [
            ("identity.participant_activated", "p-1"),
            ("identity.participant_suspended", "p-1"),
        ]

    def test_private_keys_are_kept_and_discarded(self, uow: UnitOfWork) -> None:
        with uow() as store:
            store.put_private_key("k1", b"\x07" * 32)
        with uow() as store:
            assert store.private_key("k1") == b"\x07" * 32
            store.discard_private_key("k1")
        with uow() as store:
            assert store.private_key("k1") is None

    def test_a_long_device_stream_comes_back_the_same(self, uow: UnitOfWork) -> None:
        dact = Dact("meter-1", "p-1", "smart_meter", "MP-p-1", ("ask", "bid"), PUBLIC_KEY)
        device = Device.register(
            "meter-1", "p-1", "smart_meter", PUBLIC_KEY, "MP-p-1", 5000, START, "ops"
        )
        device.register_dact(dact, START, "ops")
        rate = RateLimit(100, timedelta(seconds=1))
        with uow() as store:
            store.save(device)
        for i in range(150):  # past the snapshot interval, twice
            with uow() as store:
                loaded = store.get(Device, "meter-1")
                assert loaded is not None
                at = START + timedelta(seconds=i)
                loaded.issue_challenge(f"ch-{i}", f"n-{i}", at, timedelta(seconds=60), rate)
                if i % 2:
                    loaded.answer_challenge(f"ch-{i}", f"th-{i}", at)
                store.save(loaded)
        with uow() as store:
            loaded = store.get(Device, "meter-1")
        assert loaded is not None
        assert loaded.version == 2 + 150 + 75
        assert loaded.dact_sha256 == dact.digest()
        assert loaded.challenges["ch-149"].threshold_id == "th-149"
        assert loaded.challenges["ch-148"].threshold_id is None
        assert loaded.recent_issues[-1] == START + timedelta(seconds=149)
