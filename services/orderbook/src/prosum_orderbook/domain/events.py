"""What happens to a market's book, as the events of its stream.

Replaying these events into an empty ``OrderBook`` rebuilds the very same book: which orders
rest where, in which order, with how much left. Prices are integers in milli-ecoin per kWh and
quantities whole Wh (see ``units``); times are when the book processed the command, handed in
by the caller, never read from a clock inside the book.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from prosum_platform.domain import DomainEvent


@dataclass(frozen=True, kw_only=True)
class MarketOpened(DomainEvent):
    event_type: ClassVar[str] = "MarketOpened"
    market_id: str
    mechanism: str
    operator_fee: int
    grid_fee_per_kwh: int
    at: datetime


@dataclass(frozen=True, kw_only=True)
class OrderAccepted(DomainEvent):
    """The order reached the book; it is matched right after (continuous) or rests (call)."""

    event_type: ClassVar[str] = "OrderAccepted"
    order_id: str
    participant_id: str
    side: str
    price: int
    quantity_wh: int
    time_in_force: str
    seq: int
    at: datetime


@dataclass(frozen=True, kw_only=True)
class OrderRested(DomainEvent):
    """What was left of the order after matching joined the back of its price level."""

    event_type: ClassVar[str] = "OrderRested"
    order_id: str


@dataclass(frozen=True, kw_only=True)
class OrderRejected(DomainEvent):
    """The book refused the order (the market had closed before it arrived, ...)."""

    event_type: ClassVar[str] = "OrderRejected"
    order_id: str
    participant_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class TradeExecuted(DomainEvent):
    event_type: ClassVar[str] = "TradeExecuted"
    trade_id: str
    seq: int
    buy_order_id: str
    sell_order_id: str
    buyer: str
    seller: str
    quantity_wh: int
    price: int
    value_ecoin: int
    fee_ecoin: int
    mechanism: str
    aggressor: str | None
    """``buy`` or ``sell``: the side that arrived and took liquidity; None in an auction."""
    at: datetime


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(DomainEvent):
    event_type: ClassVar[str] = "OrderCancelled"
    order_id: str
    participant_id: str
    cancelled_wh: int
    reason: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class OrderReduced(DomainEvent):
    """The order's quantity went down; it keeps its place in the queue."""

    event_type: ClassVar[str] = "OrderReduced"
    order_id: str
    participant_id: str
    reduced_wh: int
    remaining_wh: int
    at: datetime


@dataclass(frozen=True, kw_only=True)
class OrderExpired(DomainEvent):
    event_type: ClassVar[str] = "OrderExpired"
    order_id: str
    participant_id: str
    expired_wh: int
    at: datetime


@dataclass(frozen=True, kw_only=True)
class AuctionCleared(DomainEvent):
    """The call auction's outcome; its trades follow as TradeExecuted events."""

    event_type: ClassVar[str] = "AuctionCleared"
    price: int | None
    volume_wh: int
    imbalance_wh: int
    """Demand minus supply at the clearing price: positive when buyers were left over."""
    at: datetime


@dataclass(frozen=True, kw_only=True)
class MarketClosed(DomainEvent):
    event_type: ClassVar[str] = "MarketClosed"
    at: datetime


BOOK_EVENTS: tuple[type[DomainEvent], ...] = (
    MarketOpened,
    OrderAccepted,
    OrderRested,
    OrderRejected,
    TradeExecuted,
    OrderCancelled,
    OrderReduced,
    OrderExpired,
    AuctionCleared,
    MarketClosed,
)
