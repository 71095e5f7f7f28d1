"""Settlement read models (instructions, batches, top-ups and payouts, balances,
reconciliations) and the trust projection of identity's keys and revocations.

Revision ID: settlement_0002
Revises: settlement_0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from prosum_auth.trust import create_auth_tables_v1, drop_auth_tables_v1

revision = "settlement_0002"
down_revision = "settlement_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_instructions",
        sa.Column("trade_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("seller", sa.String(128), nullable=False),
        sa.Column("buyer", sa.String(128), nullable=False),
        sa.Column("market_id", sa.String(128), nullable=False),
        sa.Column("delivery_start", sa.String(40), nullable=False),
        sa.Column("quantity_wh", sa.BigInteger, nullable=False),
        sa.Column("value_ecoin", sa.BigInteger, nullable=False),
        sa.Column("fee_ecoin", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("tx_id", sa.String(128), nullable=True),
        sa.Column("block", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_settlement_instructions_status", "settlement_instructions", ["status", "created_at"]
    )
    op.create_index("ix_settlement_instructions_batch", "settlement_instructions", ["batch_id"])
    op.create_index("ix_settlement_instructions_seller", "settlement_instructions", ["seller"])
    op.create_index("ix_settlement_instructions_buyer", "settlement_instructions", ["buyer"])
    op.create_table(
        "settlement_batches",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trade_ids", sa.Text, nullable=False),
        sa.Column("trades", sa.Integer, nullable=False),
        sa.Column("tx_id", sa.String(128), nullable=True),
        sa.Column("block", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("failed_trade_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_settlement_batches_status", "settlement_batches", ["status"])
    op.create_table(
        "settlement_funds",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("tx_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "kind", "participant_id", "reference", name="uq_settlement_funds_reference"
        ),
    )
    op.create_index("ix_settlement_funds_status", "settlement_funds", ["kind", "status"])
    op.create_table(
        "settlement_balances",
        sa.Column("participant_id", sa.String(128), primary_key=True),
        sa.Column("energy_wh", sa.BigInteger, nullable=False),
        sa.Column("ecoin", sa.BigInteger, nullable=False),
        sa.Column("block", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "settlement_reconciliations",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("participants", sa.Integer, nullable=False),
        sa.Column("block", sa.BigInteger, nullable=True),
        sa.Column("checked", sa.Integer, nullable=True),
        sa.Column("differences", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    create_auth_tables_v1(op)


def downgrade() -> None:
    drop_auth_tables_v1(op)
    op.drop_table("settlement_reconciliations")
    op.drop_table("settlement_balances")
    op.drop_index("ix_settlement_funds_status", table_name="settlement_funds")
    op.drop_table("settlement_funds")
    op.drop_index("ix_settlement_batches_status", table_name="settlement_batches")
    op.drop_table("settlement_batches")
    for index in ("buyer", "seller", "batch", "status"):
        op.drop_index(f"ix_settlement_instructions_{index}", table_name="settlement_instructions")
    op.drop_table("settlement_instructions")
