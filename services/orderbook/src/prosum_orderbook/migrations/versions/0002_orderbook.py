"""Orderbook read models and counters (markets, orders, trades, accounts, threshold usage) and
the trust projection's tables.

Revision ID: orderbook_0002
Revises: orderbook_0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from prosum_auth.trust import create_auth_tables_v1, drop_auth_tables_v1

revision = "orderbook_0002"
down_revision = "orderbook_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_auth_tables_v1(op)
    op.create_table(
        "ob_markets",
        sa.Column("market_id", sa.String(32), primary_key=True),
        sa.Column("delivery_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gate_closure", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mechanism", sa.String(16), nullable=False),
        sa.Column("operator_fee", sa.BigInteger, nullable=False),
        sa.Column("grid_fee_per_kwh", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("close_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trades", sa.Integer, nullable=False),
        sa.Column("traded_wh", sa.BigInteger, nullable=False),
        sa.Column("last_price", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_ob_markets_status_gate", "ob_markets", ["status", "gate_closure"])
    op.create_table(
        "ob_orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("client_order_id", sa.String(128), nullable=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("threshold_id", sa.String(128), nullable=False),
        sa.Column("market_id", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("quantity_wh", sa.BigInteger, nullable=False),
        sa.Column("time_in_force", sa.String(4), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("remaining_wh", sa.BigInteger, nullable=False),
        sa.Column("filled_wh", sa.BigInteger, nullable=False),
        sa.Column("cancelled_wh", sa.BigInteger, nullable=False),
        sa.Column("expired_wh", sa.BigInteger, nullable=False),
        sa.Column("reserved_wh", sa.BigInteger, nullable=False),
        sa.Column("reserved_ecoin", sa.BigInteger, nullable=False),
        sa.Column("fee_charged", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "participant_id", "client_order_id", name="uq_ob_orders_client_order_id"
        ),
    )
    op.create_index("ix_ob_orders_book", "ob_orders", ["market_id", "status", "side", "price"])
    op.create_index("ix_ob_orders_participant", "ob_orders", ["participant_id", "created_at"])
    op.create_index("ix_ob_orders_participant_status", "ob_orders", ["participant_id", "status"])
    op.create_table(
        "ob_trades",
        sa.Column("trade_id", sa.String(64), primary_key=True),
        sa.Column("market_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("buy_order_id", sa.String(64), nullable=False),
        sa.Column("sell_order_id", sa.String(64), nullable=False),
        sa.Column("buyer", sa.String(128), nullable=False),
        sa.Column("seller", sa.String(128), nullable=False),
        sa.Column("quantity_wh", sa.BigInteger, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("value_ecoin", sa.BigInteger, nullable=False),
        sa.Column("fee_ecoin", sa.BigInteger, nullable=False),
        sa.Column("mechanism", sa.String(16), nullable=False),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("seller_reserved_wh", sa.BigInteger, nullable=False),
        sa.Column("buyer_reserved_ecoin", sa.BigInteger, nullable=False),
        sa.Column("seller_release_block", sa.BigInteger, nullable=True),
        sa.Column("buyer_release_block", sa.BigInteger, nullable=True),
        sa.Column("settled_block", sa.BigInteger, nullable=True),
        sa.Column("tx_id", sa.String(128), nullable=True),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("market_id", "seq", name="uq_ob_trades_market_seq"),
    )
    op.create_index("ix_ob_trades_seller", "ob_trades", ["seller", "executed_at"])
    op.create_index("ix_ob_trades_buyer", "ob_trades", ["buyer", "executed_at"])
    op.create_index("ix_ob_trades_status", "ob_trades", ["status", "executed_at"])
    op.create_index("ix_ob_trades_executed", "ob_trades", ["executed_at"])
    op.create_index("ix_ob_trades_seller_release", "ob_trades", ["seller", "seller_release_block"])
    op.create_index("ix_ob_trades_buyer_release", "ob_trades", ["buyer", "buyer_release_block"])
    op.create_table(
        "ob_accounts",
        sa.Column("participant_id", sa.String(128), primary_key=True),
        sa.Column("energy_wh", sa.BigInteger, nullable=False),
        sa.Column("ecoin", sa.BigInteger, nullable=False),
        sa.Column("block", sa.BigInteger, nullable=False),
        sa.Column("reserved_wh", sa.BigInteger, nullable=False),
        sa.Column("reserved_ecoin", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ob_threshold_usage",
        sa.Column("threshold_id", sa.String(128), primary_key=True),
        sa.Column("participant_id", sa.String(128), nullable=False),
        sa.Column("open_wh", sa.BigInteger, nullable=False),
        sa.Column("open_value_ecoin", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ob_threshold_usage")
    op.drop_table("ob_accounts")
    for index in (
        "ix_ob_trades_buyer_release",
        "ix_ob_trades_seller_release",
        "ix_ob_trades_executed",
        "ix_ob_trades_status",
        "ix_ob_trades_buyer",
        "ix_ob_trades_seller",
    ):
        op.drop_index(index, table_name="ob_trades")
    op.drop_table("ob_trades")
    for index in (
        "ix_ob_orders_participant_status",
        "ix_ob_orders_participant",
        "ix_ob_orders_book",
    ):
        op.drop_index(index, table_name="ob_orders")
    op.drop_table("ob_orders")
    op.drop_index("ix_ob_markets_status_gate", table_name="ob_markets")
    op.drop_table("ob_markets")
    drop_auth_tables_v1(op)
