"""Signing-key rotation as verifiers see it, and OAuth2 client credentials."""

from __future__ import annotations

import jwt
import pytest

from prosum_auth import AuthError
from prosum_identity.application.clients import OAuthError
from prosum_identity.application.policy import IdentityPolicy
from tests.unit.identity.harness import OPS_SECRET, Harness


@pytest.fixture
def identity() -> Harness:
    return Harness()


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def keys_changed(identity: Harness) -> list[dict[str, object]]:
    return [d for t, _s, d in identity.store.published if t == "identity.signing_keys_changed"]


def test_the_first_start_makes_and_announces_one_key(identity: Harness) -> None:
    [announcement] = keys_changed(identity)
    [key] = announcement["keys"]  # type: ignore[misc]
    assert announcement["active_kid"] == key["kid"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert identity.keys.ensure() is False, "a second start makes no second key"
    assert len(keys_changed(identity)) == 1


def test_a_token_signed_before_rotation_verifies_until_it_expires(identity: Harness) -> None:
    before = identity.clients.token("client_credentials", "ops", OPS_SECRET, None).access_token
    old_kid = kid_of(before)
    new_kid = identity.keys.rotate()
    after = identity.clients.token("client_credentials", "ops", OPS_SECRET, None).access_token
    assert kid_of(after) == new_kid != old_kid
    latest = keys_changed(identity)[-1]
    assert latest["active_kid"] == new_kid
    assert {k["kid"] for k in latest["keys"]} == {old_kid, new_kid}  # type: ignore[attr-defined]

    identity.clock.advance(identity.policy.access_token_ttl_s - 1)
    identity.keys.maintain()
    assert identity.verifier.access(before, "ops").subject == "ops"
    assert identity.verifier.access(after, "ops").subject == "ops"
    identity.clock.advance(identity.policy.verifier_leeway_s + 2)
    with pytest.raises(AuthError) as expired:
        identity.verifier.access(before, "ops")
    assert expired.value.reason == "credential_expired"


def test_a_token_signed_by_a_removed_key_does_not_verify(identity: Harness) -> None:
    before = identity.clients.token("client_credentials", "ops", OPS_SECRET, None).access_token
    old_kid = kid_of(before)
    identity.keys.rotate()
    identity.clock.advance(identity.policy.key_retention.total_seconds())
    assert identity.keys.maintain() is True
    latest = keys_changed(identity)[-1]
    assert old_kid not in {k["kid"] for k in latest["keys"]}  # type: ignore[attr-defined]
    assert old_kid not in identity.store.vault, "its private half is destroyed"
    with pytest.raises(AuthError) as refusal:
        identity.verifier.access(before, "ops")
    assert refusal.value.reason == "unknown_signing_key"


def test_with_a_publication_lead_the_new_key_is_known_before_it_signs() -> None:
    identity = Harness(IdentityPolicy(key_publish_lead_s=30))
    old = kid_of(identity.clients.token("client_credentials", "ops", OPS_SECRET, None).access_token)
    new = identity.keys.rotate()
    assert new in {k["kid"] for k in keys_changed(identity)[-1]["keys"]}  # type: ignore[attr-defined]
    assert keys_changed(identity)[-1]["active_kid"] == old
    token = identity.clients.token("client_credentials", "ops", OPS_SECRET, None).access_token
    assert kid_of(token) == old, "the old key signs until the new one's time"
    identity.clock.advance(30)
    assert (
        kid_of(identity.clients.token("client_credentials", "ops", OPS_SECRET, None).access_token)
        == new
    )
    assert identity.keys.maintain() is True
    assert keys_changed(identity)[-1]["active_kid"] == new


def test_the_ops_client_from_configuration_gets_an_ops_token(identity: Harness) -> None:
    grant = identity.clients.token("client_credentials", "ops", OPS_SECRET, None)
    claims = identity.verifier.access(grant.access_token, "ops")
    assert (claims.subject, claims.scopes, grant.scope) == ("ops", {"ops"}, "ops")
    assert grant.expires_in == identity.policy.access_token_ttl_s


def test_a_partner_client_has_its_scope_and_its_secret_only_once(identity: Harness) -> None:
    made = identity.clients.create("EV charging operator", frozenset({"partner"}), None, "ops")
    grant = identity.clients.token("client_credentials", made.client_id, made.client_secret, None)
    claims = identity.verifier.access(grant.access_token, "partner")
    assert claims.subject == made.client_id
    with pytest.raises(AuthError) as refusal:
        identity.verifier.access(grant.access_token, "ops")
    assert refusal.value.reason == "insufficient_scope"
    stored = repr(identity.store.streams) + repr(identity.store.published)
    assert made.client_secret not in stored


def test_a_participant_client_speaks_for_its_participant(identity: Harness) -> None:
    identity.active_participant("p-1")
    made = identity.clients.create("Alice's app", frozenset({"participant"}), "p-1", "ops")
    grant = identity.clients.token("client_credentials", made.client_id, made.client_secret, None)
    assert identity.verifier.access(grant.access_token, "participant").participant_id == "p-1"
    identity.participants.close("p-1", "", "ops")
    with pytest.raises(OAuthError) as refused:
        identity.clients.token("client_credentials", made.client_id, made.client_secret, None)
    assert refused.value.error == "unauthorized_client"


@pytest.mark.parametrize(
    ("grant_type", "client", "secret", "scope", "error"),
    [
        (None, "ops", OPS_SECRET, None, "invalid_request"),
        ("password", "ops", OPS_SECRET, None, "unsupported_grant_type"),
        ("client_credentials", "ops", "wrong", None, "invalid_client"),
        ("client_credentials", "cl-nobody", "wrong", None, "invalid_client"),
        ("client_credentials", "", "", None, "invalid_client"),
        ("client_credentials", "ops", OPS_SECRET, "ops partner", "invalid_scope"),
    ],
)
def test_token_requests_are_refused_with_rfc6749_errors(
    identity: Harness,
    grant_type: str | None,
    client: str,
    secret: str,
    scope: str | None,
    error: str,
) -> None:
    with pytest.raises(OAuthError) as refused:
        identity.clients.token(grant_type, client, secret, scope)
    assert refused.value.error == error
    assert refused.value.status == (401 if error == "invalid_client" else 400)


def test_a_rotated_or_disabled_client_secret_stops_working(identity: Harness) -> None:
    made = identity.clients.create("Aggregator", frozenset({"partner"}), None, "ops")
    fresh = identity.clients.rotate_secret(made.client_id, "ops")
    with pytest.raises(OAuthError, match="invalid_client"):
        identity.clients.token("client_credentials", made.client_id, made.client_secret, None)
    identity.clients.token("client_credentials", made.client_id, fresh.client_secret, None)
    identity.clients.disable(made.client_id, "contract ended", "ops")
    with pytest.raises(OAuthError, match="invalid_client"):
        identity.clients.token("client_credentials", made.client_id, fresh.client_secret, None)
