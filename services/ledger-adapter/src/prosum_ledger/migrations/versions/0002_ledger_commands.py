"""Ledger commands: the table of open commands the executor works through.

Revision ID: ledger_0002
Revises: ledger_0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0002"
down_revision = "ledger_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_commands",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("command_id", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ledger_commands_status", "ledger_commands", ["status", "seq"])


def downgrade() -> None:
    op.drop_index("ix_ledger_commands_status", table_name="ledger_commands")
    op.drop_table("ledger_commands")
