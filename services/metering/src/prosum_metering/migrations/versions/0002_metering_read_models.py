"""Metering read models (devices, series, readings, intervals, gaps, batches, conflicts,
trades) and the trust projection of prosum_auth.

Revision ID: metering_0002
Revises: metering_0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from prosum_auth.trust import create_auth_tables_v1, drop_auth_tables_v1

revision = "metering_0002"
down_revision = "metering_0001"
branch_labels = None
depends_on = None

_position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    create_auth_tables_v1(op)
    op.create_table(
        "metering_participants",
        sa.Column("participant_id", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "metering_devices",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("rating_w", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "metering_series",
        sa.Column("metering_point", sa.String(64), primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("rating_w", sa.BigInteger, nullable=False),
        sa.Column("head_end", sa.BigInteger, nullable=True),
        sa.Column("head_import_wh", sa.BigInteger, nullable=True),
        sa.Column("head_export_wh", sa.BigInteger, nullable=True),
        sa.Column("head_hash", sa.String(64), nullable=True),
    )
    op.create_table(
        "metering_readings",
        sa.Column("seq", _position, primary_key=True, autoincrement=True),
        sa.Column("reading_hash", sa.String(64), nullable=False),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("interval_end", sa.BigInteger, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("import_wh", sa.BigInteger, nullable=False),
        sa.Column("export_wh", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.String(88), nullable=False),
        sa.Column("submission_id", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("uq_metering_readings_hash", "metering_readings", ["reading_hash"], unique=True)
    op.create_index(
        "uq_metering_readings_point_end",
        "metering_readings",
        ["metering_point", "interval_end"],
        unique=True,
    )
    op.create_index(
        "ix_metering_readings_unsealed",
        "metering_readings",
        ["seq"],
        sqlite_where=sa.text("batch_id IS NULL"),
        postgresql_where=sa.text("batch_id IS NULL"),
    )
    op.create_table(
        "metering_superseded_readings",
        sa.Column("reading_hash", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("interval_end", sa.BigInteger, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("import_wh", sa.BigInteger, nullable=False),
        sa.Column("export_wh", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.String(88), nullable=False),
        sa.Column("submission_id", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_by", sa.String(64), nullable=False),
        sa.Column("conflict_id", sa.String(64), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "metering_intervals",
        sa.Column("metering_point", sa.String(64), primary_key=True),
        sa.Column("interval_start", sa.BigInteger, primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("import_wh", sa.BigInteger, nullable=False),
        sa.Column("export_wh", sa.BigInteger, nullable=False),
        sa.Column("surplus_wh", sa.BigInteger, nullable=False),
        sa.Column("consumption_wh", sa.BigInteger, nullable=False),
        sa.Column("start_hash", sa.String(64), nullable=False),
        sa.Column("end_hash", sa.String(64), nullable=False),
        sa.Column("evidence_hash", sa.String(64), nullable=False),
        sa.Column("mint_status", sa.String(16), nullable=False),
        sa.Column("mint_command_id", sa.String(128), nullable=True),
        sa.Column("mint_wh", sa.BigInteger, nullable=False),
        sa.Column("mint_evidence_hash", sa.String(64), nullable=True),
        sa.Column("mint_tx_id", sa.String(128), nullable=True),
        sa.Column("mint_block", sa.BigInteger, nullable=True),
        sa.Column("mint_reason", sa.String(64), nullable=True),
        sa.Column("adjustment_wh", sa.BigInteger, nullable=False),
        sa.Column("submission_id", sa.String(64), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "uq_metering_intervals_evidence", "metering_intervals", ["evidence_hash"], unique=True
    )
    op.create_index(
        "ix_metering_intervals_participant",
        "metering_intervals",
        ["participant_id", "mint_status"],
    )
    op.create_index("ix_metering_intervals_mint", "metering_intervals", ["mint_command_id"])
    op.create_table(
        "metering_adjustments",
        sa.Column("id", _position, primary_key=True, autoincrement=True),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("interval_start", sa.BigInteger, nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("conflict_id", sa.String(64), nullable=False),
        sa.Column("previous_import_wh", sa.BigInteger, nullable=False),
        sa.Column("previous_export_wh", sa.BigInteger, nullable=False),
        sa.Column("previous_surplus_wh", sa.BigInteger, nullable=False),
        sa.Column("previous_start_hash", sa.String(64), nullable=False),
        sa.Column("previous_end_hash", sa.String(64), nullable=False),
        sa.Column("previous_evidence_hash", sa.String(64), nullable=False),
        sa.Column("corrected_import_wh", sa.BigInteger, nullable=False),
        sa.Column("corrected_export_wh", sa.BigInteger, nullable=False),
        sa.Column("corrected_surplus_wh", sa.BigInteger, nullable=False),
        sa.Column("corrected_evidence_hash", sa.String(64), nullable=False),
        sa.Column("adjusted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_metering_adjustments_evidence", "metering_adjustments", ["previous_evidence_hash"]
    )
    op.create_table(
        "metering_gaps",
        sa.Column("metering_point", sa.String(64), primary_key=True),
        sa.Column("gap_start", sa.BigInteger, primary_key=True),
        sa.Column("gap_end", sa.BigInteger, primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("import_wh", sa.BigInteger, nullable=False),
        sa.Column("export_wh", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "metering_batches",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("leaf_count", sa.Integer, nullable=False),
        sa.Column("leaves", sa.LargeBinary, nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("anchor_status", sa.String(16), nullable=False),
        sa.Column("anchor_command_id", sa.String(128), nullable=True),
        sa.Column("anchor_tx_id", sa.String(128), nullable=True),
        sa.Column("anchor_block", sa.BigInteger, nullable=True),
        sa.Column("anchor_backend", sa.String(32), nullable=True),
        sa.Column("anchor_reason", sa.String(64), nullable=True),
    )
    op.create_index("ix_metering_batches_root", "metering_batches", ["root"])
    op.create_table(
        "metering_conflicts",
        sa.Column("conflict_id", sa.String(64), primary_key=True),
        sa.Column("metering_point", sa.String(64), nullable=False),
        sa.Column("interval_end", sa.BigInteger, nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("held_hash", sa.String(64), nullable=False),
        sa.Column("submitted_hash", sa.String(64), nullable=False),
        sa.Column("submitted", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_metering_conflicts_status", "metering_conflicts", ["status", "detected_at"])
    op.create_table(
        "metering_trades",
        sa.Column("trade_id", sa.String(128), primary_key=True),
        sa.Column("seller", sa.String(128), nullable=False),
        sa.Column("buyer", sa.String(128), nullable=False),
        sa.Column("delivery_start", sa.BigInteger, nullable=False),
        sa.Column("delivery_end", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_metering_trades_pair", "metering_trades", ["seller", "buyer", "delivery_start"]
    )


def downgrade() -> None:
    op.drop_index("ix_metering_trades_pair", table_name="metering_trades")
    op.drop_table("metering_trades")
    op.drop_index("ix_metering_conflicts_status", table_name="metering_conflicts")
    op.drop_table("metering_conflicts")
    op.drop_index("ix_metering_batches_root", table_name="metering_batches")
    op.drop_table("metering_batches")
    op.drop_table("metering_gaps")
    op.drop_index("ix_metering_adjustments_evidence", table_name="metering_adjustments")
    op.drop_table("metering_adjustments")
    op.drop_index("ix_metering_intervals_mint", table_name="metering_intervals")
    op.drop_index("ix_metering_intervals_participant", table_name="metering_intervals")
    op.drop_index("uq_metering_intervals_evidence", table_name="metering_intervals")
    op.drop_table("metering_intervals")
    op.drop_table("metering_superseded_readings")
    op.drop_index("ix_metering_readings_unsealed", table_name="metering_readings")
    op.drop_index("uq_metering_readings_point_end", table_name="metering_readings")
    op.drop_index("uq_metering_readings_hash", table_name="metering_readings")
    op.drop_table("metering_readings")
    op.drop_table("metering_series")
    op.drop_table("metering_devices")
    op.drop_table("metering_participants")
    drop_auth_tables_v1(op)
