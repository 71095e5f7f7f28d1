"""The matching core: one market's book, standard library only.

Commands (``open``, ``place``, ``cancel``, ``reduce``, ``close``) decide and trigger events;
state changes only in ``apply``, so replaying a market's events rebuilds the same book, and
running the same commands on an empty book yields the same events (nothing here reads a clock
or draws a random number; times are passed in).

**Continuous markets** match an arriving order at once against the best opposite price levels,
in price-time priority, each fill at the resting order's price; what is left of a good-till-
gate-closure (``gtc``) order rests at the back of its level, what is left of an immediate-or-
cancel (``ioc``) order is cancelled. **Call-auction markets** collect orders without matching
and clear them at one uniform price at gate closure (``auction``). Either way orders still open
at gate closure expire.

**Self-trades** never happen. In a continuous market, an arriving order that reaches a resting
order of the same participant cancels that resting order (reason ``self_trade_prevented``) and
goes on matching behind it: the newer instruction wins and the book never crosses. In a call
auction the same rule applies on entry: a participant's new order cancels its own resting
opposite orders that it crosses, so no participant can be on both executing sides.

**Data structures**: per side a sorted list of active prices and a dict price -> level; a level
is a FIFO deque of orders with its total quantity. Cancels are O(1): the order is marked
inactive and its level's total reduced; it is dropped when it reaches the head of the queue, and
an empty level is removed at once.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar, Self

from prosum_orderbook.domain.auction import Clearing, clear
from prosum_orderbook.domain.events import (
    AuctionCleared,
    MarketClosed,
    MarketOpened,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderReduced,
    OrderRejected,
    OrderRested,
    TradeExecuted,
)
from prosum_orderbook.domain.markets import Fees, Mechanism
from prosum_orderbook.domain.orders import BUY, GTC, IOC, SELL, SIDES, TIMES_IN_FORCE
from prosum_orderbook.domain.units import MAX_PRICE, MAX_QUANTITY_WH, grid_fee, trade_value
from prosum_platform.domain import Aggregate, DomainEvent

# Why an order left the book without trading in full.
REQUESTED = "requested"
SELF_TRADE_PREVENTED = "self_trade_prevented"
IOC_REMAINDER = "ioc_remainder"
PARTICIPANT_SUSPENDED = "participant_suspended"

# Why the book refused an order.
MARKET_CLOSED = "market_closed"
MARKET_NOT_OPEN = "market_not_open"
INVALID_ORDER = "invalid_order"
DUPLICATE_ORDER = "duplicate_order"
IOC_IN_CALL_AUCTION = "ioc_not_in_call_auction"

NEW = "new"
OPEN = "open"
CLOSED = "closed"


class Order:
    """An order while it is in the book (arriving or resting)."""

    __slots__ = (
        "active",
        "fee_charged",
        "order_id",
        "participant_id",
        "price",
        "quantity",
        "remaining",
        "resting",
        "seq",
        "side",
        "time_in_force",
    )

    def __init__(
        self,
        order_id: str,
        participant_id: str,
        side: str,
        price: int,
        quantity: int,
        remaining: int,
        seq: int,
        time_in_force: str,
        fee_charged: bool,
    ) -> None:
        self.order_id = order_id
        self.participant_id = participant_id
        self.side = side
        self.price = price
        self.quantity = quantity
        self.remaining = remaining
        self.seq = seq
        self.time_in_force = time_in_force
        self.fee_charged = fee_charged
        self.resting = False
        self.active = True


class Level:
    __slots__ = ("price", "quantity", "queue")

    def __init__(self, price: int) -> None:
        self.price = price
        self.quantity = 0
        self.queue: deque[Order] = deque()


class BookSide:
    """One side's price levels; ``prices`` is kept sorted ascending."""

    __slots__ = ("is_bid", "levels", "prices")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.prices: list[int] = []
        self.levels: dict[int, Level] = {}

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def add(self, order: Order) -> None:
        level = self.levels.get(order.price)
        if level is None:
            level = self.levels[order.price] = Level(order.price)
            insort(self.prices, order.price)
        level.queue.append(order)
        level.quantity += order.remaining

    def take(self, order: Order, quantity: int) -> None:
        """``quantity`` of a resting order left the book (traded, cancelled, reduced)."""
        level = self.levels[order.price]
        level.quantity -= quantity
        if level.quantity == 0:
            del self.levels[order.price]
            del self.prices[bisect_left(self.prices, order.price)]

    def in_priority(self) -> Iterator[Order]:
        """Active orders, best price first, earlier first within a price."""
        prices = reversed(self.prices) if self.is_bid else iter(self.prices)
        for price in prices:
            for order in self.levels[price].queue:
                if order.active:
                    yield order

    def depth(self) -> list[tuple[int, int, int]]:
        """``(price, quantity, orders)`` per level, best first."""
        prices = reversed(self.prices) if self.is_bid else iter(self.prices)
        out = []
        for price in prices:
            level = self.levels[price]
            out.append((price, level.quantity, sum(1 for o in level.queue if o.active)))
        return out


class OrderBook(Aggregate):
    """One market's book; its stream id is the market's."""

    snapshot_every: ClassVar[int | None] = 1000

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.market_id = aggregate_id
        self.status = NEW
        self.mechanism = Mechanism.CONTINUOUS
        self.fees = Fees()
        self.orders: dict[str, Order] = {}
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        self.next_seq = 1
        self.trade_seq = 0
        self._appliers: dict[type[DomainEvent], Callable[[Any], None]] = {
            MarketOpened: self._opened,
            OrderAccepted: self._accepted,
            OrderRested: self._rested,
            OrderRejected: _ignore,
            TradeExecuted: self._traded,
            OrderCancelled: self._removed,
            OrderExpired: self._removed,
            OrderReduced: self._reduced,
            AuctionCleared: _ignore,
            MarketClosed: self._closed,
        }

    # -- commands ---------------------------------------------------------------------------
    def open(self, mechanism: Mechanism, fees: Fees, at: datetime) -> None:
        if self.status != NEW:
            return
        self._trigger(
            MarketOpened(
                market_id=self.market_id,
                mechanism=mechanism.value,
                operator_fee=fees.operator_fee,
                grid_fee_per_kwh=fees.grid_fee_per_kwh,
                at=at,
            )
        )

    def place(
        self,
        *,
        order_id: str,
        participant_id: str,
        side: str,
        price: int,
        quantity_wh: int,
        time_in_force: str = GTC,
        at: datetime,
    ) -> None:
        reason = self._refusal(order_id, side, price, quantity_wh, time_in_force)
        if reason is not None:
            self._trigger(
                OrderRejected(
                    order_id=order_id, participant_id=participant_id, reason=reason, at=at
                )
            )
            return
        self._trigger(
            OrderAccepted(
                order_id=order_id,
                participant_id=participant_id,
                side=side,
                price=price,
                quantity_wh=quantity_wh,
                time_in_force=time_in_force,
                seq=self.next_seq,
                at=at,
            )
        )
        order = self.orders[order_id]
        if self.mechanism is Mechanism.CONTINUOUS:
            self._match(order, at)
        else:
            self._prevent_crossing_own_orders(order, at)
        if order.remaining:
            if time_in_force == GTC:
                self._trigger(OrderRested(order_id=order_id))
            else:
                self._cancel(order, IOC_REMAINDER, at)

    def cancel(self, order_id: str, at: datetime, reason: str = REQUESTED) -> None:
        """Take a resting order off the book; an order no longer open is left alone."""
        order = self.orders.get(order_id)
        if order is not None and order.resting:
            self._cancel(order, reason, at)

    def reduce(self, order_id: str, reduce_by_wh: int, at: datetime) -> None:
        """Lower a resting order's quantity, keeping its time priority; reducing it by all that
        is left (or more, after fills) cancels it."""
        order = self.orders.get(order_id)
        if order is None or not order.resting or reduce_by_wh <= 0:
            return
        if reduce_by_wh >= order.remaining:
            self._cancel(order, REQUESTED, at)
            return
        self._trigger(
            OrderReduced(
                order_id=order_id,
                participant_id=order.participant_id,
                reduced_wh=reduce_by_wh,
                remaining_wh=order.remaining - reduce_by_wh,
                at=at,
            )
        )

    def close(self, at: datetime) -> None:
        """Gate closure: clear the call auction, then expire every order still open."""
        if self.status != OPEN:
            return
        if self.mechanism is Mechanism.CALL_AUCTION:
            self._run_auction(at)
        for order in sorted(self.orders.values(), key=lambda o: o.seq):
            self._trigger(
                OrderExpired(
                    order_id=order.order_id,
                    participant_id=order.participant_id,
                    expired_wh=order.remaining,
                    at=at,
                )
            )
        self._trigger(MarketClosed(at=at))

    # -- queries ----------------------------------------------------------------------------
    def events_since(self, version: int) -> list[DomainEvent]:
        """The pending events triggered after the book was at ``version`` (without copying all
        of a long unit of work's pending events)."""
        return self._pending[len(self._pending) - (self.version - version) :]

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def is_crossed(self) -> bool:
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask

    def resting(self) -> list[Order]:
        """Resting orders in seq order."""
        return sorted((o for o in self.orders.values() if o.resting), key=lambda o: o.seq)

    def state(self) -> dict[str, Any]:
        """Everything that decides future matching, in a comparable form."""
        return {
            "market_id": self.market_id,
            "status": self.status,
            "mechanism": self.mechanism.value,
            "fees": [self.fees.operator_fee, self.fees.grid_fee_per_kwh],
            "next_seq": self.next_seq,
            "trade_seq": self.trade_seq,
            "bids": [
                [o.order_id, o.participant_id, o.price, o.remaining, o.seq, o.fee_charged]
                for o in self.bids.in_priority()
            ],
            "asks": [
                [o.order_id, o.participant_id, o.price, o.remaining, o.seq, o.fee_charged]
                for o in self.asks.in_priority()
            ],
        }

    # -- matching ---------------------------------------------------------------------------
    def _refusal(
        self, order_id: str, side: str, price: int, quantity_wh: int, time_in_force: str
    ) -> str | None:
        if self.status == CLOSED:
            return MARKET_CLOSED
        if self.status == NEW:
            return MARKET_NOT_OPEN
        if (
            side not in SIDES
            or time_in_force not in TIMES_IN_FORCE
            or not 0 < quantity_wh <= MAX_QUANTITY_WH
            or not 0 < price <= MAX_PRICE
        ):
            return INVALID_ORDER
        if order_id in self.orders:
            return DUPLICATE_ORDER
        if time_in_force == IOC and self.mechanism is Mechanism.CALL_AUCTION:
            return IOC_IN_CALL_AUCTION
        return None

    def _match(self, taker: Order, at: datetime) -> None:
        buying = taker.side == BUY
        opposite = self.asks if buying else self.bids
        limit = taker.price
        while taker.remaining:
            best = opposite.best()
            if best is None or (best > limit if buying else best < limit):
                return
            queue = opposite.levels[best].queue
            while taker.remaining and queue:
                maker = queue[0]
                if not maker.active:
                    queue.popleft()
                elif maker.participant_id == taker.participant_id:
                    self._cancel(maker, SELF_TRADE_PREVENTED, at)
                else:
                    quantity = min(taker.remaining, maker.remaining)
                    if buying:
                        self._trade(taker, maker, quantity, best, BUY, at)
                    else:
                        self._trade(maker, taker, quantity, best, SELL, at)

    def _trade(
        self,
        buy: Order,
        sell: Order,
        quantity: int,
        price: int,
        aggressor: str | None,
        at: datetime,
    ) -> None:
        fee = grid_fee(quantity, self.fees.grid_fee_per_kwh)
        if not buy.fee_charged:
            fee += self.fees.operator_fee
        seq = self.trade_seq + 1
        self._trigger(
            TradeExecuted(
                trade_id=f"{self.market_id}.t{seq}",
                seq=seq,
                buy_order_id=buy.order_id,
                sell_order_id=sell.order_id,
                buyer=buy.participant_id,
                seller=sell.participant_id,
                quantity_wh=quantity,
                price=price,
                value_ecoin=trade_value(quantity, price),
                fee_ecoin=fee,
                mechanism=self.mechanism.value,
                aggressor=aggressor,
                at=at,
            )
        )

    def _cancel(self, order: Order, reason: str, at: datetime) -> None:
        self._trigger(
            OrderCancelled(
                order_id=order.order_id,
                participant_id=order.participant_id,
                cancelled_wh=order.remaining,
                reason=reason,
                at=at,
            )
        )

    def _prevent_crossing_own_orders(self, order: Order, at: datetime) -> None:
        """Call auction entry: cancel the participant's resting opposite orders this one
        crosses (O(resting orders); only call-auction markets pay it)."""
        buying = order.side == BUY
        crossed = [
            other
            for other in self.orders.values()
            if other.resting
            and other.participant_id == order.participant_id
            and other.side != order.side
            and (other.price <= order.price if buying else other.price >= order.price)
        ]
        for other in sorted(crossed, key=lambda o: o.seq):
            self._cancel(other, SELF_TRADE_PREVENTED, at)

    def _run_auction(self, at: datetime) -> None:
        bids = list(self.bids.in_priority())
        asks = list(self.asks.in_priority())
        clearing: Clearing = clear(
            [(o.price, o.remaining) for o in bids], [(o.price, o.remaining) for o in asks]
        )
        self._trigger(
            AuctionCleared(
                price=clearing.price,
                volume_wh=clearing.volume_wh,
                imbalance_wh=clearing.imbalance_wh,
                at=at,
            )
        )
        if clearing.price is None:
            return
        left = clearing.volume_wh
        b = a = 0
        while left:
            buy, sell = bids[b], asks[a]
            if buy.participant_id == sell.participant_id:  # pragma: no cover - see module doc
                raise AssertionError("entry-time prevention lets no participant trade itself")
            quantity = min(buy.remaining, sell.remaining, left)
            self._trade(buy, sell, quantity, clearing.price, None, at)
            left -= quantity
            if not buy.remaining:
                b += 1
            if not sell.remaining:
                a += 1

    # -- state changes ----------------------------------------------------------------------
    def apply(self, event: DomainEvent) -> None:
        self._appliers[type(event)](event)

    def _opened(self, event: MarketOpened) -> None:
        self.status = OPEN
        self.mechanism = Mechanism(event.mechanism)
        self.fees = Fees(event.operator_fee, event.grid_fee_per_kwh)

    def _accepted(self, event: OrderAccepted) -> None:
        self.orders[event.order_id] = Order(
            event.order_id,
            event.participant_id,
            event.side,
            event.price,
            event.quantity_wh,
            event.quantity_wh,
            event.seq,
            event.time_in_force,
            False,
        )
        self.next_seq = event.seq + 1

    def _rested(self, event: OrderRested) -> None:
        order = self.orders[event.order_id]
        order.resting = True
        (self.bids if order.side == BUY else self.asks).add(order)

    def _traded(self, event: TradeExecuted) -> None:
        self.trade_seq = event.seq
        quantity = event.quantity_wh
        buy = self.orders[event.buy_order_id]
        buy.fee_charged = True
        for order, side in ((buy, self.bids), (self.orders[event.sell_order_id], self.asks)):
            order.remaining -= quantity
            if order.resting:
                side.take(order, quantity)
            if not order.remaining:
                order.active = False
                del self.orders[order.order_id]

    def _removed(self, event: OrderCancelled | OrderExpired) -> None:
        order = self.orders.pop(event.order_id)
        order.active = False
        if order.resting:
            (self.bids if order.side == BUY else self.asks).take(order, order.remaining)
        order.remaining = 0

    def _reduced(self, event: OrderReduced) -> None:
        order = self.orders[event.order_id]
        order.remaining = event.remaining_wh
        (self.bids if order.side == BUY else self.asks).take(order, event.reduced_wh)

    def _closed(self, _event: MarketClosed) -> None:
        self.status = CLOSED

    # -- snapshots --------------------------------------------------------------------------
    def snapshot_state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "mechanism": self.mechanism.value,
            "fees": [self.fees.operator_fee, self.fees.grid_fee_per_kwh],
            "next_seq": self.next_seq,
            "trade_seq": self.trade_seq,
            "orders": [
                [
                    o.order_id,
                    o.participant_id,
                    o.side,
                    o.price,
                    o.quantity,
                    o.remaining,
                    o.seq,
                    o.time_in_force,
                    o.fee_charged,
                ]
                for o in self.resting()
            ],
        }

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: dict[str, Any]) -> Self:
        book = cls(aggregate_id)
        book.version = version
        book.status = state["status"]
        book.mechanism = Mechanism(state["mechanism"])
        book.fees = Fees(*state["fees"])
        book.next_seq = state["next_seq"]
        book.trade_seq = state["trade_seq"]
        for row in state["orders"]:
            order = Order(*row)
            order.resting = True
            book.orders[order.order_id] = order
            (book.bids if order.side == BUY else book.asks).add(order)
        return book


def _ignore(_event: DomainEvent) -> None:
    return None
