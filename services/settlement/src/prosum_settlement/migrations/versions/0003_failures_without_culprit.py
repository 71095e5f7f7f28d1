"""Instructions count the batches that failed without the chain naming a trade apart from all
the batches they were sent in: only those count towards giving up on a trade.

Existing rows: a trade that failed in a batch without a culprit had one such failure (what
replaying its events gives); for the others the count starts at 0, as their stored requeue
events do not say whether the batch named a culprit.

Revision ID: settlement_0003
Revises: settlement_0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "settlement_0003"
down_revision = "settlement_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("settlement_instructions") as table:
        table.add_column(
            sa.Column("failures_without_culprit", sa.Integer, nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE settlement_instructions SET failures_without_culprit = 1"
        " WHERE status = 'failed' AND batch_id IN ("
        "SELECT batch_id FROM settlement_batches"
        " WHERE status = 'failed' AND failed_trade_id IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("settlement_instructions") as table:
        table.drop_column("failures_without_culprit")
