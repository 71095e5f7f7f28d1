"""From identity's domain events to the integration events other services read.

Identity's events on Kafka are keyed by participant, so everything about one participant (its
status, its devices, its thresholds) reaches every consumer in the order it happened. The
ledger commands identity sends are keyed by participant too, which keeps a participant's
grant and revoke in order at the ledger adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prosum_contracts import format_timestamp
from prosum_identity.domain.base import IdentityAggregate
from prosum_identity.domain.device import Device, DeviceRegistered, DeviceRevoked
from prosum_identity.domain.keyring import SigningKeyRing
from prosum_identity.domain.participant import (
    Participant,
    ParticipantClosed,
    ParticipantRegistered,
    ParticipantSuspended,
    PermissionsGranted,
    PermissionsGrantFailed,
    PermissionsGrantRequested,
    PermissionsRevokeRequested,
)
from prosum_identity.domain.threshold import Threshold, ThresholdIssued, ThresholdRevoked
from prosum_platform.domain import DomainEvent

PARTICIPANT_REGISTERED = "identity.participant_registered"
PARTICIPANT_ACTIVATED = "identity.participant_activated"
PARTICIPANT_SUSPENDED = "identity.participant_suspended"
PARTICIPANT_REINSTATED = "identity.participant_reinstated"
PARTICIPANT_CLOSED = "identity.participant_closed"
PARTICIPANT_GRANT_FAILED = "identity.participant_grant_failed"
DEVICE_REGISTERED = "identity.device_registered"
DEVICE_REVOKED = "identity.device_revoked"
THRESHOLD_ISSUED = "identity.threshold_issued"
THRESHOLD_REVOKED = "identity.threshold_revoked"
SIGNING_KEYS_CHANGED = "identity.signing_keys_changed"
GRANT_PERMISSIONS = "ledger.grant_permissions"
REVOKE_PERMISSIONS = "ledger.revoke_permissions"
KEYS_SUBJECT = "signing-keys"

IntegrationEvent = tuple[str, str, dict[str, Any]]  # type, subject (Kafka key), data


def jwk(kid: str, public_key: str) -> dict[str, str]:
    """The public JWK of a signing key (RFC 8037), as ``prosum_auth.jwk_of`` writes it."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": public_key,
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
    }


def keys_changed(ring: SigningKeyRing) -> dict[str, Any]:
    return {
        "keys": [jwk(k.kid, k.public_key) for k in ring.published()],
        "active_kid": ring.announced_active() or "",
    }


def _with_reason(data: dict[str, Any], reason: str) -> dict[str, Any]:
    if reason:
        data["reason"] = reason[:500]
    return data


def integration_events(
    aggregate: IdentityAggregate, events: Sequence[DomainEvent]
) -> Iterator[IntegrationEvent]:
    """What the world learns from ``events``, just appended to ``aggregate``."""
    if isinstance(aggregate, SigningKeyRing):
        if events:
            yield SIGNING_KEYS_CHANGED, KEYS_SUBJECT, keys_changed(aggregate)
        return
    for event in events:
        if isinstance(aggregate, Participant):
            yield from _participant(aggregate, event)
        elif isinstance(aggregate, Device):
            yield from _device(aggregate, event)
        elif isinstance(aggregate, Threshold):
            yield from _threshold(aggregate, event)


def _participant(p: Participant, event: DomainEvent) -> Iterator[IntegrationEvent]:
    pid = p.key
    if isinstance(event, ParticipantRegistered):
        yield (
            PARTICIPANT_REGISTERED,
            pid,
            {
                "participant_id": pid,
                "name": event.name,
                "role": event.role,
                "metering_point": event.metering_point,
            },
        )
    elif isinstance(event, PermissionsGrantRequested | PermissionsRevokeRequested):
        kind = (
            GRANT_PERMISSIONS
            if isinstance(event, PermissionsGrantRequested)
            else REVOKE_PERMISSIONS
        )
        yield (
            kind,
            pid,
            {
                "command_id": event.command_id,
                "participant_id": pid,
                "permissions": list(event.permissions),
            },
        )
    elif isinstance(event, PermissionsGranted):
        kind = PARTICIPANT_REINSTATED if event.reinstated else PARTICIPANT_ACTIVATED
        yield kind, pid, {"participant_id": pid}
    elif isinstance(event, PermissionsGrantFailed):
        yield (
            PARTICIPANT_GRANT_FAILED,
            pid,
            {"participant_id": pid, "command_id": event.command_id, "reason": event.reason[:500]},
        )
    elif isinstance(event, ParticipantSuspended):
        yield PARTICIPANT_SUSPENDED, pid, _with_reason({"participant_id": pid}, event.reason)
    elif isinstance(event, ParticipantClosed):
        yield PARTICIPANT_CLOSED, pid, _with_reason({"participant_id": pid}, event.reason)


def _device(d: Device, event: DomainEvent) -> Iterator[IntegrationEvent]:
    if isinstance(event, DeviceRegistered):
        yield (
            DEVICE_REGISTERED,
            event.participant_id,
            {
                "device_id": d.key,
                "participant_id": event.participant_id,
                "kind": event.kind,
                "public_key": event.public_key,
                "metering_point": event.metering_point,
                "rating_w": event.rating_w,
            },
        )
    elif isinstance(event, DeviceRevoked):
        yield (
            DEVICE_REVOKED,
            d.participant_id,
            _with_reason({"device_id": d.key, "participant_id": d.participant_id}, event.reason),
        )


def _threshold(t: Threshold, event: DomainEvent) -> Iterator[IntegrationEvent]:
    if isinstance(event, ThresholdIssued):
        yield (
            THRESHOLD_ISSUED,
            event.participant_id,
            {
                "threshold_id": t.key,
                "participant_id": event.participant_id,
                "device_id": event.device_id,
                "actions": list(event.actions),
                "max_order_wh": event.max_order_wh,
                "max_open_wh": event.max_open_wh,
                "max_ecoin": event.max_ecoin,
                "expires_at": format_timestamp(event.expires_at),
            },
        )
    elif isinstance(event, ThresholdRevoked):
        yield (
            THRESHOLD_REVOKED,
            t.participant_id,
            _with_reason({"threshold_id": t.key, "participant_id": t.participant_id}, event.reason),
        )
