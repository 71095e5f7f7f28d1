"""An order's submission: the fact recorded when the API accepts an order for its market's book.

The book's own events (in the market's stream) say what became of it; this one says who sent
it, under which threshold, and what it reserved at the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from prosum_platform.domain import DomainEvent

BUY = "buy"
SELL = "sell"
SIDES = (BUY, SELL)
GTC = "gtc"
"""Good till gate closure."""
IOC = "ioc"
"""Immediate or cancel."""
TIMES_IN_FORCE = (GTC, IOC)


class OrderStatus(StrEnum):
    PENDING = "pending"
    """Accepted by the API and reserved; its market's book has not processed it yet."""
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


OPEN_STATUSES = frozenset({OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})


@dataclass(frozen=True, kw_only=True)
class OrderSubmitted(DomainEvent):
    event_type: ClassVar[str] = "OrderSubmitted"
    order_id: str
    client_order_id: str | None
    participant_id: str
    threshold_id: str
    market_id: str
    side: str
    price: int
    quantity_wh: int
    time_in_force: str
    reserved_wh: int
    reserved_ecoin: int
    at: datetime
