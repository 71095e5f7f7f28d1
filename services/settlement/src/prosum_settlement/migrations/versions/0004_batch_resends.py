"""Batches keep the command they were sent as, when it was last sent and how often it was sent
again: a batch whose outcome does not come back is sent again (the ledger executes a command
id once and answers a repeat of an ended one with its outcome).

Existing rows: sent when created, never sent again. Their command is not stored; a batch still
open is sent again as its instructions give it.

Revision ID: settlement_0004
Revises: settlement_0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "settlement_0004"
down_revision = "settlement_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("settlement_batches") as table:
        table.add_column(sa.Column("command", sa.Text, nullable=True))
        table.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("resends", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE settlement_batches SET sent_at = created_at")
    op.create_index(
        "ix_settlement_batches_status_sent", "settlement_batches", ["status", "sent_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_settlement_batches_status_sent", "settlement_batches")
    with op.batch_alter_table("settlement_batches") as table:
        table.drop_column("resends")
        table.drop_column("sent_at")
        table.drop_column("command")
