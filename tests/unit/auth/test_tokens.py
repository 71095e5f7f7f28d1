"""Access tokens and thresholds verify offline; everything wrong with them is named."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_auth import AuthError, KeySet, Limits, TokenSigner, TokenVerifier, jwk_of

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Revoked:
    def __init__(self) -> None:
        self.thresholds: set[str] = set()
        self.devices: set[str] = set()
        self.inactive: set[str] = set()

    def revoked(self, threshold_id: str, device_id: str, participant_id: str) -> str | None:
        if threshold_id in self.thresholds:
            return "threshold_revoked"
        if device_id in self.devices:
            return "device_revoked"
        if participant_id in self.inactive:
            return "participant_not_active"
        return None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(key: Ed25519PrivateKey, clock: Clock) -> TokenSigner:
    return TokenSigner("k1", key, clock)


@pytest.fixture
def trust() -> Revoked:
    return Revoked()


@pytest.fixture
def verifier(key: Ed25519PrivateKey, clock: Clock, trust: Revoked) -> TokenVerifier:
    keys = KeySet.from_jwks([jwk_of("k1", key.public_key())])
    return TokenVerifier(lambda: keys, trust, clock=clock)


def threshold(signer: TokenSigner, **overrides: object) -> str:
    args: dict[str, object] = {
        "threshold_id": "th-1",
        "participant_id": "p-1",
        "device_id": "d-1",
        "metering_point": "mp-1",
        "actions": ["bid", "ask"],
        "limits": Limits(10_000, 50_000, 1_000_000),
        "ttl_s": 300,
    }
    args.update(overrides)
    return signer.threshold(**args)  # type: ignore[arg-type]


def reason(call: object) -> str:
    with pytest.raises(AuthError) as caught:
        call()  # type: ignore[operator]
    return caught.value.reason


def test_a_valid_access_token_gives_its_claims(
    signer: TokenSigner, verifier: TokenVerifier
) -> None:
    token = signer.access_token("ops-console", ["ops"], 600)
    claims = verifier.access(token, "ops")
    assert claims.subject == "ops-console"
    assert claims.scopes == {"ops"}


def test_access_token_refusals(signer: TokenSigner, verifier: TokenVerifier, clock: Clock) -> None:
    partner = signer.access_token("retailer", ["partner"], 600)
    assert reason(lambda: verifier.access(partner, "ops")) == "insufficient_scope"
    assert reason(lambda: verifier.access(None, "ops")) == "credential_missing"
    assert reason(lambda: verifier.access("not.a.token", "ops")) == "credential_malformed"
    th = threshold(signer)
    assert reason(lambda: verifier.access(th, "ops")) == "wrong_credential_type"
    clock.now += 601 + 10
    assert reason(lambda: verifier.access(partner, "partner")) == "credential_expired"


def test_a_tampered_token_fails_its_signature(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = threshold(signer)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["lim"]["max_order_wh"] = 10**9
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert (
        reason(lambda: verifier.threshold(f"{header}.{forged}.{signature}", "bid"))
        == "signature_invalid"
    )


def test_a_token_from_an_unknown_key_is_refused(verifier: TokenVerifier, clock: Clock) -> None:
    stranger = TokenSigner("k1", Ed25519PrivateKey.generate(), clock)
    assert reason(lambda: verifier.threshold(threshold(stranger), "bid")) == "signature_invalid"
    other_kid = TokenSigner("k9", Ed25519PrivateKey.generate(), clock)
    assert reason(lambda: verifier.threshold(threshold(other_kid), "bid")) == "unknown_signing_key"


def test_other_algorithms_are_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode(
        {"sub": "p"}, "secret", algorithm="HS256", headers={"kid": "k1", "typ": "threshold+jwt"}
    )
    assert reason(lambda: verifier.threshold(token, "bid")) == "credential_malformed"


def test_thresholds_cover_their_actions_and_limits(
    signer: TokenSigner, verifier: TokenVerifier
) -> None:
    token = threshold(signer)
    granted = verifier.threshold(token, "bid", order_wh=10_000, ecoin=1_000_000)
    assert granted.participant_id == "p-1"
    assert granted.limits.max_open_wh == 50_000
    assert reason(lambda: verifier.threshold(token, "submit_readings")) == "action_not_allowed"
    assert reason(lambda: verifier.threshold(token, "bid", order_wh=10_001)) == "limit_exceeded"
    assert reason(lambda: verifier.threshold(token, "bid", ecoin=1_000_001)) == "limit_exceeded"


def test_revoked_and_suspended_are_refused_before_expiry(
    signer: TokenSigner, verifier: TokenVerifier, trust: Revoked
) -> None:
    token = threshold(signer)
    trust.thresholds.add("th-1")
    assert reason(lambda: verifier.threshold(token, "bid")) == "threshold_revoked"
    trust.thresholds.clear()
    trust.devices.add("d-1")
    assert reason(lambda: verifier.threshold(token, "bid")) == "device_revoked"
    trust.devices.clear()
    trust.inactive.add("p-1")
    assert reason(lambda: verifier.threshold(token, "bid")) == "participant_not_active"


def test_rotation_keeps_old_tokens_until_they_expire(key: Ed25519PrivateKey, clock: Clock) -> None:
    old = TokenSigner("k1", key, clock)
    new_key = Ed25519PrivateKey.generate()
    new = TokenSigner("k2", new_key, clock)
    both = KeySet.from_jwks([jwk_of("k1", key.public_key()), jwk_of("k2", new_key.public_key())])
    only_new = KeySet.from_jwks([jwk_of("k2", new_key.public_key())])
    before = old.access_token("ops", ["ops"], 600)
    after = new.access_token("ops", ["ops"], 600)
    rotated = TokenVerifier(lambda: both, clock=clock)
    assert rotated.access(before, "ops").subject == "ops"
    assert rotated.access(after, "ops").subject == "ops"
    removed = TokenVerifier(lambda: only_new, clock=clock)
    with pytest.raises(AuthError) as caught:
        removed.access(before, "ops")
    assert caught.value.reason == "unknown_signing_key"
