"""Devices (the identity of things): a participant's smart meter, home gateway, EV charger or
battery, with its Ed25519 key, the metering point it measures, its registered DACT and its
challenges.

A device asks for a challenge, signs it (see ``domain.dact``) and presents its DACT; when the
challenge is open, the signature holds and the DACT matches the registered one, the challenge
is answered with a threshold. Challenges are single-use (answering one is an event on the
device's stream, so two answers racing for one challenge meet in the store's version check),
short-lived, and rate-limited per device. A refused attempt changes nothing.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Self

from prosum_identity.domain.base import IdentityAggregate
from prosum_identity.domain.dact import Dact, public_key_bytes
from prosum_identity.domain.errors import (
    IdentityError,
    Refusal,
    conflict,
    forbidden,
    invalid,
    not_found,
)
from prosum_identity.domain.model import (
    MAX_RATING_W,
    DeviceKind,
    check_id,
    check_metering_point,
    check_reason,
)
from prosum_platform.domain import DomainEvent

# How much challenge history a device keeps: enough to tell "used" and "expired" from
# "unknown" for a quarter of an hour after expiry, and to count the rate window.
CHALLENGE_MEMORY = 128
RETAIN_AFTER_EXPIRY = timedelta(minutes=15)
RATE_MEMORY = 128


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, kw_only=True)
class DeviceRegistered(DomainEvent):
    event_type: ClassVar[str] = "DeviceRegistered"
    participant_id: str
    kind: str
    public_key: str
    metering_point: str
    rating_w: int
    registered_at: datetime
    registered_by: str


@dataclass(frozen=True, kw_only=True)
class DactRegistered(DomainEvent):
    event_type: ClassVar[str] = "DactRegistered"
    dact_sha256: str
    actions: tuple[str, ...]
    registered_at: datetime
    registered_by: str


@dataclass(frozen=True, kw_only=True)
class ChallengeIssued(DomainEvent):
    event_type: ClassVar[str] = "ChallengeIssued"
    challenge_id: str
    nonce: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class ChallengeAnswered(DomainEvent):
    event_type: ClassVar[str] = "ChallengeAnswered"
    challenge_id: str
    threshold_id: str
    answered_at: datetime


@dataclass(frozen=True, kw_only=True)
class DeviceRevoked(DomainEvent):
    event_type: ClassVar[str] = "DeviceRevoked"
    reason: str
    revoked_at: datetime
    revoked_by: str


DEVICE_EVENTS: tuple[type[DomainEvent], ...] = (
    DeviceRegistered,
    DactRegistered,
    ChallengeIssued,
    ChallengeAnswered,
    DeviceRevoked,
)


@dataclass(frozen=True, slots=True)
class Challenge:
    challenge_id: str
    nonce: str
    issued_at: datetime
    expires_at: datetime
    threshold_id: str | None = None

    @property
    def answered(self) -> bool:
        return self.threshold_id is not None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` challenges per device in any ``window``."""

    limit: int
    window: timedelta

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= RATE_MEMORY:
            raise ValueError(f"a challenge rate limit is between 1 and {RATE_MEMORY}")
        if self.window <= timedelta(0):
            raise ValueError("a challenge rate window must be positive")


class Device(IdentityAggregate):
    STREAM_PREFIX: ClassVar[str] = "device:"
    # Every threshold adds two events (challenge issued, answered) and loads the device twice:
    # a short replay tail keeps that cheap.
    snapshot_every: ClassVar[int | None] = 16

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.participant_id = ""
        self.kind = DeviceKind.SMART_METER
        self.public_key = ""
        self.metering_point = ""
        self.rating_w = 0
        self.status = DeviceStatus.ACTIVE
        self.dact_sha256: str | None = None
        self.dact_actions: tuple[str, ...] = ()
        self.registered_at: datetime | None = None
        self.revoked_at: datetime | None = None
        self.revoke_reason = ""
        self.challenges: dict[str, Challenge] = {}
        self.recent_issues: list[datetime] = []

    @property
    def device_id(self) -> str:
        return self.id.removeprefix(self.STREAM_PREFIX)

    # -- commands ----------------------------------------------------------------------------
    @classmethod
    def register(
        cls,
        device_id: str,
        participant_id: str,
        kind: str,
        public_key: str,
        metering_point: str,
        rating_w: int,
        now: datetime,
        by: str,
    ) -> Device:
        check_id(device_id, "device_id")
        check_id(participant_id, "participant_id")
        check_metering_point(metering_point)
        try:
            DeviceKind(kind)
        except ValueError:
            raise invalid("device_kind_invalid", f"unknown device kind {kind!r}") from None
        public_key_bytes(public_key)
        if isinstance(rating_w, bool) or not 1 <= rating_w <= MAX_RATING_W:
            raise invalid("rating_invalid", f"rating_w must be an integer 1-{MAX_RATING_W}")
        device = cls(cls.stream(device_id))
        device._trigger(
            DeviceRegistered(
                participant_id=participant_id,
                kind=kind,
                public_key=public_key,
                metering_point=metering_point,
                rating_w=rating_w,
                registered_at=now,
                registered_by=by,
            )
        )
        return device

    def is_same_registration(
        self, participant_id: str, kind: str, public_key: str, metering_point: str, rating_w: int
    ) -> bool:
        return (
            self.participant_id,
            self.kind.value,
            self.public_key,
            self.metering_point,
            self.rating_w,
        ) == (participant_id, kind, public_key, metering_point, rating_w)

    def register_dact(self, dact: Dact, now: datetime, by: str) -> bool:
        """Register the DACT the device will present; False when it is already the one."""
        self.require_active()
        described = (
            dact.device_id,
            dact.participant_id,
            dact.kind,
            dact.metering_point,
            dact.public_key,
        )
        actual = (
            self.device_id,
            self.participant_id,
            self.kind.value,
            self.metering_point,
            self.public_key,
        )
        if described != actual:
            names = ("device_id", "participant_id", "kind", "metering_point", "public_key")
            wrong = [n for n, d, a in zip(names, described, actual, strict=True) if d != a]
            raise invalid(
                "dact_does_not_describe_device",
                f"the DACT's {', '.join(wrong)} differ from the registered device",
            )
        digest = dact.digest()
        if digest == self.dact_sha256:
            return False
        self._trigger(
            DactRegistered(
                dact_sha256=digest, actions=dact.actions, registered_at=now, registered_by=by
            )
        )
        return True

    def issue_challenge(
        self,
        challenge_id: str,
        nonce: str,
        now: datetime,
        ttl: timedelta,
        rate: RateLimit,
    ) -> Challenge:
        self.require_active()
        self._require_dact()
        window_start = now - rate.window
        recent = [t for t in self.recent_issues if t > window_start]
        if len(recent) >= rate.limit:
            free_at = min(recent) + rate.window
            wait = max(1, math.ceil((free_at - now).total_seconds()))
            raise IdentityError(
                Refusal.RATE_LIMITED,
                "challenge_rate_limited",
                f"at most {rate.limit} challenges per {int(rate.window.total_seconds())} s "
                "for one device",
                retry_after_s=wait,
            )
        self._trigger(
            ChallengeIssued(
                challenge_id=challenge_id, nonce=nonce, issued_at=now, expires_at=now + ttl
            )
        )
        return self.challenges[challenge_id]

    def open_challenge(self, challenge_id: str, now: datetime) -> Challenge:
        """The challenge if it can still be answered, else why not."""
        challenge = self.challenges.get(challenge_id)
        if challenge is None:
            raise not_found(
                "challenge_unknown", f"no challenge {challenge_id!r} for device {self.device_id}"
            )
        if challenge.answered:
            raise conflict("challenge_used", f"challenge {challenge_id} was already answered")
        if now >= challenge.expires_at:
            raise IdentityError(
                Refusal.GONE, "challenge_expired", f"challenge {challenge_id} has expired"
            )
        return challenge

    def match_dact(self, dact: Dact) -> None:
        """The presented DACT must be the registered one (same digest), bound to this key."""
        registered = self._require_dact()
        if dact.device_id != self.device_id or not hmac.compare_digest(dact.digest(), registered):
            raise forbidden(
                "dact_mismatch", "the presented DACT does not match the DACT registered"
            )
        if dact.public_key != self.public_key:  # pragma: no cover - the digest binds the key
            raise forbidden("dact_key_mismatch", "the DACT names another key")

    def answer_challenge(self, challenge_id: str, threshold_id: str, now: datetime) -> None:
        self.require_active()
        self.open_challenge(challenge_id, now)
        self._trigger(
            ChallengeAnswered(challenge_id=challenge_id, threshold_id=threshold_id, answered_at=now)
        )

    def revoke(self, reason: str, now: datetime, by: str) -> None:
        check_reason(reason)
        if self.status is DeviceStatus.REVOKED:
            raise conflict("device_revoked", f"device {self.device_id} is already revoked")
        self._trigger(DeviceRevoked(reason=reason, revoked_at=now, revoked_by=by))

    def require_active(self) -> None:
        if self.status is DeviceStatus.REVOKED:
            raise forbidden("device_revoked", f"device {self.device_id} is revoked")

    def _require_dact(self) -> str:
        if self.dact_sha256 is None:
            raise conflict("dact_not_registered", f"device {self.device_id} has no registered DACT")
        return self.dact_sha256

    # -- state -----------------------------------------------------------------------------
    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, DeviceRegistered):
            self.participant_id = event.participant_id
            self.kind = DeviceKind(event.kind)
            self.public_key = event.public_key
            self.metering_point = event.metering_point
            self.rating_w = event.rating_w
            self.registered_at = event.registered_at
        elif isinstance(event, DactRegistered):
            self.dact_sha256 = event.dact_sha256
            self.dact_actions = tuple(event.actions)
        elif isinstance(event, ChallengeIssued):
            self._forget_old_challenges(event.issued_at)
            self.challenges[event.challenge_id] = Challenge(
                event.challenge_id, event.nonce, event.issued_at, event.expires_at
            )
            self.recent_issues = [*self.recent_issues[-(RATE_MEMORY - 1) :], event.issued_at]
        elif isinstance(event, ChallengeAnswered):
            challenge = self.challenges.get(event.challenge_id)
            if challenge is not None:
                self.challenges[event.challenge_id] = replace(
                    challenge, threshold_id=event.threshold_id
                )
        elif isinstance(event, DeviceRevoked):
            self.status = DeviceStatus.REVOKED
            self.revoked_at = event.revoked_at
            self.revoke_reason = event.reason
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)

    def _forget_old_challenges(self, now: datetime) -> None:
        horizon = now - RETAIN_AFTER_EXPIRY
        kept = [c for c in self.challenges.values() if c.expires_at >= horizon]
        self.challenges = {c.challenge_id: c for c in kept[-(CHALLENGE_MEMORY - 1) :]}

    # -- snapshots: a device asks for a challenge every few minutes, so its stream grows -----
    def snapshot_state(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id,
            "kind": self.kind.value,
            "public_key": self.public_key,
            "metering_point": self.metering_point,
            "rating_w": self.rating_w,
            "status": self.status.value,
            "dact_sha256": self.dact_sha256,
            "dact_actions": list(self.dact_actions),
            "registered_at": _iso(self.registered_at),
            "revoked_at": _iso(self.revoked_at),
            "revoke_reason": self.revoke_reason,
            "challenges": [
                [c.challenge_id, c.nonce, _iso(c.issued_at), _iso(c.expires_at), c.threshold_id]
                for c in self.challenges.values()
            ],
            "recent_issues": [_iso(t) for t in self.recent_issues],
        }

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: dict[str, Any]) -> Self:
        device = cls(aggregate_id)
        device.version = version
        device.participant_id = state["participant_id"]
        device.kind = DeviceKind(state["kind"])
        device.public_key = state["public_key"]
        device.metering_point = state["metering_point"]
        device.rating_w = state["rating_w"]
        device.status = DeviceStatus(state["status"])
        device.dact_sha256 = state["dact_sha256"]
        device.dact_actions = tuple(state["dact_actions"])
        device.registered_at = _from_iso(state["registered_at"])
        device.revoked_at = _from_iso(state["revoked_at"])
        device.revoke_reason = state["revoke_reason"]
        device.challenges = {}
        for challenge_id, nonce, issued, expires, threshold_id in state["challenges"]:
            device.challenges[challenge_id] = Challenge(
                challenge_id,
                nonce,
                datetime.fromisoformat(issued),
                datetime.fromisoformat(expires),
                threshold_id,
            )
        device.recent_issues = [t for t in map(_from_iso, state["recent_issues"]) if t]
        return device


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None
