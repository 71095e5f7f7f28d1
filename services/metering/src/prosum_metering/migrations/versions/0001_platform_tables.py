"""Platform tables: event store, snapshots, outbox, processed messages, leases.

Revision ID: metering_0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

from prosum_platform.eventstore.migrations import create_platform_tables_v1, drop_platform_tables_v1

revision = "metering_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables_v1(op)


def downgrade() -> None:
    drop_platform_tables_v1(op)
