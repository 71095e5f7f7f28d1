"""Participants: who trades, in which role, for which metering point; and their chain
permissions, which the ledger adapter grants and revokes on identity's request.

Life cycle::

    register ──> pending ──(grant confirmed)──> active ──suspend──> suspended ──reinstate──> pending
                    │                                                                   (then active
                    └──(grant failed)──> grant_failed ──retry grant──> pending           on the grant)
    any state but closed ──close──> closed

A participant is *active* only once the chain confirmed its permissions. Only the outcome of the
command identity is currently waiting for counts; a late outcome of an older command (a grant
confirmed after the participant was suspended) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from prosum_identity.domain.base import IdentityAggregate
from prosum_identity.domain.errors import conflict, invalid
from prosum_identity.domain.model import (
    MAX_NAME,
    ROLE_PERMISSIONS,
    Limits,
    Role,
    check_id,
    check_metering_point,
    check_reason,
)
from prosum_platform.domain import DomainEvent


class ParticipantStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    GRANT_FAILED = "grant_failed"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Outcome(StrEnum):
    """What a ledger outcome meant for the participant."""

    ACTIVATED = "activated"
    REINSTATED = "reinstated"
    GRANT_FAILED = "grant_failed"
    REVOKED = "revoked"
    REVOKE_FAILED = "revoke_failed"


@dataclass(frozen=True, kw_only=True)
class ParticipantRegistered(DomainEvent):
    event_type: ClassVar[str] = "ParticipantRegistered"
    name: str
    role: str
    metering_point: str
    max_order_wh: int | None = None
    max_open_wh: int | None = None
    max_ecoin: int | None = None
    registered_at: datetime
    registered_by: str


@dataclass(frozen=True, kw_only=True)
class PermissionsGrantRequested(DomainEvent):
    event_type: ClassVar[str] = "PermissionsGrantRequested"
    command_id: str
    permissions: tuple[str, ...]
    requested_at: datetime


@dataclass(frozen=True, kw_only=True)
class PermissionsGranted(DomainEvent):
    event_type: ClassVar[str] = "PermissionsGranted"
    command_id: str
    granted_at: datetime
    # False the first time (the participant is activated), True after a suspension.
    reinstated: bool = False


@dataclass(frozen=True, kw_only=True)
class PermissionsGrantFailed(DomainEvent):
    event_type: ClassVar[str] = "PermissionsGrantFailed"
    command_id: str
    reason: str
    failed_at: datetime


@dataclass(frozen=True, kw_only=True)
class PermissionsRevokeRequested(DomainEvent):
    event_type: ClassVar[str] = "PermissionsRevokeRequested"
    command_id: str
    permissions: tuple[str, ...]
    requested_at: datetime


@dataclass(frozen=True, kw_only=True)
class PermissionsRevoked(DomainEvent):
    event_type: ClassVar[str] = "PermissionsRevoked"
    command_id: str
    revoked_at: datetime


@dataclass(frozen=True, kw_only=True)
class PermissionsRevokeFailed(DomainEvent):
    event_type: ClassVar[str] = "PermissionsRevokeFailed"
    command_id: str
    reason: str
    failed_at: datetime


@dataclass(frozen=True, kw_only=True)
class ParticipantSuspended(DomainEvent):
    event_type: ClassVar[str] = "ParticipantSuspended"
    reason: str
    suspended_at: datetime
    suspended_by: str


@dataclass(frozen=True, kw_only=True)
class ParticipantReinstated(DomainEvent):
    """Ops lifted the suspension; the participant is active again once the re-grant is
    confirmed."""

    event_type: ClassVar[str] = "ParticipantReinstated"
    reason: str
    reinstated_at: datetime
    reinstated_by: str


@dataclass(frozen=True, kw_only=True)
class ParticipantClosed(DomainEvent):
    event_type: ClassVar[str] = "ParticipantClosed"
    reason: str
    closed_at: datetime
    closed_by: str


@dataclass(frozen=True, kw_only=True)
class ParticipantLimitsChanged(DomainEvent):
    """None in a field: the service's default applies."""

    event_type: ClassVar[str] = "ParticipantLimitsChanged"
    max_order_wh: int | None
    max_open_wh: int | None
    max_ecoin: int | None
    changed_at: datetime
    changed_by: str


@dataclass(frozen=True, kw_only=True)
class DeviceAttached(DomainEvent):
    event_type: ClassVar[str] = "DeviceAttached"
    device_id: str
    attached_at: datetime


PARTICIPANT_EVENTS: tuple[type[DomainEvent], ...] = (
    ParticipantRegistered,
    PermissionsGrantRequested,
    PermissionsGranted,
    PermissionsGrantFailed,
    PermissionsRevokeRequested,
    PermissionsRevoked,
    PermissionsRevokeFailed,
    ParticipantSuspended,
    ParticipantReinstated,
    ParticipantClosed,
    ParticipantLimitsChanged,
    DeviceAttached,
)


@dataclass(frozen=True, slots=True)
class PendingCommand:
    command_id: str
    kind: str  # "grant" | "revoke"


class Participant(IdentityAggregate):
    STREAM_PREFIX: ClassVar[str] = "participant:"

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.name = ""
        self.role = Role.CONSUMER
        self.metering_point = ""
        self.status = ParticipantStatus.PENDING
        self.limits: Limits | None = None
        self.ever_active = False
        self.permissions_held = False
        self.pending: PendingCommand | None = None
        self.devices: list[str] = []
        self.status_reason = ""
        self.registered_at: datetime | None = None
        self.updated_at: datetime | None = None

    @property
    def participant_id(self) -> str:
        return self.id.removeprefix(self.STREAM_PREFIX)

    @property
    def permissions(self) -> tuple[str, ...]:
        return ROLE_PERMISSIONS[self.role]

    # -- commands ----------------------------------------------------------------------------
    @classmethod
    def register(
        cls,
        participant_id: str,
        name: str,
        role: str,
        metering_point: str,
        limits: Limits | None,
        now: datetime,
        by: str,
    ) -> Participant:
        check_id(participant_id, "participant_id")
        check_metering_point(metering_point)
        if not (name.strip() and len(name) <= MAX_NAME):
            raise invalid("name_invalid", f"name must be 1-{MAX_NAME} characters")
        try:
            role_ = Role(role)
        except ValueError:
            raise invalid("role_invalid", f"unknown role {role!r}") from None
        participant = cls(cls.stream(participant_id))
        participant._trigger(
            ParticipantRegistered(
                name=name,
                role=role_.value,
                metering_point=metering_point,
                max_order_wh=limits.max_order_wh if limits else None,
                max_open_wh=limits.max_open_wh if limits else None,
                max_ecoin=limits.max_ecoin if limits else None,
                registered_at=now,
                registered_by=by,
            )
        )
        return participant

    def is_same_registration(
        self, name: str, role: str, metering_point: str, limits: Limits | None
    ) -> bool:
        return (self.name, self.role.value, self.metering_point, self.limits) == (
            name,
            role,
            metering_point,
            limits,
        )

    def request_grant(self, command_id: str, now: datetime) -> None:
        """Ask the chain for the role's permissions: after registration, after a failed grant
        (ops retries) and on reinstatement."""
        fresh = self.status is ParticipantStatus.PENDING and self.pending is None
        if not (fresh or self.status is ParticipantStatus.GRANT_FAILED):
            raise conflict(
                "grant_not_needed",
                f"participant {self.participant_id} is {self.status.value}; "
                "a grant is requested only when pending or after a failed grant",
            )
        self._grant(command_id, now)

    def suspend(self, reason: str, revoke_command_id: str, now: datetime, by: str) -> None:
        check_reason(reason)
        self._require_open()
        if self.status is ParticipantStatus.SUSPENDED:
            raise conflict("participant_suspended", f"{self.participant_id} is already suspended")
        self._trigger(ParticipantSuspended(reason=reason, suspended_at=now, suspended_by=by))
        self._revoke_if_held(revoke_command_id, now)

    def reinstate(self, reason: str, grant_command_id: str, now: datetime, by: str) -> None:
        check_reason(reason)
        self._require_open()
        if self.status is not ParticipantStatus.SUSPENDED:
            raise conflict(
                "participant_not_suspended",
                f"{self.participant_id} is {self.status.value}; only a suspended participant "
                "can be reinstated",
            )
        self._trigger(ParticipantReinstated(reason=reason, reinstated_at=now, reinstated_by=by))
        # A revoke still in flight is overtaken: the ledger executes a participant's commands
        # in order, so the grant lands after it.
        self._grant(grant_command_id, now)

    def close(self, reason: str, revoke_command_id: str, now: datetime, by: str) -> None:
        check_reason(reason)
        self._require_open()
        self._trigger(ParticipantClosed(reason=reason, closed_at=now, closed_by=by))
        self._revoke_if_held(revoke_command_id, now)

    def change_limits(self, limits: Limits | None, now: datetime, by: str) -> None:
        self._require_open()
        self._trigger(
            ParticipantLimitsChanged(
                max_order_wh=limits.max_order_wh if limits else None,
                max_open_wh=limits.max_open_wh if limits else None,
                max_ecoin=limits.max_ecoin if limits else None,
                changed_at=now,
                changed_by=by,
            )
        )

    def attach_device(self, device_id: str, now: datetime) -> None:
        self._require_open()
        if device_id not in self.devices:
            self._trigger(DeviceAttached(device_id=device_id, attached_at=now))

    def record_ledger_outcome(
        self, command_id: str, confirmed: bool, reason: str, now: datetime
    ) -> Outcome | None:
        """Apply the chain's answer to the command identity waits for; None (and no change)
        for any other command, including a repeat of an answer already applied."""
        pending = self.pending
        if pending is None or pending.command_id != command_id:
            return None
        if pending.kind == "grant":
            if confirmed:
                reinstated = self.ever_active
                self._trigger(
                    PermissionsGranted(command_id=command_id, granted_at=now, reinstated=reinstated)
                )
                return Outcome.REINSTATED if reinstated else Outcome.ACTIVATED
            self._trigger(
                PermissionsGrantFailed(command_id=command_id, reason=reason, failed_at=now)
            )
            return Outcome.GRANT_FAILED
        if confirmed:
            self._trigger(PermissionsRevoked(command_id=command_id, revoked_at=now))
            return Outcome.REVOKED
        self._trigger(PermissionsRevokeFailed(command_id=command_id, reason=reason, failed_at=now))
        return Outcome.REVOKE_FAILED

    @property
    def may_hold_thresholds(self) -> bool:
        return self.status is ParticipantStatus.ACTIVE

    def _grant(self, command_id: str, now: datetime) -> None:
        self._trigger(
            PermissionsGrantRequested(
                command_id=command_id, permissions=self.permissions, requested_at=now
            )
        )

    def _revoke_if_held(self, command_id: str, now: datetime) -> None:
        if self.permissions_held:
            self._trigger(
                PermissionsRevokeRequested(
                    command_id=command_id, permissions=self.permissions, requested_at=now
                )
            )

    def _require_open(self) -> None:
        if self.status is ParticipantStatus.CLOSED:
            raise conflict("participant_closed", f"{self.participant_id} is closed")

    # -- state -----------------------------------------------------------------------------
    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, ParticipantRegistered):
            self.name = event.name
            self.role = Role(event.role)
            self.metering_point = event.metering_point
            self.limits = _limits(event.max_order_wh, event.max_open_wh, event.max_ecoin)
            self.status = ParticipantStatus.PENDING
            self.registered_at = self.updated_at = event.registered_at
        elif isinstance(event, PermissionsGrantRequested):
            self.pending = PendingCommand(event.command_id, "grant")
            self.permissions_held = True
            self.status = ParticipantStatus.PENDING
            self.updated_at = event.requested_at
        elif isinstance(event, PermissionsGranted):
            self.pending = None
            self.status = ParticipantStatus.ACTIVE
            self.ever_active = True
            self.status_reason = ""
            self.updated_at = event.granted_at
        elif isinstance(event, PermissionsGrantFailed):
            self.pending = None
            self.permissions_held = False
            self.status = ParticipantStatus.GRANT_FAILED
            self.status_reason = event.reason
            self.updated_at = event.failed_at
        elif isinstance(event, PermissionsRevokeRequested):
            self.pending = PendingCommand(event.command_id, "revoke")
            self.permissions_held = False
            self.updated_at = event.requested_at
        elif isinstance(event, PermissionsRevoked):
            self.pending = None
            self.updated_at = event.revoked_at
        elif isinstance(event, PermissionsRevokeFailed):
            # The chain may still let it transact: a later close asks again.
            self.pending = None
            self.permissions_held = True
            self.updated_at = event.failed_at
        elif isinstance(event, ParticipantSuspended):
            self.status = ParticipantStatus.SUSPENDED
            self.status_reason = event.reason
            self.pending = None
            self.updated_at = event.suspended_at
        elif isinstance(event, ParticipantReinstated):
            self.status = ParticipantStatus.PENDING
            self.status_reason = event.reason
            self.updated_at = event.reinstated_at
        elif isinstance(event, ParticipantClosed):
            self.status = ParticipantStatus.CLOSED
            self.status_reason = event.reason
            self.pending = None
            self.updated_at = event.closed_at
        elif isinstance(event, ParticipantLimitsChanged):
            self.limits = _limits(event.max_order_wh, event.max_open_wh, event.max_ecoin)
            self.updated_at = event.changed_at
        elif isinstance(event, DeviceAttached):
            self.devices.append(event.device_id)
            self.updated_at = event.attached_at
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)


def _limits(order: int | None, open_: int | None, ecoin: int | None) -> Limits | None:
    if order is None or open_ is None or ecoin is None:
        return None
    return Limits(order, open_, ecoin)


# -- metering points: one participant per metering point -------------------------------------


@dataclass(frozen=True, kw_only=True)
class MeteringPointClaimed(DomainEvent):
    event_type: ClassVar[str] = "MeteringPointClaimed"
    participant_id: str
    claimed_at: datetime


@dataclass(frozen=True, kw_only=True)
class MeteringPointReleased(DomainEvent):
    event_type: ClassVar[str] = "MeteringPointReleased"
    participant_id: str
    released_at: datetime


METERING_POINT_EVENTS: tuple[type[DomainEvent], ...] = (
    MeteringPointClaimed,
    MeteringPointReleased,
)


class MeteringPointClaim(IdentityAggregate):
    """Its own stream per metering point, so two registrations racing for one metering point
    meet in the event store's version check and only one wins."""

    STREAM_PREFIX: ClassVar[str] = "metering-point:"

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.holder: str | None = None

    @property
    def metering_point(self) -> str:
        return self.id.removeprefix(self.STREAM_PREFIX)

    def claim(self, participant_id: str, now: datetime) -> None:
        if self.holder == participant_id:
            return
        if self.holder is not None:
            raise conflict(
                "metering_point_taken",
                f"metering point {self.metering_point} belongs to another participant",
            )
        self._trigger(MeteringPointClaimed(participant_id=participant_id, claimed_at=now))

    def release(self, participant_id: str, now: datetime) -> None:
        if self.holder == participant_id:
            self._trigger(MeteringPointReleased(participant_id=participant_id, released_at=now))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, MeteringPointClaimed):
            self.holder = event.participant_id
        elif isinstance(event, MeteringPointReleased):
            self.holder = None
        else:  # pragma: no cover
            super().apply(event)
