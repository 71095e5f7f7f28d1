"""Identity's token-signing keys: which exist, which one signs, which are published, and when a
retired key may go.

A rotation adds a key that signs from ``activates_at`` on (now, or after a lead time that lets
verifiers learn the key before they meet it) and retires the key before it. A retired key stays
published until every token it can have signed has expired (``remove_after``: the successor's
activation plus the longest token lifetime and the verifiers' leeway); then it is removed and
tokens signed with it no longer verify anywhere.

The ring keeps public keys only; private keys are sealed in the service's key vault and
discarded with the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import ClassVar

from prosum_identity.domain.base import IdentityAggregate
from prosum_identity.domain.errors import conflict
from prosum_platform.domain import DomainEvent

KEY_RING_STREAM = "signing-keys"


@dataclass(frozen=True, kw_only=True)
class SigningKeyAdded(DomainEvent):
    event_type: ClassVar[str] = "SigningKeyAdded"
    kid: str
    public_key: str  # raw Ed25519, base64url
    created_at: datetime
    activates_at: datetime


@dataclass(frozen=True, kw_only=True)
class SigningKeyActivated(DomainEvent):
    """The key became the one that signs (its activation time passed)."""

    event_type: ClassVar[str] = "SigningKeyActivated"
    kid: str
    activated_at: datetime


@dataclass(frozen=True, kw_only=True)
class SigningKeyRetired(DomainEvent):
    event_type: ClassVar[str] = "SigningKeyRetired"
    kid: str
    retired_at: datetime
    remove_after: datetime


@dataclass(frozen=True, kw_only=True)
class SigningKeyRemoved(DomainEvent):
    event_type: ClassVar[str] = "SigningKeyRemoved"
    kid: str
    removed_at: datetime


KEYRING_EVENTS: tuple[type[DomainEvent], ...] = (
    SigningKeyAdded,
    SigningKeyActivated,
    SigningKeyRetired,
    SigningKeyRemoved,
)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    public_key: str
    created_at: datetime
    activates_at: datetime
    sequence: int  # order of addition: of two keys due at the same instant, the later signs
    activated: bool = False
    retired_at: datetime | None = None
    remove_after: datetime | None = None
    removed_at: datetime | None = None

    @property
    def removed(self) -> bool:
        return self.removed_at is not None

    def status(self, now: datetime, active_kid: str | None) -> str:
        if self.removed:
            return "removed"
        if self.kid == active_kid:
            return "active"
        return "pending" if self.activates_at > now else "retired"


class SigningKeyRing(IdentityAggregate):
    def __init__(self, stream_id: str = KEY_RING_STREAM) -> None:
        super().__init__(stream_id)
        self.keys: dict[str, SigningKey] = {}

    # -- commands ----------------------------------------------------------------------------
    def add_key(
        self,
        kid: str,
        public_key: str,
        now: datetime,
        activates_at: datetime,
        retention: timedelta,
    ) -> None:
        """Add a key that signs from ``activates_at``; every key before it retires then."""
        if kid in self.keys:
            raise conflict("signing_key_exists", f"a signing key {kid!r} exists already")
        predecessors = [k for k in self.keys.values() if not k.removed and k.retired_at is None]
        retired_at = max(activates_at, now)
        self._trigger(
            SigningKeyAdded(kid=kid, public_key=public_key, created_at=now, activates_at=retired_at)
        )
        for key in predecessors:
            self._trigger(
                SigningKeyRetired(
                    kid=key.kid, retired_at=retired_at, remove_after=retired_at + retention
                )
            )
        self.maintain(now)

    def maintain(self, now: datetime) -> bool:
        """Record that the key due to sign has started, and remove keys past their time.
        True when something changed."""
        changed = False
        active = self.active_at(now)
        if active is not None and not active.activated:
            self._trigger(SigningKeyActivated(kid=active.kid, activated_at=now))
            changed = True
        for key in list(self.keys.values()):
            if not key.removed and key.remove_after is not None and key.remove_after <= now:
                self._trigger(SigningKeyRemoved(kid=key.kid, removed_at=now))
                changed = True
        return changed

    # -- queries -----------------------------------------------------------------------------
    def active_at(self, now: datetime) -> SigningKey | None:
        """The key that signs at ``now``: the latest to have reached its activation time."""
        candidates = [k for k in self.keys.values() if not k.removed and k.activates_at <= now]
        if not candidates:
            return None
        return max(candidates, key=lambda k: (k.activates_at, k.sequence))

    def published(self) -> list[SigningKey]:
        """Keys verifiers must know: every key not removed, pending ones included."""
        return sorted((k for k in self.keys.values() if not k.removed), key=lambda k: k.sequence)

    def announced_active(self) -> str | None:
        """The key the last activation announced (what ``active_kid`` says in events)."""
        activated = [k for k in self.keys.values() if k.activated and not k.removed]
        if not activated:
            return None
        return max(activated, key=lambda k: (k.activates_at, k.sequence)).kid

    # -- state -----------------------------------------------------------------------------
    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, SigningKeyAdded):
            self.keys[event.kid] = SigningKey(
                event.kid, event.public_key, event.created_at, event.activates_at, len(self.keys)
            )
        elif isinstance(event, SigningKeyActivated):
            self.keys[event.kid] = replace(self.keys[event.kid], activated=True)
        elif isinstance(event, SigningKeyRetired):
            self.keys[event.kid] = replace(
                self.keys[event.kid], retired_at=event.retired_at, remove_after=event.remove_after
            )
        elif isinstance(event, SigningKeyRemoved):
            self.keys[event.kid] = replace(self.keys[event.kid], removed_at=event.removed_at)
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)
