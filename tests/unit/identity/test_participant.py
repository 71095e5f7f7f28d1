"""Participants: given events, when a command, then events (or a refusal and no events)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from prosum_identity.domain.errors import IdentityError
from prosum_identity.domain.model import Limits
from prosum_identity.domain.participant import (
    MeteringPointClaim,
    Outcome,
    Participant,
    ParticipantClosed,
    ParticipantRegistered,
    ParticipantReinstated,
    ParticipantStatus,
    ParticipantSuspended,
    PermissionsGranted,
    PermissionsGrantFailed,
    PermissionsGrantRequested,
    PermissionsRevokeRequested,
)
from tests.unit.identity.fakes import START

LATER = START + timedelta(minutes=5)


def pending(role: str = "producer") -> Participant:
    participant = Participant.register("p-1", "Alice", role, "MP-1", None, START, "ops")
    participant.request_grant("grant-1", START)
    participant.mark_persisted()
    return participant


def active(role: str = "producer") -> Participant:
    participant = pending(role)
    participant.record_ledger_outcome("grant-1", True, "", START)
    participant.mark_persisted()
    return participant


def test_registration_asks_for_the_roles_chain_permissions() -> None:
    participant = Participant.register("p-1", "Alice", "producer", "MP-1", None, START, "ops")
    participant.request_grant("grant-1", START)
    registered, requested = participant.pending_events
    assert isinstance(registered, ParticipantRegistered)
    assert (registered.role, registered.metering_point, registered.registered_by) == (
        "producer",
        "MP-1",
        "ops",
    )
    assert requested == PermissionsGrantRequested(
        command_id="grant-1",
        permissions=("connect", "send", "receive", "energy.issue"),
        requested_at=START,
    )
    assert participant.status is ParticipantStatus.PENDING


@pytest.mark.parametrize(
    ("role", "permissions"),
    [
        ("consumer", ("connect", "send", "receive")),
        ("prosumer", ("connect", "send", "receive", "energy.issue")),
        ("operator", ("connect", "send", "receive")),
    ],
)
def test_only_producing_roles_may_issue_energy(role: str, permissions: tuple[str, ...]) -> None:
    assert pending(role).permissions == permissions


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("bad id!", "A", "producer", "MP-1"), "participant_id_invalid"),
        (("p-1", "", "producer", "MP-1"), "name_invalid"),
        (("p-1", "A", "landlord", "MP-1"), "role_invalid"),
        (("p-1", "A", "producer", " MP-1"), "metering_point_invalid"),
    ],
)
def test_a_malformed_registration_is_refused(args: tuple[str, ...], reason: str) -> None:
    with pytest.raises(IdentityError) as refused:
        Participant.register(*args, None, START, "ops")  # type: ignore[call-arg]
    assert refused.value.reason == reason


def test_limits_are_exact_non_negative_integers_with_order_within_open() -> None:
    with pytest.raises(IdentityError, match="limits_invalid"):
        Limits(10, 5, 1)
    with pytest.raises(IdentityError, match="limits_invalid"):
        Limits(-1, 5, 1)
    with pytest.raises(IdentityError, match="limits_invalid"):
        Limits(1.5, 5, 1)  # type: ignore[arg-type]


def test_the_confirmed_grant_activates_once() -> None:
    participant = pending()
    assert participant.record_ledger_outcome("grant-1", True, "", LATER) is Outcome.ACTIVATED
    assert participant.pending_events == (
        PermissionsGranted(command_id="grant-1", granted_at=LATER, reinstated=False),
    )
    assert participant.status is ParticipantStatus.ACTIVE
    participant.mark_persisted()
    assert participant.record_ledger_outcome("grant-1", True, "", LATER) is None
    assert participant.pending_events == ()


def test_an_outcome_of_another_command_changes_nothing() -> None:
    participant = pending()
    assert participant.record_ledger_outcome("someone-elses", True, "", LATER) is None
    assert participant.pending_events == ()
    assert participant.status is ParticipantStatus.PENDING


def test_a_failed_grant_can_be_retried() -> None:
    participant = pending()
    assert participant.record_ledger_outcome(
        "grant-1", False, "chain_unavailable: down", LATER
    ) is (Outcome.GRANT_FAILED)
    assert isinstance(participant.pending_events[-1], PermissionsGrantFailed)
    assert participant.status is ParticipantStatus.GRANT_FAILED
    participant.request_grant("grant-2", LATER)
    assert participant.status is ParticipantStatus.PENDING
    assert participant.record_ledger_outcome("grant-2", True, "", LATER) is Outcome.ACTIVATED


def test_a_grant_is_not_requested_twice() -> None:
    with pytest.raises(IdentityError, match="grant_not_needed"):
        pending().request_grant("grant-2", LATER)
    with pytest.raises(IdentityError, match="grant_not_needed"):
        active().request_grant("grant-2", LATER)


def test_suspension_revokes_and_reinstatement_grants_again() -> None:
    participant = active()
    participant.suspend("unpaid fees", "revoke-1", LATER, "ops")
    suspended, revoke = participant.pending_events
    assert suspended == ParticipantSuspended(
        reason="unpaid fees", suspended_at=LATER, suspended_by="ops"
    )
    assert isinstance(revoke, PermissionsRevokeRequested)
    assert revoke.command_id == "revoke-1"
    assert participant.status is ParticipantStatus.SUSPENDED
    assert participant.record_ledger_outcome("revoke-1", True, "", LATER) is Outcome.REVOKED
    participant.mark_persisted()

    participant.reinstate("paid", "grant-2", LATER, "ops")
    reinstated, grant = participant.pending_events
    assert isinstance(reinstated, ParticipantReinstated)
    assert isinstance(grant, PermissionsGrantRequested)
    assert participant.status is ParticipantStatus.PENDING, "active only when the chain agrees"
    assert participant.record_ledger_outcome("grant-2", True, "", LATER) is Outcome.REINSTATED
    assert participant.pending_events[-1] == PermissionsGranted(
        command_id="grant-2", granted_at=LATER, reinstated=True
    )
    assert participant.status is ParticipantStatus.ACTIVE


def test_a_grant_confirmed_after_the_suspension_does_not_reactivate() -> None:
    participant = pending()
    participant.suspend("fraud suspected", "revoke-1", LATER, "ops")
    assert isinstance(participant.pending_events[-1], PermissionsRevokeRequested)
    participant.mark_persisted()
    assert participant.record_ledger_outcome("grant-1", True, "", LATER) is None
    assert participant.status is ParticipantStatus.SUSPENDED


def test_nothing_granted_means_nothing_to_revoke() -> None:
    participant = pending()
    participant.record_ledger_outcome("grant-1", False, "chain_rejected", LATER)
    participant.mark_persisted()
    participant.suspend("", "revoke-1", LATER, "ops")
    assert [type(e) for e in participant.pending_events] == [ParticipantSuspended]


def test_state_rules_of_the_life_cycle() -> None:
    with pytest.raises(IdentityError, match="participant_not_suspended"):
        active().reinstate("", "grant-2", LATER, "ops")
    suspended = active()
    suspended.suspend("", "revoke-1", LATER, "ops")
    with pytest.raises(IdentityError, match="participant_suspended"):
        suspended.suspend("", "revoke-2", LATER, "ops")
    closed = active()
    closed.close("moved away", "revoke-1", LATER, "ops")
    assert isinstance(closed.pending_events[0], ParticipantClosed)
    assert isinstance(closed.pending_events[1], PermissionsRevokeRequested)
    for command in (
        lambda p: p.close("", "r", LATER, "ops"),
        lambda p: p.suspend("", "r", LATER, "ops"),
        lambda p: p.change_limits(None, LATER, "ops"),
        lambda p: p.attach_device("meter-2", LATER),
    ):
        with pytest.raises(IdentityError, match="participant_closed"):
            command(closed)


def test_one_metering_point_one_participant_until_released() -> None:
    claim = MeteringPointClaim(MeteringPointClaim.stream("MP-1"))
    claim.claim("p-1", START)
    claim.claim("p-1", START)  # the same participant again: nothing new
    assert len(claim.pending_events) == 1
    with pytest.raises(IdentityError, match="metering_point_taken"):
        claim.claim("p-2", START)
    claim.release("p-1", LATER)
    claim.claim("p-2", LATER)
    assert claim.holder == "p-2"
