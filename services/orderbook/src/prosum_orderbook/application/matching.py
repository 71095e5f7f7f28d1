"""The books at work: apply a command to its market's book and project what happened.

Runs in the consumer of ``prosum.orderbook.commands`` on the instance that owns the market's
partition, inside the transaction that also records the command as processed. The book's events
are appended to the market's stream with optimistic concurrency, which is the last guard against
double matching: if two instances ever worked on one market at once (a partition moving between
them), the second append at the same version fails and that instance reloads the book and
tries again, now seeing the first one's trades.

The projection keeps in step, in the same transaction: order and trade read models, each
participant's reservations and each threshold's open volume, and the integration events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prosum_contracts import format_timestamp
from prosum_orderbook.application import messages as msg
from prosum_orderbook.application.ports import Clock, OrderbookStore, OrderRecord, TradeRecord
from prosum_orderbook.domain.book import NEW, OrderBook
from prosum_orderbook.domain.cover import open_value, order_reservation
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
from prosum_orderbook.domain.markets import Fees, Mechanism, Schedule
from prosum_orderbook.domain.orders import OrderStatus
from prosum_orderbook.domain.units import parse_price, parse_rate
from prosum_platform.domain import DomainEvent

log = logging.getLogger(__name__)


def _fees(data: dict[str, Any]) -> Fees:
    return Fees(int(data["operator_fee_ecoin"]), parse_rate(data["grid_fee_per_kwh"]))


class Matcher:
    def __init__(self, schedule: Schedule, clock: Clock) -> None:
        self._schedule = schedule
        self._clock = clock

    def handle(self, store: OrderbookStore, command: str, data: dict[str, Any]) -> None:
        market_id = data["market_id"]
        book = store.book(market_id)
        projection = Projection(store, book, self._schedule)
        if command == msg.PLACE_ORDER:
            order = projection.known(data["order_id"])
            if order is None:
                # Order entry records every order before sending it: a command without a
                # record was not sent by this deployment (a restored database, a foreign
                # producer).
                log.warning("orderbook: order %s has no record; ignored", data["order_id"])
                return
            if order.status != OrderStatus.PENDING.value:
                # A repeat the consumer's tracking did not catch: the book has it already.
                log.info("orderbook: order %s is %s already; ignored", order.order_id, order.status)
                return
        at = self._clock()
        before = book.version
        if command == msg.CLOSE_MARKET:
            if book.status == NEW:  # never opened: nothing traded, nothing in the book
                store.close_market(market_id, at)
                projection.expire_pending(at)
                projection.apply(())
                return
            book.close(at)
        else:
            if book.status == NEW and "mechanism" in data:
                book.open(Mechanism(data["mechanism"]), _fees(data), at)
            if command == msg.PLACE_ORDER:
                book.place(
                    order_id=data["order_id"],
                    participant_id=data["participant_id"],
                    side=data["side"],
                    price=parse_price(data["price_per_kwh"]),
                    quantity_wh=int(data["quantity_wh"]),
                    time_in_force=data["time_in_force"],
                    at=at,
                )
            elif command == msg.CANCEL_ORDER:
                book.cancel(data["order_id"], at, data.get("reason", "requested"))
            elif command == msg.REDUCE_ORDER:
                book.reduce(data["order_id"], int(data["reduce_by_wh"]), at)
        events = book.events_since(before)
        if not events:
            return
        store.save_book(book)
        projection.apply(events)


class Projection:
    """Read models, reservations and integration events for one command's book events."""

    def __init__(self, store: OrderbookStore, book: OrderBook, schedule: Schedule) -> None:
        self._store = store
        self._book = book
        self._schedule = schedule
        self._market_id = book.market_id
        self._orders: dict[str, OrderRecord] = {}
        self._accounts: dict[str, list[int]] = {}
        self._thresholds: dict[tuple[str, str], list[int]] = {}

    def apply(self, events: Sequence[DomainEvent]) -> None:
        store, market_id = self._store, self._market_id
        for event in events:
            if isinstance(event, TradeExecuted):
                self._traded(event)
            elif isinstance(event, OrderAccepted):
                order = self._order(event.order_id)
                order.status = OrderStatus.OPEN.value
                store.publish(
                    msg.ORDER_PLACED,
                    market_id,
                    msg.order_placed(market_id, event, order.client_order_id),
                )
            elif isinstance(event, OrderRested):
                pass
            elif isinstance(event, OrderCancelled):
                order = self._order(event.order_id)
                self._set_remaining(order, 0)
                order.cancelled_wh += event.cancelled_wh
                order.status = OrderStatus.CANCELLED.value
                order.reason = event.reason
                store.publish(msg.ORDER_CANCELLED, market_id, msg.order_cancelled(market_id, event))
            elif isinstance(event, OrderReduced):
                order = self._order(event.order_id)
                self._set_remaining(order, event.remaining_wh)
                order.cancelled_wh += event.reduced_wh
                store.publish(msg.ORDER_REDUCED, market_id, msg.order_reduced(market_id, event))
            elif isinstance(event, OrderExpired):
                order = self._order(event.order_id)
                self._set_remaining(order, 0)
                order.expired_wh += event.expired_wh
                order.status = OrderStatus.EXPIRED.value
                store.publish(msg.ORDER_EXPIRED, market_id, msg.order_expired(market_id, event))
            elif isinstance(event, OrderRejected):
                order = self._order(event.order_id)
                self._set_remaining(order, 0)
                order.cancelled_wh = order.quantity_wh - order.filled_wh
                order.status = OrderStatus.REJECTED.value
                order.reason = event.reason
                store.publish(
                    msg.ORDER_REJECTED,
                    market_id,
                    msg.order_rejected(market_id, event, order.client_order_id),
                )
            elif isinstance(event, MarketOpened):
                window = self._schedule.window(market_id)
                store.publish(
                    msg.MARKET_OPENED,
                    market_id,
                    msg.market_opened(event, format_timestamp(window.gate_closure)),
                )
            elif isinstance(event, AuctionCleared):
                store.publish(msg.AUCTION_CLEARED, market_id, msg.auction_cleared(market_id, event))
            elif isinstance(event, MarketClosed):
                self.expire_pending(event.at)
                store.close_market(market_id, event.at)
                store.publish(
                    msg.MARKET_CLOSED,
                    market_id,
                    {
                        "market_id": market_id,
                        "closed_at": format_timestamp(event.at),
                        "trades": self._book.trade_seq,
                    },
                )
        for order in self._orders.values():
            store.update_order(order)
        for participant, (energy, ecoin) in sorted(self._accounts.items()):
            if energy or ecoin:
                store.adjust_reserved(participant, energy, ecoin)
        for (participant, threshold), (wh, value) in sorted(self._thresholds.items()):
            if wh or value:
                store.adjust_threshold(participant, threshold, wh, value)

    def expire_pending(self, at: datetime) -> None:
        """At gate closure, expire the orders entry accepted whose command never reached the
        book (dead-lettered, or lost by a broker that lost its log): nothing else would ever
        release their cover. A command of theirs arriving later finds them no longer pending
        and is ignored."""
        for order in self._store.pending_orders(self._market_id):
            self._orders[order.order_id] = order
            expired = order.remaining_wh
            self._set_remaining(order, 0)
            order.expired_wh += expired
            order.status = OrderStatus.EXPIRED.value
            order.reason = "never_reached_book"
            self._store.publish(
                msg.ORDER_EXPIRED,
                self._market_id,
                {
                    "order_id": order.order_id,
                    "market_id": self._market_id,
                    "participant_id": order.participant_id,
                    "expired_wh": expired,
                    "expired_at": format_timestamp(at),
                },
            )

    def known(self, order_id: str) -> OrderRecord | None:
        try:
            return self._order(order_id)
        except LookupError:
            return None

    def _order(self, order_id: str) -> OrderRecord:
        order = self._orders.get(order_id)
        if order is None:
            order = self._store.order(order_id)
            if order is None:
                raise LookupError(f"order {order_id} has no record")
            self._orders[order_id] = order
        return order

    def _set_remaining(self, order: OrderRecord, remaining: int) -> None:
        """Move an order to ``remaining`` Wh left and its reservation and threshold use with it."""
        fees = self._book.fees
        before_value = open_value(order.side, order.remaining_wh, order.price)
        reservation = order_reservation(order.side, remaining, order.price, order.fee_charged, fees)
        self._account(
            order.participant_id,
            reservation.energy_wh - order.reserved_wh,
            reservation.ecoin - order.reserved_ecoin,
        )
        threshold = self._thresholds.setdefault((order.participant_id, order.threshold_id), [0, 0])
        threshold[0] += remaining - order.remaining_wh
        threshold[1] += open_value(order.side, remaining, order.price) - before_value
        order.remaining_wh = remaining
        order.reserved_wh = reservation.energy_wh
        order.reserved_ecoin = reservation.ecoin

    def _account(self, participant_id: str, energy_wh: int, ecoin: int) -> None:
        account = self._accounts.setdefault(participant_id, [0, 0])
        account[0] += energy_wh
        account[1] += ecoin

    def _traded(self, event: TradeExecuted) -> None:
        store, market_id = self._store, self._market_id
        buy, sell = self._order(event.buy_order_id), self._order(event.sell_order_id)
        quantity = event.quantity_wh
        buy.fee_charged = True
        for order in (buy, sell):
            order.filled_wh += quantity
            self._set_remaining(order, order.remaining_wh - quantity)
            order.status = (
                OrderStatus.FILLED.value
                if order.remaining_wh == 0
                else OrderStatus.PARTIALLY_FILLED.value
            )
        cost = event.value_ecoin + event.fee_ecoin
        self._account(event.seller, quantity, 0)
        self._account(event.buyer, 0, cost)
        store.add_trade(
            TradeRecord(
                trade_id=event.trade_id,
                market_id=market_id,
                seq=event.seq,
                buy_order_id=event.buy_order_id,
                sell_order_id=event.sell_order_id,
                buyer=event.buyer,
                seller=event.seller,
                quantity_wh=quantity,
                price=event.price,
                value_ecoin=event.value_ecoin,
                fee_ecoin=event.fee_ecoin,
                mechanism=event.mechanism,
                executed_at=event.at,
                seller_reserved_wh=quantity,
                buyer_reserved_ecoin=cost,
            )
        )
        store.record_market_trade(market_id, quantity, event.price)
        store.publish(msg.TRADE_EXECUTED, market_id, msg.trade_executed(market_id, event))
        store.publish(msg.TRADE_PRINTED, market_id, msg.trade_printed(market_id, event))
