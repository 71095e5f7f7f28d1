"""The order book's reconciliation runs (its balances compared with the chain's) and the ecoin
it holds for payouts until they are burned.

Revision ID: orderbook_0003
Revises: orderbook_0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "orderbook_0003"
down_revision = "orderbook_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ob_reconciliations",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("block", sa.BigInteger, nullable=False),
        sa.Column("checked", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("differences", sa.Text, nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ob_reconciliations_completed", "ob_reconciliations", ["completed_at"])
    op.create_table(
        "ob_payout_holds",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("release_block", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_ob_payout_holds_release", "ob_payout_holds", ["participant_id", "release_block"]
    )


def downgrade() -> None:
    op.drop_index("ix_ob_payout_holds_release", "ob_payout_holds")
    op.drop_table("ob_payout_holds")
    op.drop_index("ix_ob_reconciliations_completed", "ob_reconciliations")
    op.drop_table("ob_reconciliations")
