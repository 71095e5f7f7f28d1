"""Read models as projections of identity's events.

``project`` applies one stored event to the read-model tables; the store calls it in the
transaction that appends the event, so a read right after a command sees it. Every value comes
from the event (never the wall clock), so ``rebuild_read_models``, which empties the tables and
replays the whole event store in order, ends with exactly the rows the live projection made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from prosum_identity.adapters.tables import (
    READ_MODELS,
    clients,
    devices,
    participants,
    signing_keys,
    thresholds,
)
from prosum_identity.domain.clients import (
    ApiClient,
    ClientDisabled,
    ClientRegistered,
    ClientSecretRotated,
)
from prosum_identity.domain.device import DactRegistered, Device, DeviceRegistered, DeviceRevoked
from prosum_identity.domain.keyring import (
    SigningKeyActivated,
    SigningKeyAdded,
    SigningKeyRemoved,
    SigningKeyRetired,
)
from prosum_identity.domain.participant import (
    DeviceAttached,
    Participant,
    ParticipantClosed,
    ParticipantLimitsChanged,
    ParticipantRegistered,
    ParticipantReinstated,
    ParticipantStatus,
    ParticipantSuspended,
    PermissionsGranted,
    PermissionsGrantFailed,
    PermissionsGrantRequested,
    PermissionsRevoked,
    PermissionsRevokeFailed,
    PermissionsRevokeRequested,
)
from prosum_identity.domain.threshold import Threshold, ThresholdIssued, ThresholdRevoked
from prosum_platform.codec import EventCodec
from prosum_platform.domain import DomainEvent
from prosum_platform.eventstore.schema import events as event_table


def project(conn: Connection, stream_id: str, version: int, event: DomainEvent) -> None:
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(conn, stream_id, version, event)


# -- participants ---------------------------------------------------------------------------


def _participant_update(conn: Connection, stream_id: str, version: int, **values: Any) -> None:
    conn.execute(
        update(participants)
        .where(participants.c.participant_id == stream_id.removeprefix(Participant.STREAM_PREFIX))
        .values(version=version, **values)
    )


def _participant(conn: Connection, stream_id: str, version: int, event: DomainEvent) -> None:
    pid = stream_id.removeprefix(Participant.STREAM_PREFIX)
    if isinstance(event, ParticipantRegistered):
        conn.execute(
            insert(participants).values(
                participant_id=pid,
                name=event.name,
                role=event.role,
                metering_point=event.metering_point,
                status=ParticipantStatus.PENDING.value,
                status_reason="",
                pending_command_id=None,
                max_order_wh=event.max_order_wh,
                max_open_wh=event.max_open_wh,
                max_ecoin=event.max_ecoin,
                registered_at=event.registered_at,
                updated_at=event.registered_at,
                version=version,
            )
        )
    elif isinstance(event, PermissionsGrantRequested):
        _participant_update(
            conn,
            stream_id,
            version,
            status=ParticipantStatus.PENDING.value,
            pending_command_id=event.command_id,
            updated_at=event.requested_at,
        )
    elif isinstance(event, PermissionsGranted):
        _participant_update(
            conn,
            stream_id,
            version,
            status=ParticipantStatus.ACTIVE.value,
            status_reason="",
            pending_command_id=None,
            updated_at=event.granted_at,
        )
    elif isinstance(event, PermissionsGrantFailed):
        _participant_update(
            conn,
            stream_id,
            version,
            status=ParticipantStatus.GRANT_FAILED.value,
            status_reason=event.reason,
            pending_command_id=None,
            updated_at=event.failed_at,
        )
    elif isinstance(event, PermissionsRevokeRequested):
        _participant_update(
            conn,
            stream_id,
            version,
            pending_command_id=event.command_id,
            updated_at=event.requested_at,
        )
    elif isinstance(event, PermissionsRevoked | PermissionsRevokeFailed):
        at = event.revoked_at if isinstance(event, PermissionsRevoked) else event.failed_at
        _participant_update(conn, stream_id, version, pending_command_id=None, updated_at=at)
    elif isinstance(event, ParticipantSuspended):
        _participant_update(
            conn,
            stream_id,
            version,
            status=ParticipantStatus.SUSPENDED.value,
            status_reason=event.reason,
            pending_command_id=None,
            updated_at=event.suspended_at,
        )
    elif isinstance(event, ParticipantReinstated):
        _participant_update(
            conn,
            stream_id,
            version,
            status=ParticipantStatus.PENDING.value,
            status_reason=event.reason,
            updated_at=event.reinstated_at,
        )
    elif isinstance(event, ParticipantClosed):
        _participant_update(
            conn,
            stream_id,
            version,
            status=ParticipantStatus.CLOSED.value,
            status_reason=event.reason,
            pending_command_id=None,
            updated_at=event.closed_at,
        )
    elif isinstance(event, ParticipantLimitsChanged):
        _participant_update(
            conn,
            stream_id,
            version,
            max_order_wh=event.max_order_wh,
            max_open_wh=event.max_open_wh,
            max_ecoin=event.max_ecoin,
            updated_at=event.changed_at,
        )
    elif isinstance(event, DeviceAttached):
        _participant_update(conn, stream_id, version, updated_at=event.attached_at)


# -- devices ----------------------------------------------------------------------------------


def _device(conn: Connection, stream_id: str, _version: int, event: DomainEvent) -> None:
    device_id = stream_id.removeprefix(Device.STREAM_PREFIX)
    where = devices.c.device_id == device_id
    if isinstance(event, DeviceRegistered):
        conn.execute(
            insert(devices).values(
                device_id=device_id,
                participant_id=event.participant_id,
                kind=event.kind,
                public_key=event.public_key,
                metering_point=event.metering_point,
                rating_w=event.rating_w,
                status="active",
                registered_at=event.registered_at,
            )
        )
    elif isinstance(event, DactRegistered):
        conn.execute(
            update(devices)
            .where(where)
            .values(
                dact_sha256=event.dact_sha256,
                dact_actions=" ".join(event.actions),
                dact_registered_at=event.registered_at,
            )
        )
    elif isinstance(event, DeviceRevoked):
        conn.execute(
            update(devices)
            .where(where)
            .values(status="revoked", revoked_at=event.revoked_at, revoke_reason=event.reason)
        )


# -- thresholds -------------------------------------------------------------------------------


def _threshold(conn: Connection, stream_id: str, _version: int, event: DomainEvent) -> None:
    threshold_id = stream_id.removeprefix(Threshold.STREAM_PREFIX)
    if isinstance(event, ThresholdIssued):
        conn.execute(
            insert(thresholds).values(
                threshold_id=threshold_id,
                participant_id=event.participant_id,
                device_id=event.device_id,
                metering_point=event.metering_point,
                actions=" ".join(event.actions),
                max_order_wh=event.max_order_wh,
                max_open_wh=event.max_open_wh,
                max_ecoin=event.max_ecoin,
                kid=event.kid,
                challenge_id=event.challenge_id,
                issued_at=event.issued_at,
                expires_at=event.expires_at,
            )
        )
    elif isinstance(event, ThresholdRevoked):
        conn.execute(
            update(thresholds)
            .where(thresholds.c.threshold_id == threshold_id)
            .values(revoked_at=event.revoked_at, revoke_reason=event.reason)
        )


# -- clients and signing keys -------------------------------------------------------------------


def _client(conn: Connection, stream_id: str, _version: int, event: DomainEvent) -> None:
    client_id = stream_id.removeprefix(ApiClient.STREAM_PREFIX)
    where = clients.c.client_id == client_id
    if isinstance(event, ClientRegistered):
        conn.execute(
            insert(clients).values(
                client_id=client_id,
                name=event.name,
                scopes=" ".join(event.scopes),
                participant_id=event.participant_id,
                status="active",
                created_at=event.created_at,
            )
        )
    elif isinstance(event, ClientSecretRotated):
        conn.execute(update(clients).where(where).values(secret_rotated_at=event.rotated_at))
    elif isinstance(event, ClientDisabled):
        conn.execute(
            update(clients).where(where).values(status="disabled", disabled_at=event.disabled_at)
        )


def _signing_key(conn: Connection, _stream_id: str, _version: int, event: DomainEvent) -> None:
    if isinstance(event, SigningKeyAdded):
        conn.execute(
            insert(signing_keys).values(
                kid=event.kid,
                public_key=event.public_key,
                created_at=event.created_at,
                activates_at=event.activates_at,
            )
        )
    elif isinstance(event, SigningKeyActivated):
        conn.execute(
            update(signing_keys)
            .where(signing_keys.c.kid == event.kid)
            .values(activated_at=event.activated_at)
        )
    elif isinstance(event, SigningKeyRetired):
        conn.execute(
            update(signing_keys)
            .where(signing_keys.c.kid == event.kid)
            .values(retired_at=event.retired_at, remove_after=event.remove_after)
        )
    elif isinstance(event, SigningKeyRemoved):
        conn.execute(
            update(signing_keys)
            .where(signing_keys.c.kid == event.kid)
            .values(removed_at=event.removed_at)
        )


Handler = Callable[[Connection, str, int, DomainEvent], None]
_HANDLERS: dict[type[DomainEvent], Handler] = {
    **dict.fromkeys(
        (
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
        ),
        _participant,
    ),
    **dict.fromkeys((DeviceRegistered, DactRegistered, DeviceRevoked), _device),
    **dict.fromkeys((ThresholdIssued, ThresholdRevoked), _threshold),
    **dict.fromkeys((ClientRegistered, ClientSecretRotated, ClientDisabled), _client),
    **dict.fromkeys(
        (SigningKeyAdded, SigningKeyActivated, SigningKeyRetired, SigningKeyRemoved),
        _signing_key,
    ),
}


def rebuild_read_models(conn: Connection, codec: EventCodec, *, page: int = 2000) -> int:
    """Empty the read models and replay every stored event into them; returns the events read.

    Run it in one transaction (``EventStore.transaction``): readers see the old rows or the
    new ones, never a half-built projection.
    """
    for table in READ_MODELS:
        conn.execute(delete(table))
    position, replayed = 0, 0
    while True:
        rows = conn.execute(
            select(event_table)
            .where(event_table.c.position > position)
            .order_by(event_table.c.position)
            .limit(page)
        ).all()
        if not rows:
            return replayed
        for row in rows:
            event = codec.decode(row.event_type, row.schema_version, orjson.loads(row.data))
            project(conn, row.stream_id, row.version, event)
            position = row.position
            replayed += 1
