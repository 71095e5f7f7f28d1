"""What the HTTP routers work with, wired by the bootstrap; and read-model rows as responses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prosum_auth import TokenVerifier
from prosum_identity.adapters.queries import IdentityQueries, Record
from prosum_identity.application.clients import Clients
from prosum_identity.application.devices import Devices
from prosum_identity.application.keys import SigningKeys
from prosum_identity.application.participants import Participants
from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.application.ports import Clock
from prosum_identity.application.thresholds import Thresholds
from prosum_identity.domain.errors import not_found
from prosum_identity.entrypoints.http.schemas import (
    ClientOut,
    DeviceOut,
    LimitsOut,
    ParticipantOut,
    ThresholdRecord,
)


@dataclass(frozen=True)
class IdentityApi:
    participants: Participants
    devices: Devices
    thresholds: Thresholds
    clients: Clients
    keys: SigningKeys
    queries: IdentityQueries
    verifier: TokenVerifier
    policy: IdentityPolicy
    clock: Clock

    def participant_out(self, participant_id: str) -> ParticipantOut:
        row = self.queries.participant(participant_id)
        if row is None:
            raise not_found("participant_unknown", f"no participant {participant_id!r}")
        return participant_out(row, self.policy)

    def device_out(self, device_id: str, acting_for: str | None = None) -> DeviceOut:
        row = self.queries.device(device_id)
        if row is None or (acting_for is not None and row["participant_id"] != acting_for):
            raise not_found("device_unknown", f"no device {device_id!r}")
        return device_out(row)

    def threshold_out(self, threshold_id: str, acting_for: str | None = None) -> ThresholdRecord:
        row = self.queries.threshold(threshold_id)
        if row is None or (acting_for is not None and row["participant_id"] != acting_for):
            raise not_found("threshold_unknown", f"no threshold {threshold_id!r}")
        return threshold_record(row, self.clock())

    def client_out(self, client_id: str) -> ClientOut:
        row = self.queries.client(client_id)
        if row is None:
            raise not_found("client_unknown", f"no client {client_id!r}")
        return client_out(row)


def _limits(row: Record) -> LimitsOut | None:
    if row["max_order_wh"] is None:
        return None
    return LimitsOut(
        max_order_wh=row["max_order_wh"],
        max_open_wh=row["max_open_wh"],
        max_ecoin=row["max_ecoin"],
    )


def participant_out(row: Record, policy: IdentityPolicy) -> ParticipantOut:
    own = _limits(row)
    defaults = policy.default_limits
    effective = own or LimitsOut(
        max_order_wh=defaults.max_order_wh,
        max_open_wh=defaults.max_open_wh,
        max_ecoin=defaults.max_ecoin,
    )
    return ParticipantOut(
        participant_id=row["participant_id"],
        name=row["name"],
        role=row["role"],
        metering_point=row["metering_point"],
        status=row["status"],
        status_reason=row["status_reason"],
        pending_command_id=row["pending_command_id"],
        limits=own,
        effective_limits=effective,
        registered_at=row["registered_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def _words(text: str | None) -> list[Any]:
    return text.split() if text else []


def device_out(row: Record) -> DeviceOut:
    return DeviceOut(
        device_id=row["device_id"],
        participant_id=row["participant_id"],
        kind=row["kind"],
        public_key=row["public_key"],
        metering_point=row["metering_point"],
        rating_w=row["rating_w"],
        status=row["status"],
        dact_sha256=row["dact_sha256"],
        dact_actions=_words(row["dact_actions"]),
        dact_registered_at=row["dact_registered_at"],
        registered_at=row["registered_at"],
        revoked_at=row["revoked_at"],
        revoke_reason=row["revoke_reason"],
    )


def threshold_record(row: Record, now: datetime) -> ThresholdRecord:
    limits = _limits(row)
    assert limits is not None
    status = (
        "revoked"
        if row["revoked_at"] is not None
        else ("expired" if row["expires_at"] <= now else "valid")
    )
    return ThresholdRecord(
        threshold_id=row["threshold_id"],
        participant_id=row["participant_id"],
        device_id=row["device_id"],
        metering_point=row["metering_point"],
        actions=_words(row["actions"]),
        limits=limits,
        kid=row["kid"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        status=status,
        revoked_at=row["revoked_at"],
        revoke_reason=row["revoke_reason"],
    )


def client_out(row: Record) -> ClientOut:
    return ClientOut(
        client_id=row["client_id"],
        name=row["name"],
        scopes=_words(row["scopes"]),
        participant_id=row["participant_id"],
        status=row["status"],
        created_at=row["created_at"],
        secret_rotated_at=row["secret_rotated_at"],
        disabled_at=row["disabled_at"],
    )
