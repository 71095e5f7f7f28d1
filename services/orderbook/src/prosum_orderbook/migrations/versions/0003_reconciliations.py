"""The order book's reconciliation runs: its balances compared with the chain's.

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


def downgrade() -> None:
    op.drop_index("ix_ob_reconciliations_completed", "ob_reconciliations")
    op.drop_table("ob_reconciliations")
