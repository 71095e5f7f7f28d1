"""The ecoin the order book holds out of the free balance for approved payouts until they are
burned (or fail).

Revision ID: orderbook_0004
Revises: orderbook_0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "orderbook_0004"
down_revision = "orderbook_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
