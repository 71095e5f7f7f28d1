"""Thresholds: the short-lived capabilities identity hands to a device whose DACT matched.

The signed token itself is never stored (it is a bearer credential); the aggregate keeps what
it grants, so identity can list, audit and revoke it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from prosum_identity.domain.base import IdentityAggregate
from prosum_identity.domain.errors import conflict
from prosum_identity.domain.model import Limits, check_reason
from prosum_platform.domain import DomainEvent


@dataclass(frozen=True, kw_only=True)
class ThresholdIssued(DomainEvent):
    event_type: ClassVar[str] = "ThresholdIssued"
    participant_id: str
    device_id: str
    metering_point: str
    actions: tuple[str, ...]
    max_order_wh: int
    max_open_wh: int
    max_ecoin: int
    challenge_id: str
    kid: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class ThresholdRevoked(DomainEvent):
    event_type: ClassVar[str] = "ThresholdRevoked"
    reason: str
    revoked_at: datetime
    revoked_by: str


THRESHOLD_EVENTS: tuple[type[DomainEvent], ...] = (ThresholdIssued, ThresholdRevoked)


class Threshold(IdentityAggregate):
    STREAM_PREFIX: ClassVar[str] = "threshold:"

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.participant_id = ""
        self.device_id = ""
        self.metering_point = ""
        self.actions: tuple[str, ...] = ()
        self.limits = Limits(0, 0, 0)
        self.kid = ""
        self.issued_at: datetime | None = None
        self.expires_at: datetime | None = None
        self.revoked_at: datetime | None = None
        self.revoke_reason = ""

    @property
    def threshold_id(self) -> str:
        return self.id.removeprefix(self.STREAM_PREFIX)

    @classmethod
    def issue(
        cls,
        threshold_id: str,
        participant_id: str,
        device_id: str,
        metering_point: str,
        actions: frozenset[str],
        limits: Limits,
        challenge_id: str,
        kid: str,
        now: datetime,
        expires_at: datetime,
    ) -> Threshold:
        threshold = cls(cls.stream(threshold_id))
        threshold._trigger(
            ThresholdIssued(
                participant_id=participant_id,
                device_id=device_id,
                metering_point=metering_point,
                actions=tuple(sorted(actions)),
                max_order_wh=limits.max_order_wh,
                max_open_wh=limits.max_open_wh,
                max_ecoin=limits.max_ecoin,
                challenge_id=challenge_id,
                kid=kid,
                issued_at=now,
                expires_at=expires_at,
            )
        )
        return threshold

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def revoke(self, reason: str, now: datetime, by: str) -> None:
        check_reason(reason)
        if self.revoked:
            raise conflict("threshold_revoked", f"threshold {self.threshold_id} is already revoked")
        if self.expired(now):
            # Nothing to refuse any more; a revocation would only grow every verifier's list.
            raise conflict("threshold_expired", f"threshold {self.threshold_id} has expired")
        self._trigger(ThresholdRevoked(reason=reason, revoked_at=now, revoked_by=by))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, ThresholdIssued):
            self.participant_id = event.participant_id
            self.device_id = event.device_id
            self.metering_point = event.metering_point
            self.actions = tuple(event.actions)
            self.limits = Limits(event.max_order_wh, event.max_open_wh, event.max_ecoin)
            self.kid = event.kid
            self.issued_at = event.issued_at
            self.expires_at = event.expires_at
        elif isinstance(event, ThresholdRevoked):
            self.revoked_at = event.revoked_at
            self.revoke_reason = event.reason
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)
