"""The trust projection every service keeps of identity's events: signing keys, revoked
thresholds and devices, and participant status. Built from the identity topic by a consumer
handler in the service's own store, read by the verifier.

Keys change rarely and are cached for a short while; revocations and status are read from the
store on each verification, so a revocation holds from the moment it is applied, on every
replica of the service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Column, Connection, DateTime, Engine, MetaData, String, Table, Text, select

from prosum_auth.tokens import KeySet
from prosum_contracts import Envelope
from prosum_platform.eventstore import Transaction

tables = MetaData()

trusted_keys = Table(
    "auth_trusted_keys",
    tables,
    Column("id", String(32), primary_key=True),  # one row: the latest published key set
    Column("jwks", Text, nullable=False),
    Column("active_kid", String(128), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

revocations = Table(
    "auth_revocations",
    tables,
    Column("kind", String(16), primary_key=True),  # threshold | device
    Column("credential_id", String(128), primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
)

participant_status = Table(
    "auth_participant_status",
    tables,
    Column("participant_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

_REVOCATION_CHECK = sa.select(
    sa.select(revocations.c.kind)
    .where(
        sa.or_(
            sa.and_(
                revocations.c.kind == "threshold",
                revocations.c.credential_id == sa.bindparam("threshold"),
            ),
            sa.and_(
                revocations.c.kind == "device",
                revocations.c.credential_id == sa.bindparam("device"),
            ),
        )
    )
    .order_by(revocations.c.kind.desc())
    .limit(1)
    .scalar_subquery(),
    sa.select(participant_status.c.status)
    .where(participant_status.c.participant_id == sa.bindparam("participant"))
    .scalar_subquery(),
)

_STATUS = {
    "identity.participant_registered": "pending",
    "identity.participant_activated": "active",
    "identity.participant_suspended": "suspended",
    "identity.participant_reinstated": "active",
    "identity.participant_closed": "closed",
}

# Event types the projection applies; a service subscribes its consumer to these.
TRUST_EVENT_TYPES = (
    "identity.signing_keys_changed",
    "identity.threshold_revoked",
    "identity.device_revoked",
    *_STATUS,
)


def create_auth_tables_v1(op: Any) -> None:
    """Frozen migration step, called from a service's Alembic revision."""
    op.create_table(
        "auth_trusted_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("jwks", sa.Text, nullable=False),
        sa.Column("active_kid", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "auth_revocations",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("credential_id", sa.String(128), primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "auth_participant_status",
        sa.Column("participant_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def drop_auth_tables_v1(op: Any) -> None:
    op.drop_table("auth_participant_status")
    op.drop_table("auth_revocations")
    op.drop_table("auth_trusted_keys")


def _upsert(tx: Transaction, table: Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    where = sa.and_(*(table.c[name] == value for name, value in key.items()))
    updated = tx.conn.execute(sa.update(table).where(where).values(**values))
    if updated.rowcount == 0:
        tx.conn.execute(sa.insert(table).values(**key, **values))


def apply_identity_event(envelope: Envelope, tx: Transaction) -> None:
    """Consumer handler: keep the trust projection in step with identity's events."""
    data = envelope.data
    now = datetime.now(UTC)
    if envelope.type == "identity.signing_keys_changed":
        _upsert(
            tx,
            trusted_keys,
            {"id": "current"},
            {
                "jwks": orjson.dumps(data["keys"]).decode(),
                "active_kid": data["active_kid"],
                "updated_at": now,
            },
        )
    elif envelope.type in ("identity.threshold_revoked", "identity.device_revoked"):
        kind = "threshold" if envelope.type == "identity.threshold_revoked" else "device"
        credential = data["threshold_id"] if kind == "threshold" else data["device_id"]
        _upsert(
            tx,
            revocations,
            {"kind": kind, "credential_id": credential},
            {"participant_id": data["participant_id"], "revoked_at": now},
        )
    elif envelope.type in _STATUS:
        _upsert(
            tx,
            participant_status,
            {"participant_id": data["participant_id"]},
            {"status": _STATUS[envelope.type], "updated_at": now},
        )


def trust_handlers() -> dict[str, Any]:
    return dict.fromkeys(TRUST_EVENT_TYPES, apply_identity_event)


class SqlTrustStore:
    """Keys and revocations as the service's store knows them."""

    def __init__(self, engine: Engine, *, key_cache_s: float = 2.0) -> None:
        self._engine = engine
        self._key_cache_s = key_cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, KeySet] | None = None

    def keys(self) -> KeySet:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self._key_cache_s:
                return self._cached[1]
        with self._reading() as conn:
            row = conn.execute(select(trusted_keys.c.jwks)).first()
        keyset = KeySet.from_jwks(orjson.loads(row[0])) if row else KeySet({})
        with self._lock:
            self._cached = (time.monotonic(), keyset)
        return keyset

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        # Read-only: on SQLite this must not take the write lock (see the store's engine).
        with self._engine.connect() as conn:
            conn.execution_options(prosum_read_only=True)
            yield conn

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def revoked(self, threshold_id: str, device_id: str, participant_id: str) -> str | None:
        # One round trip for both questions: this runs on every threshold-protected request.
        with self._reading() as conn:
            revoked_kind, status = conn.execute(
                _REVOCATION_CHECK,
                {"threshold": threshold_id, "device": device_id, "participant": participant_id},
            ).one()
        if revoked_kind is not None:
            return "threshold_revoked" if revoked_kind == "threshold" else "device_revoked"
        if status != "active":
            return "participant_not_active"
        return None

    def participant_status(self, participant_id: str) -> str | None:
        with self._reading() as conn:
            status: str | None = conn.execute(
                select(participant_status.c.status).where(
                    participant_status.c.participant_id == participant_id
                )
            ).scalar()
            return status
