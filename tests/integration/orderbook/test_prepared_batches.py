"""The books' batches worked out before the write transaction, and order entry's group decisions.

A batch of commands is prepared on a read connection (matching, read models, event and outbox
rows) and only written in the transaction, after checking that every book's stream still ends
where the batch read it. These tests hold the prepared path to the same results as the path in
the transaction, and show what happens when the check fails or the unit tries to write at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from prosum_contracts import Envelope
from prosum_orderbook.adapters.books_consumer import BatchConsumer
from prosum_orderbook.adapters.store import NeedsWriteLock, PreparedUnit, SqlOrderbookStore
from prosum_orderbook.adapters.tables import accounts, orders, threshold_usage, trades
from prosum_orderbook.application.entry import NewOrder, OrderRefused
from prosum_orderbook.application.messages import COMMANDS_TOPIC
from prosum_orderbook.domain.units import parse_price
from prosum_platform.eventstore.schema import events, outbox
from prosum_platform.messaging import KafkaConfig
from tests.integration.orderbook.app import MARKET, App


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    application = App(store_url)
    yield application
    application.close()


@pytest.fixture
def other_url(store_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second database of the same kind as ``store_url``."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with request.getfixturevalue("pg_server").database() as url:
        yield url


def prepare(app: App, envelopes: Sequence[Envelope]) -> PreparedUnit:
    with app.store.read_transaction() as rtx:
        unit = SqlOrderbookStore(rtx, app.books, read_only=True)
        unit.preload_orders(e.data["order_id"] for e in envelopes if "order_id" in e.data)
        for envelope in envelopes:
            app.matcher.handle(unit, envelope.type, envelope.data)
        return unit.prepare()


def trade_flow(app: App) -> None:
    app.fund("seller", energy_wh=10_000)
    app.fund("buyer-a", ecoin=1_000_000)
    app.fund("buyer-b", ecoin=1_000_000)
    app.place("seller", "sell", 5_000, "240")
    app.place("buyer-a", "buy", 2_000, "250")
    app.place("buyer-b", "buy", 3_000, "240")
    app.place("buyer-b", "buy", 1_000, "200")


def state(app: App) -> dict[str, Any]:
    """The read models and the books' outbox, without ids and times that differ by nature."""
    with app.store.reading() as conn:
        return {
            "orders": sorted(
                tuple(r)
                for r in conn.execute(
                    sa.select(
                        orders.c.participant_id,
                        orders.c.side,
                        orders.c.status,
                        orders.c.remaining_wh,
                        orders.c.filled_wh,
                        orders.c.reserved_wh,
                        orders.c.reserved_ecoin,
                    )
                )
            ),
            "trades": sorted(
                (r.seller, r.buyer, r.quantity_wh, r.price, r.value_ecoin, r.fee_ecoin)
                for r in conn.execute(sa.select(trades))
            ),
            "accounts": sorted(
                tuple(r)
                for r in conn.execute(
                    sa.select(
                        accounts.c.participant_id, accounts.c.reserved_wh, accounts.c.reserved_ecoin
                    )
                )
            ),
            "usage": sorted(
                tuple(r)
                for r in conn.execute(
                    sa.select(
                        threshold_usage.c.threshold_id,
                        threshold_usage.c.open_wh,
                        threshold_usage.c.open_value_ecoin,
                    )
                )
            ),
            "book_events": [
                r.event_type
                for r in conn.execute(
                    sa.select(events.c.event_type)
                    .where(events.c.stream_id == MARKET)
                    .order_by(events.c.version)
                )
            ],
            "published": [
                r.message_key + " " + r.topic
                for r in conn.execute(
                    sa.select(outbox.c.message_key, outbox.c.topic)
                    .where(outbox.c.topic != COMMANDS_TOPIC)
                    .order_by(outbox.c.id)
                )
            ],
        }


def test_a_prepared_batch_leaves_what_the_transaction_would(store_url: str, other_url: str) -> None:
    in_tx, ahead = App(store_url), App(other_url)
    try:
        trade_flow(in_tx)
        in_tx.run_books()
        trade_flow(ahead)
        batch = ahead.pending_commands()
        prepared = prepare(ahead, batch)
        with ahead.store.transaction() as tx:
            assert prepared.current(tx)
            prepared.write(tx)
        assert state(ahead) == state(in_tx)
        assert len(state(ahead)["trades"]) == 2
        # the cached books are the stored ones: a later command needs no reload
        loads = ahead.books.loads
        ahead.place("seller", "sell", 1_000, "200")
        prepared = prepare(ahead, ahead.pending_commands())
        with ahead.store.transaction() as tx:
            assert prepared.current(tx)
            prepared.write(tx)
        assert ahead.books.loads == loads
        ahead.check_books_balance()
    finally:
        in_tx.close()
        ahead.close()


def test_a_batch_prepared_against_a_book_that_moved_on_is_not_written(app: App) -> None:
    trade_flow(app)
    batch = app.pending_commands()
    prepared = prepare(app, batch[:3])
    # Meanwhile another writer (an instance the partition moved to) applies the same commands.
    app.books.forget(MARKET)
    with app.uow() as unit:
        for envelope in batch:
            app.matcher.handle(unit, envelope.type, envelope.data)
    with app.store.transaction() as tx:
        assert not prepared.current(tx), "the book's head moved on"
    prepared.discard()
    after = state(app)
    assert len(after["trades"]) == 2, "nothing of the stale batch was written"
    # the discarded book is rebuilt from its stream, not taken from memory
    with app.uow() as unit:
        book = unit.book(MARKET)
    assert book.version == len(after["book_events"])
    app.check_books_balance()


def test_a_unit_prepared_outside_a_transaction_may_not_write_at_once(app: App) -> None:
    with app.store.read_transaction() as rtx:
        unit = SqlOrderbookStore(rtx, app.books, read_only=True)
        with pytest.raises(NeedsWriteLock):
            unit.close_market(MARKET, app.clock())
        with pytest.raises(NeedsWriteLock):
            unit.record_balance("someone", 1, 1, 5)


class _Prepared:
    def __init__(self, current: bool) -> None:
        self._current = current
        self.written = 0
        self.discarded = 0

    def current(self, _tx: Any) -> bool:
        return self._current

    def write(self, _tx: Any) -> None:
        self.written += 1

    def discard(self) -> None:
        self.discarded += 1


def _cancel(order_id: str, participant_id: str = "someone") -> Envelope:
    return Envelope(
        "orderbook.cancel_order",
        1,
        "orderbook",
        MARKET,
        {
            "order_id": order_id,
            "market_id": MARKET,
            "participant_id": participant_id,
            "reason": "requested",
            "requested_at": "2026-11-21T12:00:00.000000Z",
        },
    )


def _envelopes(n: int) -> list[Envelope]:
    return [_cancel(f"order-{i}") for i in range(n)]


def _consumer(app: App, prepared: _Prepared, handled: list[int]) -> BatchConsumer:
    def handle(_tx: Any, fresh: Sequence[Envelope]) -> None:
        handled.append(len(fresh))

    return BatchConsumer(
        f"test-{uuid.uuid4().hex[:6]}",
        COMMANDS_TOPIC,
        app.store,
        app.registry,
        KafkaConfig("127.0.0.1:1"),
        handle,
        prepare=lambda _envelopes: prepared,
    )


def test_the_consumer_writes_a_current_prepared_batch_without_the_handler(app: App) -> None:
    prepared, handled = _Prepared(current=True), []
    consumer = _consumer(app, prepared, handled)
    consumer._apply(_envelopes(3))
    assert (prepared.written, prepared.discarded, handled) == (1, 0, [])
    assert consumer.state.prepared == 1 and consumer.state.applied == 3


def test_the_consumer_falls_back_to_the_handler_when_the_batch_is_stale(app: App) -> None:
    prepared, handled = _Prepared(current=False), []
    consumer = _consumer(app, prepared, handled)
    consumer._apply(_envelopes(3))
    assert (prepared.written, prepared.discarded, handled) == (0, 1, [3])


def test_the_consumer_falls_back_when_part_of_the_batch_was_applied_already(app: App) -> None:
    envelopes = _envelopes(3)
    prepared, handled = _Prepared(current=True), []
    consumer = _consumer(app, prepared, handled)
    consumer._apply(envelopes[:1])  # redelivered below with two new ones
    prepared.written = 0
    consumer._apply(envelopes)
    assert (prepared.written, prepared.discarded, handled) == (0, 1, [2])
    assert consumer.state.duplicates == 1


def test_a_prepared_batch_that_fails_to_commit_is_discarded(app: App) -> None:
    prepared, handled = _Prepared(current=True), []

    def broken_write(_tx: Any) -> None:
        raise RuntimeError("disk full")

    prepared.write = broken_write  # type: ignore[method-assign]
    consumer = _consumer(app, prepared, handled)
    with pytest.raises(RuntimeError):
        consumer._apply(_envelopes(2))
    assert prepared.discarded == 1 and consumer.state.applied == 0


# -- order entry: a group's cover and threshold use decided in memory --------------------------
def test_a_group_reserves_in_turn_and_refuses_the_orders_cover_no_longer_reaches(app: App) -> None:
    app.fund("seller", energy_wh=3_000)
    app.fund("buyer", ecoin=1_000)
    seller, buyer = app.authority("seller"), app.authority("buyer", max_open_wh=2_500)
    price = parse_price("100")
    outcomes = app.entry.place_many(
        [
            (seller, NewOrder(MARKET, "sell", price, 1_000, "gtc")),
            (buyer, NewOrder(MARKET, "buy", price, 2_000, "gtc")),  # 200 + 20 + 2
            (seller, NewOrder(MARKET, "sell", price, 1_500, "gtc")),
            (seller, NewOrder(MARKET, "sell", price, 1_000, "gtc")),  # 500 Wh left: refused
            (buyer, NewOrder(MARKET, "buy", price, 1_000, "gtc")),  # over 2,500 Wh open
            (seller, NewOrder(MARKET, "sell", price, 500, "gtc")),  # fits exactly
        ]
    )
    reasons = [o.reason if isinstance(o, OrderRefused) else "placed" for o in outcomes]
    assert reasons == [
        "placed",
        "placed",
        "placed",
        "insufficient_energy",
        "threshold_exhausted",
        "placed",
    ]
    assert app.account("seller").reserved_wh == 3_000
    assert app.account("buyer").reserved_ecoin == 222
    usage = {r.threshold_id: (r.open_wh, r.open_value_ecoin) for r in app.rows(threshold_usage)}
    assert usage == {"th-seller": (3_000, 0), "th-buyer": (2_000, 200)}
    # the refusals' messages are built from the group's own view of the account
    refusal = outcomes[3]
    assert isinstance(refusal, OrderRefused)
    assert "500 Wh are free" in refusal.message
    app.run_books()
    app.check_books_balance()


def test_a_group_whose_orders_are_all_refused_leaves_no_threshold_row(app: App) -> None:
    app.fund("buyer", ecoin=10)
    buyer = app.authority("buyer")
    [refused] = app.entry.place_many([(buyer, NewOrder(MARKET, "buy", 100_000, 1_000, "gtc"))])
    assert isinstance(refused, OrderRefused) and refused.reason == "insufficient_ecoin"
    assert app.rows(threshold_usage) == []
    assert app.account("buyer").reserved_ecoin == 0


# -- traces: one span per batch, each command's events in its request's trace -----------------
def test_a_batch_has_one_span_linked_to_its_commands_and_their_events_keep_their_trace(
    app: App,
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from prosum_contracts import TraceContext
    from prosum_platform.telemetry import setup_telemetry

    spans = InMemorySpanExporter()
    telemetry = setup_telemetry("orderbook", span_processors=[SimpleSpanProcessor(spans)])
    consumer = BatchConsumer(
        "books",
        COMMANDS_TOPIC,
        app.store,
        app.registry,
        KafkaConfig("127.0.0.1:1"),
        lambda _tx, _envelopes: None,
        telemetry,
    )
    parents = [f"00-{n:032x}-{n:016x}-01" for n in range(1, 4)]
    trade_flow(app)
    batch = [
        Envelope(e.type, 1, "orderbook", e.subject, e.data, trace=TraceContext(parent))
        for e, parent in zip(app.pending_commands()[:3], parents, strict=True)
    ]
    with app.uow() as unit:
        assert isinstance(unit, SqlOrderbookStore)
        with consumer.traced(batch):
            for envelope in batch:
                unit.trace = envelope.trace
                app.matcher.handle(unit, envelope.type, envelope.data)
    [span] = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 3
    assert [link.context.trace_id for link in span.links] == [1, 2, 3]
    with app.store.reading() as conn:
        headers = [
            orjson.loads(h)
            for h in conn.execute(
                sa.select(outbox.c.headers).where(outbox.c.topic != COMMANDS_TOPIC)
            ).scalars()
        ]
    traces = {h["traceparent"].split("-")[1] for h in headers}
    assert traces == {f"{n:032x}" for n in range(1, 4)}, "events carry their command's trace"


def test_drafted_orders_keep_client_order_ids_unique_within_a_group_and_across(app: App) -> None:
    app.fund("seller", energy_wh=10_000)
    app.place("seller", "sell", 1_000, "240", client_order_id="first")  # opens the market
    seller = app.authority("seller")
    price = parse_price("240")
    outcomes = app.entry.place_many(
        [
            (seller, NewOrder(MARKET, "sell", price, 1_000, "gtc", "first")),
            (seller, NewOrder(MARKET, "sell", price, 1_000, "gtc", "second")),
            (seller, NewOrder(MARKET, "sell", price, 1_000, "gtc", "second")),
            (seller, NewOrder(MARKET, "sell", price, 1_000, "gtc", "third")),
        ]
    )
    reasons = [o.reason if isinstance(o, OrderRefused) else "placed" for o in outcomes]
    assert reasons == [
        "duplicate_client_order_id",
        "placed",
        "duplicate_client_order_id",
        "placed",
    ]
    assert app.account("seller").reserved_wh == 3_000
    assert sorted(r.client_order_id for r in app.rows(orders)) == ["first", "second", "third"]
    assert app.run_books() == 4  # open, and the three placed: each sent once, in order


def test_an_order_drafted_before_gate_closure_and_written_after_it_is_refused(app: App) -> None:
    """The group is drafted before it waits for the write lock; gate closure can pass in
    between. The order is refused then, not accepted for its book to expire it."""
    from contextlib import contextmanager
    from datetime import timedelta

    from prosum_orderbook.application.entry import OrderEntry
    from tests.integration.orderbook.app import SCHEDULE

    app.fund("seller", energy_wh=10_000)
    app.place("seller", "sell", 1_000, "240")  # opens the market
    gate_closure = SCHEDULE.window(MARKET).gate_closure
    app.clock.now = gate_closure - timedelta(milliseconds=1)

    @contextmanager
    def late() -> Iterator[Any]:
        app.clock.now = gate_closure  # passes while the group waits for the write lock
        with app.uow() as unit:
            yield unit

    entry = OrderEntry(
        late,
        SCHEDULE,
        app.entry._defaults,
        app.clock,
        lambda: str(uuid.uuid4()),
        reading=app.entry._reading,
    )
    price = parse_price("240")
    [outcome] = entry.place_many(
        [(app.authority("seller"), NewOrder(MARKET, "sell", price, 1_000, "gtc", None))]
    )
    assert isinstance(outcome, OrderRefused)
    assert (outcome.status, outcome.reason) == (409, "market_closed")
    assert app.account("seller").reserved_wh == 1_000, "the first order's reservation only"
    assert len(app.rows(orders)) == 1


def test_a_calendar_round_with_nothing_to_do_takes_no_write_transaction(app: App) -> None:
    from contextlib import contextmanager

    from prosum_orderbook.application.scheduler import MarketScheduler
    from tests.integration.orderbook.app import SCHEDULE

    writes = []

    @contextmanager
    def counted() -> Iterator[Any]:
        writes.append(1)
        with app.uow() as unit:
            yield unit

    scheduler = MarketScheduler(
        counted, SCHEDULE, app.entry._defaults, app.clock, reading=app.entry._reading
    )
    first = scheduler.run_once()
    assert len(first.opened) > 90 and writes == [1]
    assert scheduler.run_once() == type(first)([], []) and writes == [1]
    app.clock.now += SCHEDULE.gate_closure  # the first market passes gate closure ...
    app.clock.now += SCHEDULE.open_ahead  # ... and new ones open
    later = scheduler.run_once()
    assert later.opened and later.closing and writes == [1, 1]


def test_counters_are_written_accounts_first_then_thresholds_each_in_key_order(
    app: App,
) -> None:
    """The one lock order every unit of work keeps (``hold_cover`` reads in it): a unit that
    wrote a threshold before an account, or thresholds by participant, deadlocked with order
    entry on PostgreSQL."""
    from prosum_orderbook.adapters.store import _write_counters

    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("UPDATE"):
            statements.append((statement.split()[1], params))

    sa.event.listen(app.engine, "before_cursor_execute", record)
    try:
        with app.store.transaction() as tx:
            _write_counters(
                tx.conn,
                {"p-b": (1, 0), "p-a": (0, 2)},
                {("p-a", "t-z"): (5, 0), ("p-b", "t-c"): (1, 1), ("p-c", "t-m"): (2, 0)},
                app.clock(),
            )
    finally:
        sa.event.remove(app.engine, "before_cursor_execute", record)
    tables = [table for table, _ in statements]
    assert tables == ["ob_accounts", "ob_threshold_usage"]
    accounts_rows, threshold_rows = (params for _, params in statements)
    keys = [row["p"] if isinstance(row, dict) else row for row in accounts_rows]
    assert str(keys).index("p-a") < str(keys).index("p-b")
    keys = str(threshold_rows)
    assert keys.index("t-c") < keys.index("t-m") < keys.index("t-z")


async def test_a_batch_that_lost_to_a_concurrent_writer_is_tried_again_whole(app: App) -> None:
    from types import SimpleNamespace

    from prosum_platform.domain import ConcurrencyConflict

    consumer = _consumer(app, _Prepared(current=True), [])
    calls: list[int] = []

    def apply(envelopes: Sequence[Envelope]) -> None:
        calls.append(len(envelopes))
        if len(calls) < 3:
            raise ConcurrencyConflict(MARKET, 1, 2)

    consumer._apply = apply  # type: ignore[method-assign]
    records = [SimpleNamespace(value=e.to_bytes()) for e in _envelopes(4)]
    await consumer._process(records)  # type: ignore[arg-type]
    assert calls == [4, 4, 4], "the whole batch, three times; never one by one"
    assert consumer.state.batches == 1


def test_a_batch_that_changed_nothing_in_a_book_still_checks_that_book(app: App) -> None:
    """A cancel the book ignores (an order it no longer holds) writes no book event, but the
    command is recorded as done: it must not be, if the book it read has moved on."""
    trade_flow(app)
    app.run_books()
    cancel = _cancel("not-in-the-book", "seller")
    prepared = prepare(app, [cancel])
    with app.store.transaction() as tx:
        assert prepared.current(tx)
    app.place("seller", "sell", 1_000, "260")
    app.run_books()  # the book moves on
    with app.store.transaction() as tx:
        assert not prepared.current(tx)


def test_postgresql_locks_cover_rows_in_the_order_python_sorts_keys() -> None:
    from sqlalchemy.dialects import postgresql

    from prosum_orderbook.adapters.store import _LOCK_ACCOUNTS, _LOCK_USE

    for query in (_LOCK_ACCOUNTS, _LOCK_USE):
        sql = str(query.compile(dialect=postgresql.dialect()))
        assert 'COLLATE "C"' in sql and "FOR UPDATE" in sql
    assert sorted(["alice", "Zed"]) == ["Zed", "alice"], "code points: the C collation's order"
