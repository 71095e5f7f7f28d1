"""The orderbook's read models and counters, beside the platform's event store tables.

``ob_markets``, ``ob_orders`` and ``ob_trades`` are projections of the books' events and of
order submissions; ``ob_accounts`` holds each participant's balances (from the ledger's events)
and what its open orders and unsettled trades reserve; ``ob_threshold_usage`` what each
threshold's open orders use of its limits. Counters change only by atomic ``UPDATE``s, so
concurrent writers (the API, the books, the outcome consumer, on several instances) never lose
an update. The trust projection's tables come from ``prosum_auth``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from prosum_auth import trust

tables = MetaData()

markets = Table(
    "ob_markets",
    tables,
    Column("market_id", String(32), primary_key=True),
    Column("delivery_start", DateTime(timezone=True), nullable=False),
    Column("delivery_end", DateTime(timezone=True), nullable=False),
    Column("opens_at", DateTime(timezone=True), nullable=False),
    Column("gate_closure", DateTime(timezone=True), nullable=False),
    Column("mechanism", String(16), nullable=False),
    Column("operator_fee", BigInteger, nullable=False),
    Column("grid_fee_per_kwh", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("close_requested_at", DateTime(timezone=True), nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("trades", Integer, nullable=False),
    Column("traded_wh", BigInteger, nullable=False),
    Column("last_price", BigInteger, nullable=True),
    Index("ix_ob_markets_status_gate", "status", "gate_closure"),
)

orders = Table(
    "ob_orders",
    tables,
    Column("order_id", String(64), primary_key=True),
    Column("client_order_id", String(128), nullable=True),
    Column("participant_id", String(128), nullable=False),
    Column("threshold_id", String(128), nullable=False),
    Column("market_id", String(32), nullable=False),
    Column("side", String(4), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("quantity_wh", BigInteger, nullable=False),
    Column("time_in_force", String(4), nullable=False),
    Column("status", String(20), nullable=False),
    Column("remaining_wh", BigInteger, nullable=False),
    Column("filled_wh", BigInteger, nullable=False),
    Column("cancelled_wh", BigInteger, nullable=False),
    Column("expired_wh", BigInteger, nullable=False),
    Column("reserved_wh", BigInteger, nullable=False),
    Column("reserved_ecoin", BigInteger, nullable=False),
    Column("fee_charged", Boolean, nullable=False),
    Column("reason", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("participant_id", "client_order_id", name="uq_ob_orders_client_order_id"),
    Index("ix_ob_orders_book", "market_id", "status", "side", "price"),
    Index("ix_ob_orders_participant", "participant_id", "created_at"),
    Index("ix_ob_orders_participant_status", "participant_id", "status"),
)

trades = Table(
    "ob_trades",
    tables,
    Column("trade_id", String(64), primary_key=True),
    Column("market_id", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("buy_order_id", String(64), nullable=False),
    Column("sell_order_id", String(64), nullable=False),
    Column("buyer", String(128), nullable=False),
    Column("seller", String(128), nullable=False),
    Column("quantity_wh", BigInteger, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("value_ecoin", BigInteger, nullable=False),
    Column("fee_ecoin", BigInteger, nullable=False),
    Column("mechanism", String(16), nullable=False),
    Column("executed_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("seller_reserved_wh", BigInteger, nullable=False),
    Column("buyer_reserved_ecoin", BigInteger, nullable=False),
    Column("seller_release_block", BigInteger, nullable=True),
    Column("buyer_release_block", BigInteger, nullable=True),
    Column("settled_block", BigInteger, nullable=True),
    Column("tx_id", String(128), nullable=True),
    Column("failure_reason", String(64), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("market_id", "seq", name="uq_ob_trades_market_seq"),
    Index("ix_ob_trades_seller", "seller", "executed_at"),
    Index("ix_ob_trades_buyer", "buyer", "executed_at"),
    Index("ix_ob_trades_status", "status", "executed_at"),
    Index("ix_ob_trades_executed", "executed_at"),
    Index("ix_ob_trades_seller_release", "seller", "seller_release_block"),
    Index("ix_ob_trades_buyer_release", "buyer", "buyer_release_block"),
)

accounts = Table(
    "ob_accounts",
    tables,
    Column("participant_id", String(128), primary_key=True),
    Column("energy_wh", BigInteger, nullable=False),
    Column("ecoin", BigInteger, nullable=False),
    Column("block", BigInteger, nullable=False),
    Column("reserved_wh", BigInteger, nullable=False),
    Column("reserved_ecoin", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

threshold_usage = Table(
    "ob_threshold_usage",
    tables,
    Column("threshold_id", String(128), primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("open_wh", BigInteger, nullable=False),
    Column("open_value_ecoin", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

reconciliations = Table(
    "ob_reconciliations",
    tables,
    Column("run_id", String(128), primary_key=True),
    Column("block", BigInteger, nullable=False),
    Column("checked", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("differences", Text, nullable=False),  # JSON
    Column("completed_at", DateTime(timezone=True), nullable=False),
    Index("ix_ob_reconciliations_completed", "completed_at"),
)

payout_holds = Table(
    "ob_payout_holds",
    tables,
    Column("request_id", String(64), primary_key=True),
    Column("participant_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # held, refused, released
    Column("release_block", BigInteger, nullable=True),  # burned in it: released once seen
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_ob_payout_holds_release", "participant_id", "release_block"),
)

for _table in trust.tables.tables.values():
    _table.to_metadata(tables)
