"""The signing key ring: the first key, rotation with a publication lead, retirement and
removal exactly when every token a key signed has expired."""

from __future__ import annotations

from datetime import timedelta

import pytest

from prosum_identity.domain.errors import IdentityError
from prosum_identity.domain.keyring import (
    SigningKeyActivated,
    SigningKeyAdded,
    SigningKeyRemoved,
    SigningKeyRetired,
    SigningKeyRing,
)
from tests.unit.identity.fakes import START

RETENTION = timedelta(seconds=906)


def ring_with_first_key() -> SigningKeyRing:
    ring = SigningKeyRing()
    ring.add_key("k1", "x1", START, START, RETENTION)
    ring.mark_persisted()
    return ring


def test_the_first_key_signs_at_once() -> None:
    ring = SigningKeyRing()
    ring.add_key("k1", "x1", START, START, RETENTION)
    assert ring.pending_events == (
        SigningKeyAdded(kid="k1", public_key="x1", created_at=START, activates_at=START),
        SigningKeyActivated(kid="k1", activated_at=START),
    )
    assert ring.active_at(START).kid == "k1"  # type: ignore[union-attr]
    assert ring.announced_active() == "k1"


def test_a_rotated_in_key_is_published_first_and_signs_after_the_lead() -> None:
    ring = ring_with_first_key()
    rotation = START + timedelta(hours=1)
    ring.add_key("k2", "x2", rotation, rotation + timedelta(seconds=30), RETENTION)
    added, retired = ring.pending_events
    assert isinstance(added, SigningKeyAdded)
    assert retired == SigningKeyRetired(
        kid="k1",
        retired_at=rotation + timedelta(seconds=30),
        remove_after=rotation + timedelta(seconds=30) + RETENTION,
    )
    assert [k.kid for k in ring.published()] == ["k1", "k2"]
    assert ring.active_at(rotation + timedelta(seconds=29)).kid == "k1"  # type: ignore[union-attr]
    assert ring.active_at(rotation + timedelta(seconds=30)).kid == "k2"  # type: ignore[union-attr]
    ring.mark_persisted()
    assert ring.maintain(rotation + timedelta(seconds=10)) is False
    assert ring.maintain(rotation + timedelta(seconds=31)) is True
    assert ring.pending_events == (
        SigningKeyActivated(kid="k2", activated_at=rotation + timedelta(seconds=31)),
    )
    assert ring.announced_active() == "k2"


def test_a_retired_key_is_removed_once_its_tokens_have_expired() -> None:
    ring = ring_with_first_key()
    ring.add_key("k2", "x2", START, START, RETENTION)
    ring.mark_persisted()
    assert ring.maintain(START + RETENTION - timedelta(seconds=1)) is False
    assert [k.kid for k in ring.published()] == ["k1", "k2"]
    assert ring.maintain(START + RETENTION) is True
    assert ring.pending_events == (SigningKeyRemoved(kid="k1", removed_at=START + RETENTION),)
    assert [k.kid for k in ring.published()] == ["k2"]
    assert ring.keys["k1"].status(START + RETENTION, "k2") == "removed"


def test_a_kid_is_never_reused() -> None:
    with pytest.raises(IdentityError, match="signing_key_exists"):
        ring_with_first_key().add_key("k1", "x", START, START, RETENTION)
