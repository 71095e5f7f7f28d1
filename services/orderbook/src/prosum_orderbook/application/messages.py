"""The orderbook's messages on Kafka: commands to the books and the events it publishes.

Commands (``orderbook.place_order``, ...) go to ``prosum.orderbook.commands`` keyed by market,
so each market's commands are read in order by the one instance that owns its partition.
Integration events go to ``prosum.orderbook.events`` (participants named; for the services,
ops and the dashboard) and the anonymised tape to ``prosum.public.trades``; their JSON Schemas
are in ``prosum_contracts``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prosum_contracts import format_timestamp
from prosum_orderbook.domain.events import (
    AuctionCleared,
    MarketOpened,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderReduced,
    OrderRejected,
    TradeExecuted,
)
from prosum_orderbook.domain.markets import INTERVAL, delivery_start
from prosum_orderbook.domain.units import format_price

SOURCE = "orderbook"
COMMANDS_TOPIC = "prosum.orderbook.commands"

# commands to the books
PLACE_ORDER = "orderbook.place_order"
CANCEL_ORDER = "orderbook.cancel_order"
REDUCE_ORDER = "orderbook.reduce_order"
OPEN_MARKET = "orderbook.open_market"
CLOSE_MARKET = "orderbook.close_market"
BOOK_COMMANDS = (PLACE_ORDER, CANCEL_ORDER, REDUCE_ORDER, OPEN_MARKET, CLOSE_MARKET)

# integration events
MARKET_OPENED = "orderbook.market_opened"
MARKET_CLOSED = "orderbook.market_closed"
ORDER_PLACED = "orderbook.order_placed"
ORDER_REJECTED = "orderbook.order_rejected"
ORDER_CANCELLED = "orderbook.order_cancelled"
ORDER_REDUCED = "orderbook.order_reduced"
ORDER_EXPIRED = "orderbook.order_expired"
AUCTION_CLEARED = "orderbook.auction_cleared"
TRADE_EXECUTED = "orderbook.trade_executed"
TRADE_PRINTED = "public.trade_printed"

# events consumed
BALANCE_CHANGED = "ledger.balance_changed"
BALANCES_REPORTED = "ledger.balances_reported"
TRADE_SETTLED = "settlement.trade_settled"
TRADE_FAILED = "settlement.trade_failed"
PAYOUT_APPROVED = "settlement.payout_approved"
PAYOUT_COMPLETED = "settlement.payout_completed"
PAYOUT_FAILED = "settlement.payout_failed"
PAYOUT_COVER_HELD = "orderbook.payout_cover_held"
RECONCILIATION_COMPLETED = "orderbook.reconciliation_completed"
PAYOUT_COVER_REFUSED = "orderbook.payout_cover_refused"


@lru_cache(maxsize=4096)
def _interval_of(market_id: str) -> tuple[str, str]:
    start = delivery_start(market_id)
    return format_timestamp(start), format_timestamp(start + INTERVAL)


def _interval(market_id: str) -> dict[str, str]:
    start, end = _interval_of(market_id)
    return {"delivery_start": start, "delivery_end": end}


def market_opened(event: MarketOpened, gate_closure: str) -> dict[str, Any]:
    return {
        "market_id": event.market_id,
        **_interval(event.market_id),
        "gate_closure": gate_closure,
        "mechanism": event.mechanism,
        "operator_fee_ecoin": event.operator_fee,
        "grid_fee_per_kwh": format_price(event.grid_fee_per_kwh),
        "opened_at": format_timestamp(event.at),
    }


def order_placed(
    market_id: str, event: OrderAccepted, client_order_id: str | None
) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "client_order_id": client_order_id,
        "market_id": market_id,
        "participant_id": event.participant_id,
        "side": event.side,
        "price_per_kwh": format_price(event.price),
        "quantity_wh": event.quantity_wh,
        "time_in_force": event.time_in_force,
        "placed_at": format_timestamp(event.at),
    }


def order_rejected(
    market_id: str, event: OrderRejected, client_order_id: str | None
) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "client_order_id": client_order_id,
        "market_id": market_id,
        "participant_id": event.participant_id,
        "reason": event.reason,
        "rejected_at": format_timestamp(event.at),
    }


def order_cancelled(market_id: str, event: OrderCancelled) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "market_id": market_id,
        "participant_id": event.participant_id,
        "cancelled_wh": event.cancelled_wh,
        "reason": event.reason,
        "cancelled_at": format_timestamp(event.at),
    }


def order_reduced(market_id: str, event: OrderReduced) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "market_id": market_id,
        "participant_id": event.participant_id,
        "reduced_wh": event.reduced_wh,
        "remaining_wh": event.remaining_wh,
        "reduced_at": format_timestamp(event.at),
    }


def order_expired(market_id: str, event: OrderExpired) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "market_id": market_id,
        "participant_id": event.participant_id,
        "expired_wh": event.expired_wh,
        "expired_at": format_timestamp(event.at),
    }


def auction_cleared(market_id: str, event: AuctionCleared) -> dict[str, Any]:
    return {
        "market_id": market_id,
        "price_per_kwh": None if event.price is None else format_price(event.price),
        "volume_wh": event.volume_wh,
        "imbalance_wh": event.imbalance_wh,
        "cleared_at": format_timestamp(event.at),
    }


def trade_executed(market_id: str, event: TradeExecuted) -> dict[str, Any]:
    return {
        "trade_id": event.trade_id,
        "market_id": market_id,
        **_interval(market_id),
        "seller": event.seller,
        "buyer": event.buyer,
        "sell_order_id": event.sell_order_id,
        "buy_order_id": event.buy_order_id,
        "quantity_wh": event.quantity_wh,
        "price_per_kwh": format_price(event.price),
        "value_ecoin": event.value_ecoin,
        "fee_ecoin": event.fee_ecoin,
        "mechanism": event.mechanism,
        "executed_at": format_timestamp(event.at),
    }


def trade_printed(market_id: str, event: TradeExecuted) -> dict[str, Any]:
    """The public tape: what traded, when and at what price; nobody's identity."""
    return {
        "market_id": market_id,
        **_interval(market_id),
        "sequence": event.seq,
        "quantity_wh": event.quantity_wh,
        "price_per_kwh": format_price(event.price),
        "mechanism": event.mechanism,
        "executed_at": format_timestamp(event.at),
    }
