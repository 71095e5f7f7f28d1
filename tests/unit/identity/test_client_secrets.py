"""Client secrets are kept as scrypt hashes and checked in constant time; clients have scopes
and, for participant apps, their participant."""

from __future__ import annotations

import pytest

from prosum_identity.domain.clients import ApiClient, ClientStatus, hash_secret, verify_secret
from prosum_identity.domain.errors import IdentityError
from tests.unit.identity.fakes import START

FAST = {"n": 2**4, "r": 1, "p": 1}


def test_a_secret_verifies_against_its_hash_and_nothing_else() -> None:
    encoded = hash_secret("correct horse battery staple", **FAST)
    assert encoded.startswith("scrypt$16$1$1$")
    assert "correct horse" not in encoded
    assert verify_secret("correct horse battery staple", encoded)
    assert not verify_secret("correct horse battery stapler", encoded)
    assert hash_secret("same", **FAST) != hash_secret("same", **FAST), "salted"


@pytest.mark.parametrize("garbage", ["", "plain", "bcrypt$1$2$3$4$5", "scrypt$x$1$1$a$b"])
def test_a_damaged_hash_never_verifies(garbage: str) -> None:
    assert not verify_secret("anything", garbage)


def test_scopes_and_participant_binding() -> None:
    client = ApiClient.register(
        "cl-1", "EV operator", frozenset({"partner"}), None, "h", START, "ops"
    )
    assert client.scopes == {"partner"}
    with pytest.raises(IdentityError, match="scope_invalid"):
        ApiClient.register("cl-2", "x", frozenset({"root"}), None, "h", START, "ops")
    with pytest.raises(IdentityError, match="scope_invalid"):
        ApiClient.register("cl-3", "x", frozenset({"participant"}), None, "h", START, "ops")
    with pytest.raises(IdentityError, match="scope_invalid"):
        ApiClient.register("cl-4", "x", frozenset({"partner"}), "p-1", "h", START, "ops")
    client.disable("contract ended", START, "ops")
    assert client.status is ClientStatus.DISABLED
    with pytest.raises(IdentityError, match="client_disabled"):
        client.rotate_secret("h2", START, "ops")
