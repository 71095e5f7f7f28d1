"""The uniform-price call auction: the clearing rule, then a call-auction market at gate closure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from prosum_orderbook.domain.auction import Clearing, clear
from prosum_orderbook.domain.book import IOC_IN_CALL_AUCTION, SELF_TRADE_PREVENTED
from prosum_orderbook.domain.events import (
    AuctionCleared,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
)
from prosum_orderbook.domain.markets import Mechanism
from tests.unit.orderbook.books import T0, book, fills, kinds, place, price, taken, trades


def test_the_price_that_executes_the_most_volume_wins() -> None:
    bids = [(300, 10), (240, 10), (200, 10)]
    asks = [(180, 5), (240, 15), (290, 20)]
    # volume min(D, S): 180: 5, 200: 5, 240: 20, 290: 10, 300: 10
    assert clear(bids, asks) == Clearing(240, 20, 0)


def test_a_tie_in_volume_and_imbalance_without_pressure_clears_at_the_midpoint() -> None:
    bids = [(300, 10), (250, 10), (200, 10)]
    asks = [(180, 5), (240, 15), (290, 20)]
    # 240 and 250 both execute 20 with D = S = 20: midpoint 245, which executes 20 as well
    assert clear(bids, asks) == Clearing(245, 20, 0)


def test_at_equal_volume_the_smaller_imbalance_wins() -> None:
    # at 200: D 20, S 10 (imbalance 10); at 300: D 10, S 15 (imbalance 5): both execute 10
    assert clear([(300, 10), (200, 10)], [(200, 10), (300, 5)]) == Clearing(300, 10, -5)


def test_with_surplus_on_both_sides_at_the_best_prices_it_clears_at_their_midpoint() -> None:
    bids = [(300, 10), (200, 5)]
    asks = [(150, 10), (250, 5)]
    # volume 10 at every candidate; at 150 and 200 D=15 S=10, at 250 and 300 D=10 S=15: all
    # have imbalance 5, buyers left over at the low ones and sellers at the high ones, so no
    # pressure decides: the midpoint of 150 and 300, where D = S = 10
    result = clear(bids, asks)
    assert result == Clearing(225, 10, 0)


def test_when_buyers_are_left_over_at_every_best_price_the_highest_is_taken() -> None:
    assert clear([(300, 10)], [(200, 5)]) == Clearing(300, 5, 5)


def test_when_sellers_are_left_over_at_every_best_price_the_lowest_is_taken() -> None:
    assert clear([(300, 5)], [(200, 10)]) == Clearing(200, 5, -5)


def test_when_nothing_crosses_there_is_no_price() -> None:
    assert clear([(100, 10)], [(200, 10)]) == Clearing(None, 0, 0)
    assert clear([], [(200, 10)]) == Clearing(None, 0, 0)


levels = st.lists(
    st.tuples(st.integers(1, 40).map(lambda p: p * 10), st.integers(1, 50)), max_size=8
)


@given(levels, levels)
def test_the_clearing_price_executes_the_largest_volume_of_any_price(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]]
) -> None:
    def executable(p: int) -> int:
        demand = sum(q for price_, q in bids if price_ >= p)
        supply = sum(q for price_, q in asks if price_ <= p)
        return min(demand, supply)

    result = clear(bids, asks)
    best = max((executable(p) for p in range(1, 420)), default=0)
    assert result.volume_wh == best
    if best:
        assert result.price is not None and executable(result.price) == best
    else:
        assert result.price is None


def test_a_call_auction_market_collects_crossing_orders_and_clears_them_at_one_price() -> None:
    b = book(Mechanism.CALL_AUCTION)
    assert kinds(place(b, "a1", "s1", "sell", 2_000, "200")) == ["OrderAccepted", "OrderRested"]
    place(b, "a2", "s2", "sell", 2_000, "260")
    place(b, "b1", "b1", "buy", 3_000, "280")
    place(b, "b2", "b2", "buy", 2_000, "240")
    assert b.is_crossed(), "nothing matches before gate closure"
    b.close(T0)
    events = taken(b)
    [cleared] = [e for e in events if isinstance(e, AuctionCleared)]
    # candidates: 200 (D5000 S2000), 240 (D5000 S2000), 260 (D3000 S4000), 280 (D3000 S4000)
    assert (cleared.price, cleared.volume_wh, cleared.imbalance_wh) == (price("260"), 3_000, -1_000)
    assert fills(events) == [
        ("b1", "a1", 2_000, price("260")),
        ("b1", "a2", 1_000, price("260")),
    ]
    assert {t.mechanism for t in trades(events)} == {"call_auction"}
    assert [(e.order_id, e.expired_wh) for e in events if isinstance(e, OrderExpired)] == [
        ("a2", 1_000),
        ("b2", 2_000),
    ]


def test_in_a_call_auction_a_participants_crossing_orders_never_meet() -> None:
    b = book(Mechanism.CALL_AUCTION)
    place(b, "own-ask", "prosumer", "sell", 1_000, "200")
    events = place(b, "own-bid", "prosumer", "buy", 1_000, "250")
    [prevented] = [e for e in events if isinstance(e, OrderCancelled)]
    assert (prevented.order_id, prevented.reason) == ("own-ask", SELF_TRADE_PREVENTED)
    [rejected] = place(b, "ioc", "x", "buy", 1_000, "250", tif="ioc")
    assert isinstance(rejected, OrderRejected) and rejected.reason == IOC_IN_CALL_AUCTION
