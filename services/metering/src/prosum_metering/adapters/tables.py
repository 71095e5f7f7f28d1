"""Metering's read models (projections of its events and of identity's and the order book's).

Times are whole seconds since the epoch, UTC (``BigInteger``): interval arithmetic stays exact
and compares the same on SQLite and PostgreSQL. Energy is integer Wh.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from prosum_auth.trust import tables as auth_tables

Position = BigInteger().with_variant(Integer(), "sqlite")

tables = MetaData()

participants = Table(
    "metering_participants",
    tables,
    Column("participant_id", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("metering_point", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

devices = Table(
    "metering_devices",
    tables,
    Column("device_id", String(128), primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("metering_point", String(64), nullable=False),
    Column("rating_w", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One row per metering point: its owner and rating, its latest reading (so that readings in
# time order need no range query), and the row a submission locks while it writes.
series = Table(
    "metering_series",
    tables,
    Column("metering_point", String(64), primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("rating_w", BigInteger, nullable=False),
    Column("head_end", BigInteger, nullable=True),
    Column("head_import_wh", BigInteger, nullable=True),
    Column("head_export_wh", BigInteger, nullable=True),
    Column("head_hash", String(64), nullable=True),
)

readings = Table(
    "metering_readings",
    tables,
    Column("seq", Position, primary_key=True, autoincrement=True),
    Column("reading_hash", String(64), nullable=False),
    Column("metering_point", String(64), nullable=False),
    Column("interval_end", BigInteger, nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("participant_id", String(128), nullable=False),
    Column("import_wh", BigInteger, nullable=False),
    Column("export_wh", BigInteger, nullable=False),
    Column("signature", String(88), nullable=False),
    Column("submission_id", String(64), nullable=False),
    Column("batch_id", String(64), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("uq_metering_readings_hash", "reading_hash", unique=True),
    Index("uq_metering_readings_point_end", "metering_point", "interval_end", unique=True),
    Index(
        "ix_metering_readings_unsealed",
        "seq",
        sqlite_where=text("batch_id IS NULL"),
        postgresql_where=text("batch_id IS NULL"),
    ),
)

# Readings replaced when ops resolved a conflict in favour of the other reading. They stay
# readable and provable: they are leaves of anchored batches.
superseded_readings = Table(
    "metering_superseded_readings",
    tables,
    Column("reading_hash", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("metering_point", String(64), nullable=False),
    Column("interval_end", BigInteger, nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("participant_id", String(128), nullable=False),
    Column("import_wh", BigInteger, nullable=False),
    Column("export_wh", BigInteger, nullable=False),
    Column("signature", String(88), nullable=False),
    Column("submission_id", String(64), nullable=False),
    Column("batch_id", String(64), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("superseded_by", String(64), nullable=False),
    Column("conflict_id", String(64), nullable=False),
    Column("superseded_at", DateTime(timezone=True), nullable=False),
)

intervals = Table(
    "metering_intervals",
    tables,
    Column("metering_point", String(64), primary_key=True),
    Column("interval_start", BigInteger, primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("import_wh", BigInteger, nullable=False),
    Column("export_wh", BigInteger, nullable=False),
    Column("surplus_wh", BigInteger, nullable=False),
    Column("consumption_wh", BigInteger, nullable=False),
    Column("start_hash", String(64), nullable=False),
    Column("end_hash", String(64), nullable=False),
    Column("evidence_hash", String(64), nullable=False),
    Column("mint_status", String(16), nullable=False),
    Column("mint_command_id", String(128), nullable=True),
    Column("mint_wh", BigInteger, nullable=False),
    Column("mint_evidence_hash", String(64), nullable=True),
    Column("mint_tx_id", String(128), nullable=True),
    Column("mint_block", BigInteger, nullable=True),
    Column("mint_reason", String(64), nullable=True),
    Column("adjustment_wh", BigInteger, nullable=False),
    Column("submission_id", String(64), nullable=False),
    Column("measured_at", DateTime(timezone=True), nullable=False),
    Index("uq_metering_intervals_evidence", "evidence_hash", unique=True),
    Index("ix_metering_intervals_participant", "participant_id", "mint_status"),
    Index("ix_metering_intervals_mint", "mint_command_id"),
)

adjustments = Table(
    "metering_adjustments",
    tables,
    Column("id", Position, primary_key=True, autoincrement=True),
    Column("metering_point", String(64), nullable=False),
    Column("interval_start", BigInteger, nullable=False),
    Column("participant_id", String(128), nullable=False),
    Column("conflict_id", String(64), nullable=False),
    Column("previous_import_wh", BigInteger, nullable=False),
    Column("previous_export_wh", BigInteger, nullable=False),
    Column("previous_surplus_wh", BigInteger, nullable=False),
    Column("previous_start_hash", String(64), nullable=False),
    Column("previous_end_hash", String(64), nullable=False),
    Column("previous_evidence_hash", String(64), nullable=False),
    Column("corrected_import_wh", BigInteger, nullable=False),
    Column("corrected_export_wh", BigInteger, nullable=False),
    Column("corrected_surplus_wh", BigInteger, nullable=False),
    Column("corrected_evidence_hash", String(64), nullable=False),
    Column("adjusted_at", DateTime(timezone=True), nullable=False),
    Index("ix_metering_adjustments_evidence", "previous_evidence_hash"),
)

gaps = Table(
    "metering_gaps",
    tables,
    Column("metering_point", String(64), primary_key=True),
    Column("gap_start", BigInteger, primary_key=True),
    Column("gap_end", BigInteger, primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("import_wh", BigInteger, nullable=False),
    Column("export_wh", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
)

batches = Table(
    "metering_batches",
    tables,
    Column("batch_id", String(64), primary_key=True),
    Column("root", String(64), nullable=False),
    Column("leaf_count", Integer, nullable=False),
    # The leaf hashes in order, 32 bytes each: a proof needs all of them, in one read.
    Column("leaves", LargeBinary, nullable=False),
    Column("sealed_at", DateTime(timezone=True), nullable=False),
    Column("anchor_status", String(16), nullable=False),
    Column("anchor_command_id", String(128), nullable=True),
    Column("anchor_tx_id", String(128), nullable=True),
    Column("anchor_block", BigInteger, nullable=True),
    Column("anchor_backend", String(32), nullable=True),
    Column("anchor_reason", String(64), nullable=True),
    Index("ix_metering_batches_root", "root"),
)

conflicts = Table(
    "metering_conflicts",
    tables,
    Column("conflict_id", String(64), primary_key=True),
    Column("metering_point", String(64), nullable=False),
    Column("interval_end", BigInteger, nullable=False),
    Column("participant_id", String(128), nullable=False),
    Column("held_hash", String(64), nullable=False),
    Column("submitted_hash", String(64), nullable=False),
    Column("submitted", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Index("ix_metering_conflicts_status", "status", "detected_at"),
)

trades = Table(
    "metering_trades",
    tables,
    Column("trade_id", String(128), primary_key=True),
    Column("seller", String(128), nullable=False),
    Column("buyer", String(128), nullable=False),
    Column("delivery_start", BigInteger, nullable=False),
    Column("delivery_end", BigInteger, nullable=False),
    Index("ix_metering_trades_pair", "seller", "buyer", "delivery_start"),
)

# The trust projection (signing keys, revocations, participant status) lives in the same
# store; its tables are created by metering's own migration.
for _table in auth_tables.tables.values():
    _table.to_metadata(tables)
