"""Top-ups and payouts keep the block their mint or burn is in: a payout burned after the block
of the balance settlement holds is still counted against that balance.

Existing rows: no block is known; they count as reflected in the balance held.

Revision ID: settlement_0005
Revises: settlement_0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "settlement_0005"
down_revision = "settlement_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("settlement_funds") as table:
        table.add_column(sa.Column("block", sa.BigInteger, nullable=True))
    op.create_index(
        "ix_settlement_funds_participant", "settlement_funds", ["participant_id", "kind"]
    )


def downgrade() -> None:
    op.drop_index("ix_settlement_funds_participant", "settlement_funds")
    with op.batch_alter_table("settlement_funds") as table:
        table.drop_column("block")
