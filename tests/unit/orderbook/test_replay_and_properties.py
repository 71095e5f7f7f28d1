"""Determinism and invariants of the matching core under random order flows (hypothesis).

- Rebuilding a book from its events gives the same book; running the same commands on an empty
  book gives the same events; a snapshot restores a book that then behaves the same.
- A continuous book never stays crossed, nobody trades with itself, every trade is within both
  limits and at the resting order's price, and each order's quantity is conserved:
  placed = filled + resting + cancelled (or reduced) + expired.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from prosum_orderbook.domain.book import OrderBook
from prosum_orderbook.domain.events import (
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderReduced,
    OrderRejected,
    TradeExecuted,
)
from prosum_orderbook.domain.markets import Fees, Mechanism
from prosum_platform.domain import DomainEvent
from tests.unit.orderbook.books import MARKET, T0


@dataclass(frozen=True)
class Place:
    order_id: str
    participant: str
    side: str
    price: int
    quantity: int
    tif: str


@dataclass(frozen=True)
class Cancel:
    order_id: str


@dataclass(frozen=True)
class Reduce:
    order_id: str
    by: int


Command = Place | Cancel | Reduce

order_ids = st.integers(0, 40).map(lambda n: f"o{n}")
place = st.builds(
    Place,
    order_ids,
    st.sampled_from(["p1", "p2", "p3", "p4"]),
    st.sampled_from(["buy", "sell"]),
    st.integers(230, 250).map(lambda p: p * 1000),
    st.integers(1, 40).map(lambda q: q * 100),
    st.sampled_from(["gtc", "gtc", "gtc", "ioc"]),
)
commands = st.lists(
    st.one_of(
        place,
        place,
        place,
        st.builds(Cancel, order_ids),
        st.builds(Reduce, order_ids, st.integers(1, 3000)),
    ),
    max_size=60,
)
mechanisms = st.sampled_from([Mechanism.CONTINUOUS, Mechanism.CALL_AUCTION])


def run(
    cmds: list[Command],
    mechanism: Mechanism,
    close: bool = True,
    b: OrderBook | None = None,
    used: set[str] | None = None,
) -> tuple[OrderBook, list[DomainEvent]]:
    """Run commands on a book (a new one unless given); ``used`` collects the order ids placed,
    which are never reused (entry draws UUIDs)."""
    if b is None:
        b = OrderBook(MARKET)
        b.open(mechanism, Fees(operator_fee=3, grid_fee_per_kwh=12_000), T0)
    used = set() if used is None else used
    for cmd in cmds:
        if isinstance(cmd, Place):
            if cmd.order_id in used:
                continue
            used.add(cmd.order_id)
            b.place(
                order_id=cmd.order_id,
                participant_id=cmd.participant,
                side=cmd.side,
                price=cmd.price,
                quantity_wh=cmd.quantity,
                # a call auction takes good-till-gate-closure orders only
                time_in_force=cmd.tif if mechanism is Mechanism.CONTINUOUS else "gtc",
                at=T0,
            )
        elif isinstance(cmd, Cancel):
            b.cancel(cmd.order_id, T0)
        else:
            b.reduce(cmd.order_id, cmd.by, T0)
        if mechanism is Mechanism.CONTINUOUS:
            assert not b.is_crossed(), "a continuous book never stays crossed"
    if close:
        b.close(T0)
    events = list(b.pending_events)
    b.mark_persisted()
    return b, events


def replayed(events: list[DomainEvent]) -> OrderBook:
    b = OrderBook(MARKET)
    for version, event in enumerate(events, start=1):
        b.replay(event, version)
    return b


@settings(max_examples=150, deadline=None)
@given(commands, mechanisms)
def test_replaying_the_events_rebuilds_the_same_book(
    cmds: list[Command], mechanism: Mechanism
) -> None:
    b, events = run(cmds, mechanism, close=False)
    assert replayed(events).state() == b.state()


@settings(max_examples=150, deadline=None)
@given(commands, mechanisms)
def test_the_same_commands_give_the_same_events(cmds: list[Command], mechanism: Mechanism) -> None:
    _, first = run(cmds, mechanism)
    _, second = run(cmds, mechanism)
    assert first == second


@settings(max_examples=100, deadline=None)
@given(commands, commands, mechanisms)
def test_a_snapshot_restores_a_book_that_then_behaves_the_same(
    before: list[Command], after: list[Command], mechanism: Mechanism
) -> None:
    used: set[str] = set()
    b, events = run(before, mechanism, close=False, used=used)
    restored = OrderBook.from_snapshot(MARKET, len(events), b.snapshot_state())
    assert restored.state() == b.state()
    _, expected = run(after, mechanism, b=b, used=set(used))
    _, actual = run(after, mechanism, b=restored, used=set(used))
    assert actual == expected


@settings(max_examples=300, deadline=None)
@given(commands, mechanisms)
def test_trades_respect_limits_and_participants_and_every_wh_is_accounted_for(
    cmds: list[Command], mechanism: Mechanism
) -> None:
    b, events = run(cmds, mechanism, close=False)
    placed: dict[str, int] = {}
    limit: dict[str, tuple[str, int]] = {}
    gone: dict[str, int] = defaultdict(int)
    filled: dict[str, int] = defaultdict(int)
    seq = {}
    for event in events:
        if isinstance(event, OrderAccepted):
            placed[event.order_id] = event.quantity_wh
            limit[event.order_id] = (event.side, event.price)
            seq[event.order_id] = event.seq
        elif isinstance(event, TradeExecuted):
            assert event.buyer != event.seller, "no self-trade"
            assert limit[event.buy_order_id][1] >= event.price >= limit[event.sell_order_id][1]
            if event.aggressor == "buy":  # continuous: at the resting (earlier) order's price
                assert event.price == limit[event.sell_order_id][1]
                assert seq[event.sell_order_id] < seq[event.buy_order_id]
            elif event.aggressor == "sell":
                assert event.price == limit[event.buy_order_id][1]
            filled[event.buy_order_id] += event.quantity_wh
            filled[event.sell_order_id] += event.quantity_wh
        elif isinstance(event, OrderCancelled):
            gone[event.order_id] += event.cancelled_wh
        elif isinstance(event, OrderReduced):
            gone[event.order_id] += event.reduced_wh
        elif isinstance(event, OrderExpired):  # pragma: no cover - not closed here
            gone[event.order_id] += event.expired_wh
        else:
            assert not isinstance(event, OrderRejected)
    resting = {o.order_id: o.remaining for o in b.resting()}
    for order_id, quantity in placed.items():
        assert quantity == filled[order_id] + resting.get(order_id, 0) + gone[order_id], order_id
    _, closing = run([], mechanism, b=b)
    expired = {e.order_id: e.expired_wh for e in closing if isinstance(e, OrderExpired)}
    auction_fills: dict[str, int] = defaultdict(int)
    for event in closing:
        if isinstance(event, TradeExecuted):
            auction_fills[event.buy_order_id] += event.quantity_wh
            auction_fills[event.sell_order_id] += event.quantity_wh
    assert resting == {k: expired.get(k, 0) + auction_fills.get(k, 0) for k in resting}, (
        "at gate closure what rested either traded in the auction or expired"
    )
    assert b.orders == {}
