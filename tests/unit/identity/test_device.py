"""Devices: registration, the DACT registered in advance, challenges (single use, short-lived,
rate-limited), revocation; a refused command leaves no events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from prosum_identity.domain.dact import Dact
from prosum_identity.domain.device import (
    ChallengeAnswered,
    ChallengeIssued,
    DactRegistered,
    Device,
    DeviceRevoked,
    RateLimit,
)
from prosum_identity.domain.errors import IdentityError, Refusal
from tests.unit.identity.fakes import START

KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
OTHER_KEY = "-fdLQfkG6DGHs7uwOjEcZRkLvd0qhSR_VGrFmHHeVNo"
TTL = timedelta(seconds=60)
RATE = RateLimit(3, timedelta(seconds=60))


def dact(**changes: object) -> Dact:
    fields: dict[str, object] = {
        "device_id": "meter-1",
        "participant_id": "p-1",
        "kind": "smart_meter",
        "metering_point": "MP-1",
        "actions": ("ask", "submit_readings"),
        "public_key": KEY,
    }
    fields.update(changes)
    return Dact(**fields)  # type: ignore[arg-type]


def device(with_dact: bool = True) -> Device:
    d = Device.register("meter-1", "p-1", "smart_meter", KEY, "MP-1", 5000, START, "ops")
    if with_dact:
        d.register_dact(dact(), START, "ops")
    d.mark_persisted()
    return d


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"device_id": "bad id"}, "device_id_invalid"),
        ({"kind": "toaster"}, "device_kind_invalid"),
        ({"public_key": "short"}, "public_key_malformed"),
        ({"rating_w": 0}, "rating_invalid"),
        ({"rating_w": True}, "rating_invalid"),
    ],
)
def test_a_malformed_device_is_refused(changes: dict[str, object], reason: str) -> None:
    args: dict[str, object] = {
        "device_id": "meter-1",
        "participant_id": "p-1",
        "kind": "smart_meter",
        "public_key": KEY,
        "metering_point": "MP-1",
        "rating_w": 5000,
        "now": START,
        "by": "ops",
    }
    args.update(changes)
    with pytest.raises(IdentityError) as refused:
        Device.register(**args)  # type: ignore[arg-type]
    assert refused.value.reason == reason


def test_the_dact_registered_is_its_digest_and_must_describe_the_device() -> None:
    d = device(with_dact=False)
    assert d.register_dact(dact(), START, "ops") is True
    assert d.pending_events == (
        DactRegistered(
            dact_sha256=dact().digest(),
            actions=("ask", "submit_readings"),
            registered_at=START,
            registered_by="ops",
        ),
    )
    assert d.register_dact(dact(), START, "ops") is False, "the same DACT again: no event"
    for wrong in ({"public_key": OTHER_KEY}, {"metering_point": "MP-2"}, {"kind": "battery"}):
        with pytest.raises(IdentityError, match="dact_does_not_describe_device"):
            d.register_dact(dact(**wrong), START, "ops")


def test_a_challenge_is_issued_and_answered_once() -> None:
    d = device()
    challenge = d.issue_challenge("ch-1", "nonce", START, TTL, RATE)
    assert d.pending_events[-1] == ChallengeIssued(
        challenge_id="ch-1", nonce="nonce", issued_at=START, expires_at=START + TTL
    )
    assert d.open_challenge("ch-1", START + timedelta(seconds=59)) == challenge
    d.answer_challenge("ch-1", "th-1", START + timedelta(seconds=1))
    assert d.pending_events[-1] == ChallengeAnswered(
        challenge_id="ch-1", threshold_id="th-1", answered_at=START + timedelta(seconds=1)
    )
    d.mark_persisted()
    with pytest.raises(IdentityError) as replay:
        d.answer_challenge("ch-1", "th-2", START + timedelta(seconds=2))
    assert (replay.value.kind, replay.value.reason) == (Refusal.CONFLICT, "challenge_used")
    assert d.pending_events == ()


def test_an_expired_or_unknown_challenge_cannot_be_answered() -> None:
    d = device()
    d.issue_challenge("ch-1", "nonce", START, TTL, RATE)
    d.mark_persisted()
    with pytest.raises(IdentityError) as expired:
        d.open_challenge("ch-1", START + TTL)
    assert (expired.value.kind, expired.value.reason) == (Refusal.GONE, "challenge_expired")
    with pytest.raises(IdentityError) as unknown:
        d.open_challenge("ch-404", START)
    assert (unknown.value.kind, unknown.value.reason) == (Refusal.NOT_FOUND, "challenge_unknown")


def test_challenges_are_rate_limited_per_device_with_the_wait() -> None:
    d = device()
    for i in range(3):
        d.issue_challenge(f"ch-{i}", "n", START + timedelta(seconds=10 * i), TTL, RATE)
    d.mark_persisted()
    with pytest.raises(IdentityError) as limited:
        d.issue_challenge("ch-3", "n", START + timedelta(seconds=25), TTL, RATE)
    assert limited.value.kind is Refusal.RATE_LIMITED
    assert limited.value.reason == "challenge_rate_limited"
    assert limited.value.retry_after_s == 35, "the oldest in the window leaves it at 60 s"
    assert d.pending_events == ()
    d.issue_challenge("ch-3", "n", START + timedelta(seconds=60), TTL, RATE)


def test_no_challenge_without_a_registered_dact_or_for_a_revoked_device() -> None:
    with pytest.raises(IdentityError, match="dact_not_registered"):
        device(with_dact=False).issue_challenge("ch-1", "n", START, TTL, RATE)
    d = device()
    d.revoke("stolen", START, "ops")
    assert d.pending_events[-1] == DeviceRevoked(
        reason="stolen", revoked_at=START, revoked_by="ops"
    )
    with pytest.raises(IdentityError) as refused:
        d.issue_challenge("ch-1", "n", START, TTL, RATE)
    assert (refused.value.kind, refused.value.reason) == (Refusal.FORBIDDEN, "device_revoked")
    with pytest.raises(IdentityError, match="device_revoked"):
        d.revoke("again", START, "ops")


def test_the_presented_dact_must_be_the_registered_one() -> None:
    d = device()
    d.match_dact(dact())
    with pytest.raises(IdentityError) as mismatch:
        d.match_dact(dact(actions=("ask", "bid", "submit_readings")))
    assert (mismatch.value.kind, mismatch.value.reason) == (Refusal.FORBIDDEN, "dact_mismatch")


def test_old_challenges_are_forgotten_and_a_snapshot_keeps_the_rest() -> None:
    d = device()
    rate = RateLimit(128, timedelta(seconds=1))
    for i in range(300):
        d.issue_challenge(f"ch-{i}", "n", START + timedelta(seconds=i), TTL, rate)
    assert len(d.challenges) <= 128
    assert "ch-299" in d.challenges and "ch-0" not in d.challenges
    again = Device.from_snapshot(d.id, d.version, d.snapshot_state())
    assert again.snapshot_state() == d.snapshot_state()
    assert again.challenges == d.challenges
