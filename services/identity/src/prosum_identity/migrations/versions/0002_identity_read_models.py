"""Identity: read models (participants, devices, thresholds, clients, signing keys) and the key
vault of sealed private signing keys.

Revision ID: identity_0002
Revises: identity_0001
Create Date: 2026-11-22
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "identity_0002"
down_revision = "identity_0001"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "identity_participants",
        sa.Column("participant_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=False),
        sa.Column("pending_command_id", sa.String(128), nullable=True),
        sa.Column("max_order_wh", sa.BigInteger, nullable=True),
        sa.Column("max_open_wh", sa.BigInteger, nullable=True),
        sa.Column("max_ecoin", sa.BigInteger, nullable=True),
        _at("registered_at"),
        _at("updated_at"),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_identity_participants_status", "identity_participants", ["status", "participant_id"]
    )
    op.create_index(
        "ix_identity_participants_metering_point", "identity_participants", ["metering_point"]
    )
    op.create_table(
        "identity_devices",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("rating_w", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dact_sha256", sa.String(64), nullable=True),
        sa.Column("dact_actions", sa.String(200), nullable=True),
        _at("dact_registered_at", nullable=True),
        _at("registered_at"),
        _at("revoked_at", nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_identity_devices_participant", "identity_devices", ["participant_id", "device_id"]
    )
    op.create_table(
        "identity_thresholds",
        sa.Column("threshold_id", sa.String(128), primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("actions", sa.String(200), nullable=False),
        sa.Column("max_order_wh", sa.BigInteger, nullable=False),
        sa.Column("max_open_wh", sa.BigInteger, nullable=False),
        sa.Column("max_ecoin", sa.BigInteger, nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("challenge_id", sa.String(128), nullable=False),
        _at("issued_at"),
        _at("expires_at"),
        _at("revoked_at", nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_identity_thresholds_participant",
        "identity_thresholds",
        ["participant_id", "issued_at"],
    )
    op.create_index(
        "ix_identity_thresholds_device", "identity_thresholds", ["device_id", "issued_at"]
    )
    op.create_table(
        "identity_clients",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", sa.String(100), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _at("created_at"),
        _at("secret_rotated_at", nullable=True),
        _at("disabled_at", nullable=True),
    )
    op.create_table(
        "identity_signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        _at("created_at"),
        _at("activates_at"),
        _at("activated_at", nullable=True),
        _at("retired_at", nullable=True),
        _at("remove_after", nullable=True),
        _at("removed_at", nullable=True),
    )
    op.create_table(
        "identity_key_vault",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("sealed_private_key", sa.Text, nullable=False),
        _at("created_at"),
    )


def downgrade() -> None:
    op.drop_table("identity_key_vault")
    op.drop_table("identity_signing_keys")
    op.drop_table("identity_clients")
    op.drop_index("ix_identity_thresholds_device", table_name="identity_thresholds")
    op.drop_index("ix_identity_thresholds_participant", table_name="identity_thresholds")
    op.drop_table("identity_thresholds")
    op.drop_index("ix_identity_devices_participant", table_name="identity_devices")
    op.drop_table("identity_devices")
    op.drop_index("ix_identity_participants_metering_point", table_name="identity_participants")
    op.drop_index("ix_identity_participants_status", table_name="identity_participants")
    op.drop_table("identity_participants")
