"""Reads for the HTTP API, from the read models (read-only connections: on SQLite they do not
take the write lock)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, select

from prosum_identity.adapters.tables import clients, devices, participants, thresholds
from prosum_platform.eventstore import EventStore

Record = dict[str, Any]


def _record(row: Row[Any]) -> Record:
    record = dict(row._mapping)
    for name, value in record.items():
        if isinstance(value, datetime) and value.tzinfo is None:  # SQLite drops the zone
            record[name] = value.replace(tzinfo=UTC)
    return record


class IdentityQueries:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    def _one(self, statement: Select[Any]) -> Record | None:
        with self._store.reading() as conn:
            row = conn.execute(statement).first()
        return _record(row) if row is not None else None

    def _all(self, statement: Select[Any]) -> list[Record]:
        with self._store.reading() as conn:
            return [_record(row) for row in conn.execute(statement)]

    def participant(self, participant_id: str) -> Record | None:
        return self._one(
            select(participants).where(participants.c.participant_id == participant_id)
        )

    def participants(
        self,
        *,
        status: str | None = None,
        role: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Record]:
        statement = select(participants).order_by(participants.c.participant_id).limit(limit)
        if status is not None:
            statement = statement.where(participants.c.status == status)
        if role is not None:
            statement = statement.where(participants.c.role == role)
        if after is not None:
            statement = statement.where(participants.c.participant_id > after)
        return self._all(statement)

    def device(self, device_id: str) -> Record | None:
        return self._one(select(devices).where(devices.c.device_id == device_id))

    def devices_of(self, participant_id: str) -> list[Record]:
        return self._all(
            select(devices)
            .where(devices.c.participant_id == participant_id)
            .order_by(devices.c.device_id)
        )

    def threshold(self, threshold_id: str) -> Record | None:
        return self._one(select(thresholds).where(thresholds.c.threshold_id == threshold_id))

    def thresholds(
        self,
        *,
        participant_id: str | None = None,
        device_id: str | None = None,
        valid_at: datetime | None = None,
        limit: int = 100,
    ) -> list[Record]:
        statement = (
            select(thresholds)
            .order_by(thresholds.c.issued_at.desc(), thresholds.c.threshold_id)
            .limit(limit)
        )
        if participant_id is not None:
            statement = statement.where(thresholds.c.participant_id == participant_id)
        if device_id is not None:
            statement = statement.where(thresholds.c.device_id == device_id)
        if valid_at is not None:
            statement = statement.where(
                thresholds.c.expires_at > valid_at, thresholds.c.revoked_at.is_(None)
            )
        return self._all(statement)

    def client(self, client_id: str) -> Record | None:
        return self._one(select(clients).where(clients.c.client_id == client_id))

    def clients(self, *, participant_id: str | None = None) -> list[Record]:
        statement = select(clients).order_by(clients.c.created_at, clients.c.client_id)
        if participant_id is not None:
            statement = statement.where(clients.c.participant_id == participant_id)
        return self._all(statement)
