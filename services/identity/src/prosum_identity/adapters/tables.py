"""Identity's own tables beside the platform's: read models (projections of its events, kept in
the same transaction as the events) and the key vault (sealed private signing keys, which are
deliberately not in the event log, so that removing a key destroys it).

Energy and ecoin limits are BIGINT: exact integers, never floats.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

tables = MetaData()

participants = Table(
    "identity_participants",
    tables,
    Column("participant_id", String(128), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("metering_point", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_reason", Text, nullable=False),
    Column("pending_command_id", String(128), nullable=True),
    Column("max_order_wh", BigInteger, nullable=True),
    Column("max_open_wh", BigInteger, nullable=True),
    Column("max_ecoin", BigInteger, nullable=True),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_identity_participants_status", "status", "participant_id"),
    Index("ix_identity_participants_metering_point", "metering_point"),
)

devices = Table(
    "identity_devices",
    tables,
    Column("device_id", String(128), primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("metering_point", String(64), nullable=False),
    Column("rating_w", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("dact_sha256", String(64), nullable=True),
    Column("dact_actions", String(200), nullable=True),
    Column("dact_registered_at", DateTime(timezone=True), nullable=True),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoke_reason", Text, nullable=True),
    Index("ix_identity_devices_participant", "participant_id", "device_id"),
)

thresholds = Table(
    "identity_thresholds",
    tables,
    Column("threshold_id", String(128), primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("metering_point", String(64), nullable=False),
    Column("actions", String(200), nullable=False),
    Column("max_order_wh", BigInteger, nullable=False),
    Column("max_open_wh", BigInteger, nullable=False),
    Column("max_ecoin", BigInteger, nullable=False),
    Column("kid", String(64), nullable=False),
    Column("challenge_id", String(128), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoke_reason", Text, nullable=True),
    Index("ix_identity_thresholds_participant", "participant_id", "issued_at"),
    Index("ix_identity_thresholds_device", "device_id", "issued_at"),
)

clients = Table(
    "identity_clients",
    tables,
    Column("client_id", String(128), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scopes", String(100), nullable=False),
    Column("participant_id", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("secret_rotated_at", DateTime(timezone=True), nullable=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

signing_keys = Table(
    "identity_signing_keys",
    tables,
    Column("kid", String(64), primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("activates_at", DateTime(timezone=True), nullable=False),
    Column("activated_at", DateTime(timezone=True), nullable=True),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("remove_after", DateTime(timezone=True), nullable=True),
    Column("removed_at", DateTime(timezone=True), nullable=True),
)

key_vault = Table(
    "identity_key_vault",
    tables,
    Column("kid", String(64), primary_key=True),
    Column("sealed_private_key", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

READ_MODELS = (participants, devices, thresholds, clients, signing_keys)
