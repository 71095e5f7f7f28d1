"""The event store contract, run against every backend (SQLite and PostgreSQL).

Given events, when a command appends, then these are the events: each test states what a
service relies on from its store.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar, Self

import pytest
from sqlalchemy import Engine, func, select

from prosum_contracts import Envelope, InvalidEvent, SchemaRegistry
from prosum_platform.codec import EventCodec
from prosum_platform.domain import Aggregate, ConcurrencyConflict, DomainEvent
from prosum_platform.eventstore import (
    EventStore,
    NewEvent,
    Repository,
    create_store_engine,
    metadata,
    retry_on_conflict,
)
from prosum_platform.eventstore.schema import outbox


@dataclass(frozen=True, kw_only=True)
class Deposited(DomainEvent):
    event_type: ClassVar[str] = "AccountDeposited"
    amount: Decimal


class Account(Aggregate):
    snapshot_every: ClassVar[int | None] = 10

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.balance = Decimal(0)
        self.replayed = 0

    def deposit(self, amount: Decimal) -> None:
        if amount <= 0:
            raise ValueError("deposits are positive")
        self._trigger(Deposited(amount=amount))

    def apply(self, event: DomainEvent) -> None:
        assert isinstance(event, Deposited)
        self.balance += event.amount
        self.replayed += 1

    def snapshot_state(self) -> dict[str, Any]:
        return {"balance": str(self.balance)}

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: dict[str, Any]) -> Self:
        account = cls(aggregate_id)
        account.balance = Decimal(state["balance"])
        account.version = version
        return account


CODEC = EventCodec().register(Deposited)


def widget(subject: str, sequence: int) -> Envelope:
    return Envelope(
        type="platformtest.widget_recorded",
        schema_version=1,
        source="identity",
        subject=subject,
        data={"widget_id": subject, "sequence": sequence, "amount": "1.5"},
    )


@pytest.fixture
def engine(store_url: str) -> Engine:
    engine = create_store_engine(store_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine, registry: SchemaRegistry) -> EventStore:
    return EventStore(engine, registry)


def test_appended_events_load_in_order_with_increasing_positions(store: EventStore) -> None:
    with store.transaction() as tx:
        tx.append("acc-1", 0, [NewEvent("A", 1, {"n": 1}), NewEvent("B", 1, {"n": 2})])
    with store.transaction() as tx:
        tx.append("acc-2", 0, [NewEvent("A", 1, {"n": 3})])
        tx.append("acc-1", 2, [NewEvent("C", 1, {"n": 4}, {"by": "ops"})])

    loaded = store.load("acc-1")
    assert [(e.version, e.event_type, e.data["n"]) for e in loaded] == [
        (1, "A", 1),
        (2, "B", 2),
        (3, "C", 4),
    ]
    assert loaded[2].meta == {"by": "ops"}
    assert [e.version for e in store.load("acc-1", after_version=2)] == [3]
    everything = store.read_all()
    assert [e.data["n"] for e in everything] == [1, 2, 3, 4]
    positions = [e.position for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == 4


def test_appending_at_a_stale_version_fails_and_changes_nothing(store: EventStore) -> None:
    with store.transaction() as tx:
        tx.append("acc-1", 0, [NewEvent("A", 1, {})])
    with pytest.raises(ConcurrencyConflict), store.transaction() as tx:
        tx.append("acc-1", 0, [NewEvent("B", 1, {})])
    with pytest.raises(ConcurrencyConflict), store.transaction() as tx:
        tx.append("acc-1", 5, [NewEvent("B", 1, {})])
    assert [e.event_type for e in store.load("acc-1")] == ["A"]


def test_two_concurrent_writers_on_one_aggregate_one_wins_the_other_fails_cleanly(
    store: EventStore,
) -> None:
    with store.transaction() as tx:
        tx.append("acc-1", 0, [NewEvent("Opened", 1, {})])
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def writer(name: str) -> None:
        # Both writers decide on the same state (version 1), then race to append.
        version = store.load("acc-1")[-1].version
        barrier.wait(timeout=5)
        try:
            with store.transaction() as tx:
                tx.append("acc-1", version, [NewEvent("Deposited", 1, {"by": name})])
            outcomes.append("ok")
        except ConcurrencyConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["conflict", "ok"]
    events = store.load("acc-1")
    assert [e.version for e in events] == [1, 2]


def test_a_handler_retrying_on_conflict_applies_every_concurrent_command(
    store: EventStore,
) -> None:
    repository = Repository(Account, CODEC)
    writers, deposits_each = 8, 5

    def deposit_once() -> None:
        with store.transaction() as tx:
            account = repository.get(tx, "acc-1") or Account("acc-1")
            account.deposit(Decimal("0.001"))
            repository.save(tx, account)

    def writer() -> None:
        for _ in range(deposits_each):
            retry_on_conflict(deposit_once, attempts=50)

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with store.transaction() as tx:
        account = repository.get(tx, "acc-1")
    assert account is not None
    assert account.version == writers * deposits_each
    assert account.balance == Decimal("0.001") * writers * deposits_each


def test_snapshots_shorten_replay_and_give_the_same_state(store: EventStore) -> None:
    repository = Repository(Account, CODEC)
    for _ in range(25):
        with store.transaction() as tx:
            account = repository.get(tx, "acc-1") or Account("acc-1")
            account.deposit(Decimal(2))
            repository.save(tx, account)
    with store.transaction() as tx:
        snapshot = tx.latest_snapshot("acc-1")
        account = repository.get(tx, "acc-1")
    assert snapshot is not None and snapshot.version == 20
    assert account is not None
    assert account.version == 25 and account.balance == Decimal(50)
    assert account.replayed == 5, "only the events after the snapshot are replayed"
    full = Account("acc-1")
    for stored in store.load("acc-1"):
        full.replay(CODEC.decode(stored.event_type, stored.schema_version, stored.data), 0)
    assert full.balance == account.balance


def test_outbox_rows_commit_and_roll_back_with_the_events(
    store: EventStore, engine: Engine
) -> None:
    with store.transaction() as tx:
        tx.append("w-1", 0, [NewEvent("Recorded", 1, {})])
        tx.enqueue(widget("w-1", 1))
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append("w-2", 0, [NewEvent("Recorded", 1, {})])
        tx.enqueue(widget("w-2", 1))
        raise RuntimeError("the command failed after writing")
    assert store.load("w-2") == []
    rows = store.unsent(100)
    assert [r.key for r in rows] == ["w-1"]
    assert rows[0].topic == "prosum.platformtest.widgets"
    headers = dict(rows[0].headers)
    assert headers["event_type"] == b"platformtest.widget_recorded"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 1


def test_an_event_that_breaks_its_schema_is_refused_before_it_is_stored(
    store: EventStore,
) -> None:
    bad = Envelope(
        type="platformtest.widget_recorded",
        schema_version=1,
        source="identity",
        subject="w-1",
        data={"widget_id": "w-1", "sequence": -1, "amount": "x"},
    )
    with pytest.raises(InvalidEvent), store.transaction() as tx:
        tx.append("w-1", 0, [NewEvent("Recorded", 1, {})])
        tx.enqueue(bad)
    assert store.load("w-1") == [] and store.pending_outbox() == 0


def test_mark_sent_and_purge(store: EventStore) -> None:
    with store.transaction() as tx:
        for i in range(3):
            tx.enqueue(widget(f"w-{i}", i))
    rows = store.unsent(10)
    store.mark_sent([rows[0].id])
    assert [r.id for r in store.unsent(10)] == [r.id for r in rows[1:]]
    assert store.pending_outbox() == 2
    assert store.purge_sent(timedelta(seconds=-1)) == 1


def test_recording_a_processed_event_twice_reports_the_duplicate(store: EventStore) -> None:
    with store.transaction() as tx:
        assert tx.record_processed("orderbook", "evt-1") is True
    with store.transaction() as tx:
        assert tx.record_processed("orderbook", "evt-1") is False
        assert tx.record_processed("settlement", "evt-1") is True, "tracking is per consumer"
        assert tx.was_processed("orderbook", "evt-1")


def test_two_consumers_applying_the_same_event_at_once_apply_it_once(
    store: EventStore,
) -> None:
    barrier = threading.Barrier(2)
    applied: list[bool] = []

    def apply() -> None:
        barrier.wait(timeout=5)
        with store.transaction() as tx:
            first = tx.record_processed("orderbook", "evt-42")
            if first:
                version = tx.current_version("effects")
                tx.append("effects", version, [NewEvent("Applied", 1, {})])
            applied.append(first)

    threads = [threading.Thread(target=apply) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(applied) == [False, True]
    assert len(store.load("effects")) == 1


def test_only_one_holder_has_a_lease_until_it_expires(store: EventStore) -> None:
    ttl = timedelta(seconds=30)
    assert store.acquire_lease("relay", "a", ttl)
    assert not store.acquire_lease("relay", "b", ttl)
    assert store.acquire_lease("relay", "a", ttl), "the holder renews"
    store.release_lease("relay", "a")
    assert store.acquire_lease("relay", "b", ttl)
    assert store.acquire_lease("relay", "b", timedelta(seconds=-1))  # b lets it lapse
    assert store.acquire_lease("relay", "a", ttl), "an expired lease can be taken over"
