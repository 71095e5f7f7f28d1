"""Onboarding through the application: registration asks the ledger for permissions, the
participant turns active on the confirmation, and repeated or stale answers change nothing."""

from __future__ import annotations

import pytest

from prosum_identity.application.devices import DeviceRegistration
from prosum_identity.application.participants import record_ledger_outcome
from prosum_identity.domain.errors import IdentityError
from prosum_identity.domain.model import Limits
from prosum_identity.domain.participant import Outcome, Participant, ParticipantStatus
from tests.unit.identity.harness import Harness


@pytest.fixture
def identity() -> Harness:
    return Harness()


def published(identity: Harness, *types: str) -> list[tuple[str, str, dict[str, object]]]:
    return [(t, s, d) for t, s, d in identity.store.published if t in types]


def status(identity: Harness, participant_id: str) -> ParticipantStatus:
    with identity.store.unit() as store:
        participant = store.get(Participant, participant_id)
    assert participant is not None
    return participant.status


def test_registration_emits_the_participant_and_the_grant_command(identity: Harness) -> None:
    registered = identity.participants.register(
        "Sunny Roof", "producer", "MP-7", Limits(1_000, 5_000, 10_000), "ops"
    )
    assert registered.created and registered.participant_id.startswith("p-")
    pid = registered.participant_id
    [(_, subject, data)] = published(identity, "identity.participant_registered")
    assert subject == pid
    assert data == {
        "participant_id": pid,
        "name": "Sunny Roof",
        "role": "producer",
        "metering_point": "MP-7",
    }
    [(_, subject, grant)] = published(identity, "ledger.grant_permissions")
    assert subject == pid, "keyed by participant: its commands stay in order at the ledger"
    assert grant["participant_id"] == pid
    assert grant["permissions"] == ["connect", "send", "receive", "energy.issue"]
    assert status(identity, pid) is ParticipantStatus.PENDING


def test_registering_the_same_participant_twice_is_answered_with_the_first(
    identity: Harness,
) -> None:
    identity.participants.register("A", "consumer", "MP-1", None, "ops", "p-1")
    size = identity.store.size()
    again = identity.participants.register("A", "consumer", "MP-1", None, "ops", "p-1")
    assert not again.created
    assert identity.store.size() == size
    with pytest.raises(IdentityError, match="participant_exists"):
        identity.participants.register("B", "consumer", "MP-1", None, "ops", "p-1")


def test_a_metering_point_belongs_to_one_participant(identity: Harness) -> None:
    identity.participants.register("A", "consumer", "MP-1", None, "ops", "p-1")
    size = identity.store.size()
    with pytest.raises(IdentityError, match="metering_point_taken"):
        identity.participants.register("B", "producer", "MP-1", None, "ops", "p-2")
    assert identity.store.size() == size
    identity.participants.close("p-1", "moved out", "ops")
    identity.participants.register("B", "producer", "MP-1", None, "ops", "p-2")


def test_the_participant_turns_active_on_the_confirmation_once(identity: Harness) -> None:
    identity.participants.register("A", "prosumer", "MP-1", None, "ops", "p-1")
    assert identity.confirm("p-1") is Outcome.ACTIVATED
    assert status(identity, "p-1") is ParticipantStatus.ACTIVE
    [(_, subject, data)] = published(identity, "identity.participant_activated")
    assert (subject, data) == ("p-1", {"participant_id": "p-1"})
    [(_, _, grant)] = published(identity, "ledger.grant_permissions")
    size = identity.store.size()
    with identity.store.unit() as store:  # the same confirmation again
        again = record_ledger_outcome(
            store,
            "ledger.command_confirmed",
            {
                "command_id": grant["command_id"],
                "command_type": "ledger.grant_permissions",
                "participant_id": "p-1",
            },
            identity.clock,
        )
    assert again is None
    assert identity.store.size() == size


def test_outcomes_of_other_commands_are_ignored(identity: Harness) -> None:
    identity.participants.register("A", "prosumer", "MP-1", None, "ops", "p-1")
    size = identity.store.size()
    for data in (
        {"command_id": "mint-1", "command_type": "ledger.mint_energy", "participant_id": "p-1"},
        {"command_id": "x", "command_type": "ledger.grant_permissions", "participant_id": "p-1"},
        {"command_id": "x", "command_type": "ledger.grant_permissions", "participant_id": "p-404"},
        {"command_id": "x", "command_type": "ledger.grant_permissions"},
    ):
        with identity.store.unit() as store:
            assert (
                record_ledger_outcome(store, "ledger.command_confirmed", data, identity.clock)
                is None
            )
    assert identity.store.size() == size
    assert status(identity, "p-1") is ParticipantStatus.PENDING


def test_a_failed_grant_is_reported_and_can_be_retried(identity: Harness) -> None:
    identity.participants.register("A", "prosumer", "MP-1", None, "ops", "p-1")
    assert identity.confirm("p-1", confirmed=False) is Outcome.GRANT_FAILED
    [(_, _, failure)] = published(identity, "identity.participant_grant_failed")
    assert failure["reason"] == "chain_unavailable: node down"
    assert status(identity, "p-1") is ParticipantStatus.GRANT_FAILED
    identity.participants.retry_grant("p-1", "ops")
    assert len(published(identity, "ledger.grant_permissions")) == 2
    assert identity.confirm("p-1") is Outcome.ACTIVATED


def test_suspension_revokes_and_reinstatement_reactivates_on_the_chains_word(
    identity: Harness,
) -> None:
    identity.active_participant("p-1", "producer")
    identity.participants.suspend("p-1", "meter tampering", "ops")
    [(_, _, suspended)] = published(identity, "identity.participant_suspended")
    assert suspended == {"participant_id": "p-1", "reason": "meter tampering"}
    [(_, _, revoke)] = published(identity, "ledger.revoke_permissions")
    assert revoke["permissions"] == ["connect", "send", "receive", "energy.issue"]
    assert identity.confirm("p-1") is Outcome.REVOKED
    identity.participants.reinstate("p-1", "resolved", "ops")
    assert status(identity, "p-1") is ParticipantStatus.PENDING
    assert published(identity, "identity.participant_reinstated") == []
    assert identity.confirm("p-1") is Outcome.REINSTATED
    assert len(published(identity, "identity.participant_reinstated")) == 1
    assert status(identity, "p-1") is ParticipantStatus.ACTIVE


def test_closing_revokes_permissions_and_every_device(identity: Harness) -> None:
    identity.active_participant("p-1")
    identity.device("p-1", "meter-1")
    identity.device("p-1", "battery-1")
    identity.devices.revoke("battery-1", "replaced", "ops")
    identity.participants.close("p-1", "contract ended", "ops")
    assert status(identity, "p-1") is ParticipantStatus.CLOSED
    revoked = [d["device_id"] for _, _, d in published(identity, "identity.device_revoked")]
    assert revoked == ["battery-1", "meter-1"]
    assert len(published(identity, "ledger.revoke_permissions")) == 1
    assert len(published(identity, "identity.participant_closed")) == 1


def test_a_device_is_registered_once_for_its_participants_metering_point(
    identity: Harness,
) -> None:
    identity.active_participant("p-1")
    key = identity.device("p-1", "meter-1")
    [(_, subject, event)] = published(identity, "identity.device_registered")
    assert subject == "p-1"
    assert event == {
        "device_id": "meter-1",
        "participant_id": "p-1",
        "kind": "smart_meter",
        "public_key": key.public_key,
        "metering_point": "MP-p-1",
        "rating_w": 7_000,
    }
    same = DeviceRegistration("meter-1", "smart_meter", key.public_key, "MP-p-1", 7_000, key.dact)
    assert identity.devices.register("p-1", same, "ops") is False
    for wrong, reason in (
        (
            DeviceRegistration("meter-1", "battery", key.public_key, "MP-p-1", 7_000),
            "device_exists",
        ),
        (
            DeviceRegistration("meter-2", "battery", key.public_key, "MP-9", 7_000),
            "metering_point_mismatch",
        ),
    ):
        with pytest.raises(IdentityError, match=reason):
            identity.devices.register("p-1", wrong, "ops")
    with pytest.raises(IdentityError, match="participant_unknown"):
        identity.devices.register("p-404", same, "ops")
