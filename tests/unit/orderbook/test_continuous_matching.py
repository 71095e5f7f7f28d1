"""The continuous double auction, as given orders, when an order arrives, then events.

Prices in ecoin per kWh, quantities in Wh."""

from __future__ import annotations

from prosum_orderbook.domain.book import (
    INVALID_ORDER,
    IOC_REMAINDER,
    MARKET_CLOSED,
    SELF_TRADE_PREVENTED,
)
from prosum_orderbook.domain.events import (
    MarketClosed,
    OrderCancelled,
    OrderExpired,
    OrderReduced,
    OrderRejected,
)
from prosum_orderbook.domain.markets import Fees
from tests.unit.orderbook.books import T0, book, depth, fills, kinds, place, price, taken, trades


def test_an_ask_of_5_kwh_meets_bids_of_2_and_3_kwh_in_two_trades_at_the_ask_price() -> None:
    b = book()
    place(b, "ask", "seller", "sell", 5_000, "240")
    first = place(b, "bid-2", "buyer-a", "buy", 2_000, "250")
    second = place(b, "bid-3", "buyer-b", "buy", 3_000, "240")
    assert fills(first) == [("bid-2", "ask", 2_000, price("240"))]
    assert fills(second) == [("bid-3", "ask", 3_000, price("240"))]
    assert [t.value_ecoin for t in trades(first + second)] == [480, 720]
    assert [t.trade_id for t in trades(first + second)] == [
        "2026-11-21T14:00Z.t1",
        "2026-11-21T14:00Z.t2",
    ]
    assert depth(b) == {"bids": [], "asks": []}


def test_an_arriving_bid_takes_the_best_asks_first_and_each_fill_is_at_the_resting_price() -> None:
    b = book()
    place(b, "a-250", "s1", "sell", 1_000, "250")
    place(b, "a-230", "s2", "sell", 1_000, "230")
    place(b, "a-240", "s3", "sell", 1_000, "240")
    events = place(b, "bid", "buyer", "buy", 2_500, "245")
    assert fills(events) == [
        ("bid", "a-230", 1_000, price("230")),
        ("bid", "a-240", 1_000, price("240")),
    ]
    assert kinds(events)[-1] == "OrderRested"
    assert depth(b) == {
        "bids": [(price("245"), 500, 1)],
        "asks": [(price("250"), 1_000, 1)],
    }


def test_at_one_price_the_earlier_order_fills_first() -> None:
    b = book()
    place(b, "first", "s1", "sell", 1_000, "240")
    place(b, "second", "s2", "sell", 1_000, "240")
    events = place(b, "bid", "buyer", "buy", 1_500, "240")
    assert fills(events) == [
        ("bid", "first", 1_000, price("240")),
        ("bid", "second", 500, price("240")),
    ]
    assert depth(b)["asks"] == [(price("240"), 500, 1)]


def test_a_partial_fill_leaves_the_remainder_resting_with_its_priority() -> None:
    b = book()
    place(b, "big", "s1", "sell", 5_000, "240")
    place(b, "later", "s2", "sell", 1_000, "240")
    place(b, "b1", "buyer", "buy", 2_000, "240")
    events = place(b, "b2", "buyer", "buy", 3_500, "240")
    assert fills(events) == [
        ("b2", "big", 3_000, price("240")),
        ("b2", "later", 500, price("240")),
    ]


def test_orders_that_do_not_cross_rest_on_their_sides() -> None:
    b = book()
    assert kinds(place(b, "bid", "b", "buy", 1_000, "230")) == ["OrderAccepted", "OrderRested"]
    assert kinds(place(b, "ask", "s", "sell", 1_000, "231")) == ["OrderAccepted", "OrderRested"]
    assert (b.best_bid(), b.best_ask()) == (price("230"), price("231"))
    assert not b.is_crossed()


def test_what_an_immediate_or_cancel_order_cannot_fill_at_once_is_cancelled() -> None:
    b = book()
    place(b, "ask", "s", "sell", 1_000, "240")
    events = place(b, "ioc", "b", "buy", 1_500, "240", tif="ioc")
    assert fills(events) == [("ioc", "ask", 1_000, price("240"))]
    [cancelled] = [e for e in events if isinstance(e, OrderCancelled)]
    assert (cancelled.cancelled_wh, cancelled.reason) == (500, IOC_REMAINDER)
    assert depth(b) == {"bids": [], "asks": []}
    untouched = place(b, "ioc-2", "b", "buy", 700, "200", tif="ioc")
    assert kinds(untouched) == ["OrderAccepted", "OrderCancelled"]


def test_cancel_takes_a_resting_order_off_and_a_second_cancel_does_nothing() -> None:
    b = book()
    place(b, "ask", "s", "sell", 1_000, "240")
    b.cancel("ask", T0)
    [cancelled] = taken(b)
    assert isinstance(cancelled, OrderCancelled) and cancelled.cancelled_wh == 1_000
    b.cancel("ask", T0)
    b.cancel("never-placed", T0)
    assert taken(b) == []
    assert depth(b)["asks"] == []


def test_reduce_keeps_the_orders_place_in_the_queue() -> None:
    b = book()
    place(b, "first", "s1", "sell", 3_000, "240")
    place(b, "second", "s2", "sell", 1_000, "240")
    b.reduce("first", 2_000, T0)
    [reduced] = taken(b)
    assert isinstance(reduced, OrderReduced) and reduced.remaining_wh == 1_000
    events = place(b, "bid", "b", "buy", 1_500, "240")
    assert fills(events) == [
        ("bid", "first", 1_000, price("240")),
        ("bid", "second", 500, price("240")),
    ]


def test_reducing_by_all_that_is_left_cancels_the_order() -> None:
    b = book()
    place(b, "ask", "s", "sell", 1_000, "240")
    b.reduce("ask", 1_000, T0)
    [event] = taken(b)
    assert isinstance(event, OrderCancelled) and event.cancelled_wh == 1_000


def test_an_order_never_trades_with_its_own_participant_the_resting_one_is_cancelled() -> None:
    b = book()
    place(b, "own-ask", "prosumer", "sell", 1_000, "230")
    place(b, "other-ask", "neighbour", "sell", 1_000, "230")
    events = place(b, "own-bid", "prosumer", "buy", 1_500, "240")
    [prevented] = [e for e in events if isinstance(e, OrderCancelled)]
    assert (prevented.order_id, prevented.reason) == ("own-ask", SELF_TRADE_PREVENTED)
    assert fills(events) == [("own-bid", "other-ask", 1_000, price("230"))]
    assert all(t.buyer != t.seller for t in trades(events))
    assert depth(b) == {"bids": [(price("240"), 500, 1)], "asks": []}


def test_a_closed_market_expires_what_is_open_and_refuses_new_orders() -> None:
    b = book()
    place(b, "bid", "b", "buy", 1_000, "230")
    place(b, "ask", "s", "sell", 2_000, "250")
    b.close(T0)
    events = taken(b)
    assert [(e.order_id, e.expired_wh) for e in events if isinstance(e, OrderExpired)] == [
        ("bid", 1_000),
        ("ask", 2_000),
    ]
    assert isinstance(events[-1], MarketClosed)
    [rejected] = place(b, "late", "b", "buy", 1_000, "260")
    assert isinstance(rejected, OrderRejected) and rejected.reason == MARKET_CLOSED
    b.close(T0)
    assert taken(b) == []


def test_the_book_refuses_what_it_cannot_hold() -> None:
    b = book()
    for order in (
        {"side": "hold", "price": price("1"), "quantity_wh": 1},
        {"side": "buy", "price": price("1"), "quantity_wh": 0},
        {"side": "buy", "price": 0, "quantity_wh": 1},
    ):
        b.place(order_id="x", participant_id="p", at=T0, **order)  # type: ignore[arg-type]
        [event] = taken(b)
        assert isinstance(event, OrderRejected) and event.reason == INVALID_ORDER


def test_fees_the_operator_fee_once_per_buy_order_the_grid_fee_per_kwh_rounded_down() -> None:
    b = book(fees=Fees(operator_fee=5, grid_fee_per_kwh=price("0.015")))
    place(b, "a1", "s1", "sell", 1_000, "0.333")
    place(b, "a2", "s2", "sell", 1_501, "0.333")
    events = place(b, "bid", "buyer", "buy", 2_501, "0.333")
    first, second = trades(events)
    # 1000 Wh x 0.333 = 0.333 ecoin -> 0; grid fee 1000 Wh x 0.015 = 0.015 -> 0; operator fee 5
    assert (first.value_ecoin, first.fee_ecoin) == (0, 5)
    # 1501 Wh x 0.333 = 0.499833 -> 0; grid fee 0.0225 -> 0; no operator fee the second time
    assert (second.value_ecoin, second.fee_ecoin) == (0, 0)
    b2 = book(fees=Fees(operator_fee=5, grid_fee_per_kwh=price("15")))
    place(b2, "a", "s", "sell", 2_000, "240")
    [trade] = trades(place(b2, "bid", "b", "buy", 2_000, "240"))
    assert (trade.value_ecoin, trade.fee_ecoin) == (480, 5 + 30)
