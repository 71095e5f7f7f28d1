"""The certification node: a device that holds its key and its registered DACT gets a threshold
another service accepts; every bad input is refused with its own reason and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_auth import AuthError, TokenSigner
from prosum_auth import Limits as AuthLimits
from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.domain.dact import Dact
from prosum_identity.domain.errors import IdentityError, Refusal
from prosum_identity.domain.model import Limits
from tests.unit.identity.harness import DeviceKey, Harness


@pytest.fixture
def identity() -> Harness:
    return Harness()


@pytest.fixture
def meter(identity: Harness) -> DeviceKey:
    identity.active_participant("p-1", "prosumer")
    return identity.device("p-1", "meter-1")


def refused(identity: Harness, attempt: Callable[[], Any], kind: Refusal, reason: str) -> None:
    before = identity.store.size()
    with pytest.raises(IdentityError) as error:
        attempt()
    assert (error.value.kind, error.value.reason) == (kind, reason), error.value.detail
    assert identity.store.size() == before, "a refused request changes nothing"


def test_a_device_gets_a_threshold_another_service_accepts(
    identity: Harness, meter: DeviceKey
) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    assert challenge.message.split("\n")[:4] == [
        "prosum.threshold-request.v1",
        challenge.challenge_id,
        challenge.nonce,
        "meter-1",
    ]
    issued = identity.thresholds.issue(identity.request(meter, challenge))
    assert issued.actions == ("ask", "bid", "read_data", "submit_readings")
    assert issued.limits == identity.policy.default_limits
    assert (issued.expires_at - issued.issued_at).total_seconds() == 300

    accepted = identity.verifier.threshold(issued.threshold, "ask", order_wh=5_000, ecoin=1_200)
    assert (accepted.threshold_id, accepted.participant_id, accepted.device_id) == (
        issued.threshold_id,
        "p-1",
        "meter-1",
    )
    assert accepted.metering_point == "MP-p-1"
    assert accepted.expires_at == int(issued.expires_at.timestamp())
    [event] = [d for t, _s, d in identity.store.published if t == "identity.threshold_issued"]
    assert event["threshold_id"] == issued.threshold_id
    assert (event["max_order_wh"], event["actions"]) == (100_000, list(issued.actions))


def test_the_threshold_holds_the_dacts_actions_that_the_role_permits(identity: Harness) -> None:
    identity.active_participant("p-2", "consumer")
    key = identity.device("p-2", "charger-1", actions=("ask", "bid", "read_data"))
    issued = identity.threshold(key)
    assert issued.actions == ("bid", "read_data"), "a consumer does not sell"
    with pytest.raises(AuthError) as refusal:
        identity.verifier.threshold(issued.threshold, "ask")
    assert refusal.value.reason == "action_not_allowed"


def test_a_device_may_ask_for_less_than_it_is_allowed(identity: Harness, meter: DeviceKey) -> None:
    issued = identity.threshold(meter, actions=("submit_readings",))
    assert issued.actions == ("submit_readings",)


def test_limits_come_from_the_participant_when_set(identity: Harness, meter: DeviceKey) -> None:
    identity.participants.set_limits("p-1", Limits(2_000, 8_000, 900), "ops")
    issued = identity.threshold(meter)
    assert issued.limits == Limits(2_000, 8_000, 900)
    with pytest.raises(AuthError) as too_big:
        identity.verifier.threshold(issued.threshold, "bid", order_wh=2_001)
    assert too_big.value.reason == "limit_exceeded"
    with pytest.raises(AuthError) as too_dear:
        identity.verifier.threshold(issued.threshold, "bid", order_wh=2_000, ecoin=901)
    assert too_dear.value.reason == "limit_exceeded"


# -- bad input and attacks at identity: one test each ------------------------------------------


def test_a_wrong_signature(identity: Harness, meter: DeviceKey) -> None:
    impostor = identity.device("p-1", "meter-2")  # another key
    challenge = identity.thresholds.challenge("meter-1")
    request = identity.request(meter, challenge, signature=impostor.sign(challenge.message))
    refused(
        identity,
        lambda: identity.thresholds.issue(request),
        Refusal.UNAUTHENTICATED,
        "signature_invalid",
    )


def test_a_signature_over_another_challenge(identity: Harness, meter: DeviceKey) -> None:
    first = identity.thresholds.challenge("meter-1")
    second = identity.thresholds.challenge("meter-1")
    request = identity.request(meter, second, signature=meter.sign(first.message))
    refused(
        identity,
        lambda: identity.thresholds.issue(request),
        Refusal.UNAUTHENTICATED,
        "signature_invalid",
    )


def test_a_malformed_signature(identity: Harness, meter: DeviceKey) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    request = identity.request(meter, challenge, signature="not-base64url!")
    refused(
        identity, lambda: identity.thresholds.issue(request), Refusal.INVALID, "signature_malformed"
    )


def test_a_replayed_challenge(identity: Harness, meter: DeviceKey) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    request = identity.request(meter, challenge)
    identity.thresholds.issue(request)
    refused(
        identity, lambda: identity.thresholds.issue(request), Refusal.CONFLICT, "challenge_used"
    )


def test_an_expired_challenge(identity: Harness, meter: DeviceKey) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    identity.clock.advance(identity.policy.challenge_ttl_s)
    request = identity.request(meter, challenge)
    refused(identity, lambda: identity.thresholds.issue(request), Refusal.GONE, "challenge_expired")


def test_an_unknown_challenge(identity: Harness, meter: DeviceKey) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    request = identity.request(meter, challenge, challenge_id="ch-made-up")
    refused(
        identity, lambda: identity.thresholds.issue(request), Refusal.NOT_FOUND, "challenge_unknown"
    )


def test_a_dact_that_does_not_match(identity: Harness, meter: DeviceKey) -> None:
    # The device signs honestly but presents a DACT widened after registration.
    forged = {**meter.dact, "actions": ["ask", "bid", "read_data", "submit_readings"]}
    meter.dact = {**meter.dact, "actions": ["submit_readings"]}
    identity.devices.register_dact("meter-1", meter.dact, "ops")
    challenge = identity.thresholds.challenge("meter-1")
    message = challenge.message.rsplit("\n", 1)[0]
    signed = f"{message}\n{Dact.from_document(forged).digest()}"
    request = identity.request(meter, challenge, dact=forged, signature=meter.sign(signed))
    refused(
        identity, lambda: identity.thresholds.issue(request), Refusal.FORBIDDEN, "dact_mismatch"
    )


def test_a_malformed_dact(identity: Harness, meter: DeviceKey) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    request = identity.request(meter, challenge, dact={**meter.dact, "admin": True})
    refused(identity, lambda: identity.thresholds.issue(request), Refusal.INVALID, "dact_malformed")


def test_an_unknown_device(identity: Harness, meter: DeviceKey) -> None:
    refused(
        identity,
        lambda: identity.thresholds.challenge("meter-404"),
        Refusal.NOT_FOUND,
        "device_unknown",
    )


def test_a_revoked_device(identity: Harness, meter: DeviceKey) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    identity.devices.revoke("meter-1", "stolen", "ops")
    request = identity.request(meter, challenge)
    refused(
        identity, lambda: identity.thresholds.issue(request), Refusal.FORBIDDEN, "device_revoked"
    )
    refused(
        identity,
        lambda: identity.thresholds.challenge("meter-1"),
        Refusal.FORBIDDEN,
        "device_revoked",
    )


def test_a_suspended_participant(identity: Harness, meter: DeviceKey) -> None:
    challenge = identity.thresholds.challenge("meter-1")
    identity.participants.suspend("p-1", "unpaid", "ops")
    request = identity.request(meter, challenge)
    refused(
        identity,
        lambda: identity.thresholds.issue(request),
        Refusal.FORBIDDEN,
        "participant_suspended",
    )
    refused(
        identity,
        lambda: identity.thresholds.challenge("meter-1"),
        Refusal.FORBIDDEN,
        "participant_suspended",
    )


def test_a_participant_whose_grant_is_not_confirmed(identity: Harness) -> None:
    identity.participants.register("Bob", "producer", "MP-p-9", None, "ops", "p-9")
    identity.device("p-9", "meter-9")
    refused(
        identity,
        lambda: identity.thresholds.challenge("meter-9"),
        Refusal.FORBIDDEN,
        "participant_pending",
    )


def test_an_action_beyond_what_is_permitted(identity: Harness) -> None:
    identity.active_participant("p-2", "producer")
    key = identity.device("p-2", "meter-2", actions=("ask", "submit_readings"))
    challenge = identity.thresholds.challenge("meter-2")
    request = identity.request(key, challenge, actions=("bid",))
    refused(
        identity,
        lambda: identity.thresholds.issue(request),
        Refusal.FORBIDDEN,
        "action_not_permitted",
    )


def test_too_many_challenges_from_one_device() -> None:
    identity = Harness(IdentityPolicy(challenge_limit=3, challenge_window_s=60))
    identity.active_participant("p-1")
    identity.device("p-1", "meter-1")
    for _ in range(3):
        identity.thresholds.challenge("meter-1")
        identity.clock.advance(5)
    before = identity.store.size()
    with pytest.raises(IdentityError) as limited:
        identity.thresholds.challenge("meter-1")
    assert (limited.value.kind, limited.value.reason) == (
        Refusal.RATE_LIMITED,
        "challenge_rate_limited",
    )
    assert limited.value.retry_after_s == 45
    assert identity.store.size() == before
    identity.clock.advance(45)
    identity.thresholds.challenge("meter-1")


# -- bad thresholds at the verifier: one test each ----------------------------------------------


def test_an_expired_threshold(identity: Harness, meter: DeviceKey) -> None:
    issued = identity.threshold(meter)
    identity.clock.advance(identity.policy.threshold_ttl_s + 6)  # past the 5 s leeway
    with pytest.raises(AuthError) as refusal:
        identity.verifier.threshold(issued.threshold, "ask")
    assert refusal.value.reason == "credential_expired"


def test_a_tampered_threshold(identity: Harness, meter: DeviceKey) -> None:
    issued = identity.threshold(meter, actions=("submit_readings",))
    header, _payload, signature = issued.threshold.split(".")
    claims = jwt.decode(issued.threshold, options={"verify_signature": False})
    claims["act"] = ["ask", "bid", "submit_readings"]
    claims["lim"]["max_order_wh"] = 10**9
    forged_payload = jwt.utils.base64url_encode(jwt.api_jwt.json.dumps(claims).encode()).decode()
    with pytest.raises(AuthError) as refusal:
        identity.verifier.threshold(f"{header}.{forged_payload}.{signature}", "ask")
    assert refusal.value.reason == "signature_invalid"


def test_a_threshold_signed_by_an_unknown_key(identity: Harness, meter: DeviceKey) -> None:
    issued = identity.threshold(meter)
    claims = jwt.decode(issued.threshold, options={"verify_signature": False})
    rogue = TokenSigner("k-rogue", Ed25519PrivateKey.generate(), clock=identity.clock.timestamp)
    forged = rogue.threshold(
        "th-rogue", "p-1", "meter-1", "MP-p-1", ["ask"], AuthLimits(10**9, 10**9, 10**9), 300
    )
    assert claims["iss"] == "prosum-identity"
    with pytest.raises(AuthError) as refusal:
        identity.verifier.threshold(forged, "ask")
    assert refusal.value.reason == "unknown_signing_key"


def test_a_threshold_used_beyond_its_scope(identity: Harness, meter: DeviceKey) -> None:
    issued = identity.threshold(meter, actions=("submit_readings",))
    with pytest.raises(AuthError) as refusal:
        identity.verifier.threshold(issued.threshold, "bid", order_wh=1)
    assert refusal.value.reason == "action_not_allowed"


def test_a_threshold_used_beyond_its_limits(identity: Harness, meter: DeviceKey) -> None:
    issued = identity.threshold(meter)
    with pytest.raises(AuthError) as refusal:
        identity.verifier.threshold(issued.threshold, "ask", order_wh=100_001)
    assert refusal.value.reason == "limit_exceeded"


@pytest.mark.parametrize(
    ("revoke", "reason"),
    [
        (lambda i, t: i.thresholds.revoke(t.threshold_id, "lost", "ops"), "threshold_revoked"),
        (lambda i, t: i.devices.revoke(t.device_id, "stolen", "ops"), "device_revoked"),
        (
            lambda i, t: i.participants.suspend(t.participant_id, "", "ops"),
            "participant_not_active",
        ),
        (lambda i, t: i.participants.close(t.participant_id, "", "ops"), "device_revoked"),
    ],
)
def test_a_revocation_holds_before_the_threshold_expires(
    identity: Harness, meter: DeviceKey, revoke: Callable[[Harness, Any], None], reason: str
) -> None:
    issued = identity.threshold(meter)
    identity.verifier.threshold(issued.threshold, "ask")
    revoke(identity, issued)
    with pytest.raises(AuthError) as refusal:
        identity.verifier.threshold(issued.threshold, "ask")
    assert refusal.value.reason == reason


def test_a_participant_revokes_only_its_own_thresholds(identity: Harness, meter: DeviceKey) -> None:
    issued = identity.threshold(meter)
    refused(
        identity,
        lambda: identity.thresholds.revoke(issued.threshold_id, "", "app", acting_for="p-2"),
        Refusal.NOT_FOUND,
        "threshold_unknown",
    )
    identity.thresholds.revoke(issued.threshold_id, "lost phone", "app", acting_for="p-1")
    refused(
        identity,
        lambda: identity.thresholds.revoke(issued.threshold_id, "again", "ops"),
        Refusal.CONFLICT,
        "threshold_revoked",
    )
