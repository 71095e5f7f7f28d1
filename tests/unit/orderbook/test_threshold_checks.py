"""The cached threshold check answers as ``prosum_auth.TokenVerifier`` does, use after use."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_auth import AuthError, KeySet, Limits, TokenSigner, TokenVerifier, jwk_of
from prosum_orderbook.adapters.credentials import ThresholdChecks

NOW = 1_800_000_000.0


class Trust:
    """A trust view in memory (the revocations and statuses identity published)."""

    def __init__(self) -> None:
        self.revoked_thresholds: set[str] = set()
        self.inactive: set[str] = set()

    def revoked(self, threshold_id: str, device_id: str, participant_id: str) -> str | None:
        if threshold_id in self.revoked_thresholds:
            return "threshold_revoked"
        if participant_id in self.inactive:
            return "participant_not_active"
        return None


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


Setup = tuple[TokenSigner, ThresholdChecks, Trust, Clock, dict[str, KeySet]]


@pytest.fixture
def setup() -> Setup:
    key = Ed25519PrivateKey.generate()
    clock = Clock()
    trust = Trust()
    keys = {"current": KeySet.from_jwks([jwk_of("k1", key.public_key())])}
    verifier = TokenVerifier(lambda: keys["current"], trust, clock=clock)
    checks = ThresholdChecks(verifier, trust, lambda: keys["current"], clock=clock)
    return TokenSigner("k1", key, clock), checks, trust, clock, keys


def token(signer: TokenSigner, ttl_s: int = 60) -> str:
    return signer.threshold(
        "th-1", "p-1", "d-1", "mp-1", ["ask"], Limits(5_000, 10_000, 900), ttl_s
    )


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(AuthError) as refused:
        call()
    return refused.value.reason


def test_a_token_is_verified_once_and_its_limits_and_action_checked_on_every_use(
    setup: Setup,
) -> None:
    signer, checks, _trust, _clock, _keys = setup
    threshold = token(signer)
    assert not checks.verified(threshold)
    assert checks.check(threshold, "ask", order_wh=5_000).participant_id == "p-1"
    assert checks.verified(threshold)
    assert checks.check(threshold, "ask", order_wh=100).threshold_id == "th-1"
    assert reason(lambda: checks.check(threshold, "ask", order_wh=5_001)) == "limit_exceeded"
    assert reason(lambda: checks.check(threshold, "bid")) == "action_not_allowed"
    assert reason(lambda: checks.check(threshold, "ask", ecoin=901)) == "limit_exceeded"


def test_revocation_status_and_expiry_hold_for_a_token_verified_before(setup: Setup) -> None:
    signer, checks, trust, clock, _keys = setup
    threshold = token(signer, ttl_s=60)
    checks.check(threshold, "ask")
    trust.inactive.add("p-1")
    assert reason(lambda: checks.check(threshold, "ask")) == "participant_not_active"
    assert checks.check(threshold, "ask", with_trust=False).participant_id == "p-1"
    trust.inactive.clear()
    trust.revoked_thresholds.add("th-1")
    assert reason(lambda: checks.check(threshold, "ask")) == "threshold_revoked"
    trust.revoked_thresholds.clear()
    clock.now = NOW + 66
    assert reason(lambda: checks.check(threshold, "ask")) == "credential_expired"


def test_a_withdrawn_signing_key_is_noticed_for_a_token_verified_before(setup: Setup) -> None:
    signer, checks, _trust, _clock, keys = setup
    threshold = token(signer)
    checks.check(threshold, "ask")
    keys["current"] = KeySet({})
    assert reason(lambda: checks.check(threshold, "ask")) == "unknown_signing_key"


def test_what_is_not_a_valid_token_is_refused_like_the_verifier_refuses_it(setup: Setup) -> None:
    _signer, checks, _trust, _clock, _keys = setup
    assert reason(lambda: checks.check(None, "ask")) == "credential_missing"
    assert reason(lambda: checks.check("not.a.token", "ask")) == "credential_malformed"
    forged = token(TokenSigner("k1", Ed25519PrivateKey.generate()))
    assert reason(lambda: checks.check(forged, "ask")) == "signature_invalid"
