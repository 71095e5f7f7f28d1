"""Building blocks for tests of the matching core: a clock-free book and event helpers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prosum_orderbook.domain.book import OrderBook
from prosum_orderbook.domain.events import TradeExecuted
from prosum_orderbook.domain.markets import Fees, Mechanism
from prosum_orderbook.domain.units import parse_price
from prosum_platform.domain import DomainEvent

MARKET = "2026-11-21T14:00Z"
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def price(ecoin_per_kwh: str) -> int:
    """A price written as exact ecoin/kWh, in the book's unit (milli-ecoin/kWh)."""
    return parse_price(ecoin_per_kwh)


NO_FEES = Fees()


def book(
    mechanism: Mechanism = Mechanism.CONTINUOUS, fees: Fees = NO_FEES, market: str = MARKET
) -> OrderBook:
    opened = OrderBook(market)
    opened.open(mechanism, fees, T0)
    opened.mark_persisted()
    return opened


def place(
    b: OrderBook, order_id: str, who: str, side: str, quantity: int, at_price: str, tif: str = "gtc"
) -> list[DomainEvent]:
    """When: an order arrives. Returns the events it caused."""
    b.place(
        order_id=order_id,
        participant_id=who,
        side=side,
        price=price(at_price),
        quantity_wh=quantity,
        time_in_force=tif,
        at=T0,
    )
    return taken(b)


def taken(b: OrderBook) -> list[DomainEvent]:
    events = list(b.pending_events)
    b.mark_persisted()
    return events


def trades(events: Sequence[DomainEvent]) -> list[TradeExecuted]:
    return [e for e in events if isinstance(e, TradeExecuted)]


def fills(events: Sequence[DomainEvent]) -> list[tuple[str, str, int, int]]:
    """(buy order, sell order, Wh, price) of each trade, in order."""
    return [(t.buy_order_id, t.sell_order_id, t.quantity_wh, t.price) for t in trades(events)]


def kinds(events: Sequence[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def depth(b: OrderBook) -> dict[str, Any]:
    return {"bids": b.bids.depth(), "asks": b.asks.depth()}
