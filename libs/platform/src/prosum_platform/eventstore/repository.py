"""Load and save event-sourced aggregates, with snapshots and optimistic concurrency."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from prosum_platform.codec import EventCodec
from prosum_platform.domain import Aggregate, ConcurrencyConflict
from prosum_platform.eventstore.store import NewEvent, Transaction, event_rows

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


class Repository(Generic[A]):
    """Rebuilds aggregates of one class from their stream, inside a transaction."""

    def __init__(
        self,
        aggregate_cls: type[A],
        codec: EventCodec,
        factory: Callable[[str], A] | None = None,
        *,
        stream_prefix: str = "",
    ) -> None:
        self._cls = aggregate_cls
        self._codec = codec
        self._factory = factory or aggregate_cls
        # Streams of different aggregate kinds in one store stay apart: "trade-<id>", ...
        self._prefix = stream_prefix

    def stream_id(self, aggregate_id: str) -> str:
        return f"{self._prefix}{aggregate_id}"

    def get(self, tx: Transaction, aggregate_id: str) -> A | None:
        aggregate: A | None = None
        after = 0
        stream = self.stream_id(aggregate_id)
        if self._cls.snapshot_every:
            snapshot = tx.latest_snapshot(stream)
            if snapshot is not None:
                aggregate = self._cls.from_snapshot(aggregate_id, snapshot.version, snapshot.state)
                after = snapshot.version
        stored = tx.load(stream, after_version=after)
        if aggregate is None:
            if not stored:
                return None
            aggregate = self._factory(aggregate_id)
        for event in stored:
            domain_event = self._codec.decode(event.event_type, event.schema_version, event.data)
            aggregate.replay(domain_event, event.version)
        return aggregate

    def save(self, tx: Transaction, aggregate: A, meta: dict[str, Any] | None = None) -> None:
        pending = aggregate.pending_events
        if not pending:
            return
        expected = aggregate.version - len(pending)
        new_events = []
        for event in pending:
            event_type, version, data = self._codec.encode(event)
            new_events.append(NewEvent(event_type, version, data, meta or {}))
        stream = self.stream_id(aggregate.id)
        tx.append(stream, expected, new_events)
        aggregate.mark_persisted()
        every = self._cls.snapshot_every
        if every and aggregate.version // every > expected // every:
            tx.save_snapshot(stream, aggregate.version, aggregate.snapshot_state())

    def save_many(
        self,
        tx: Transaction,
        aggregates: Sequence[A],
        meta: Callable[[A], dict[str, Any]] | None = None,
    ) -> None:
        """Persist the pending events of many aggregates with one statement (and the
        snapshots that are due, one statement each).

        For aggregates whose versions are current in this transaction (loaded or checked in
        it); a concurrent writer surfaces as ``ConcurrencyConflict`` for the whole call.
        ``meta`` gives each aggregate's events their meta.
        """
        self.prepare_save(aggregates, meta).write(tx)

    def prepare_save(
        self,
        aggregates: Sequence[A],
        meta: Callable[[A], dict[str, Any]] | None = None,
    ) -> PreparedSave[A]:
        """``save_many`` in two steps: the rows now (encoded, serialized, no database), the
        write later (``PreparedSave.write``), perhaps in a transaction begun after."""
        batches = []
        saved = []
        snapshots = []
        every = self._cls.snapshot_every
        for aggregate in aggregates:
            pending = aggregate.pending_events
            if not pending:
                continue
            expected = aggregate.version - len(pending)
            extra = meta(aggregate) if meta is not None else {}
            new_events = []
            for event in pending:
                event_type, version, data = self._codec.encode(event)
                new_events.append(NewEvent(event_type, version, data, extra))
            stream = self.stream_id(aggregate.id)
            batches.append((stream, expected, new_events))
            saved.append(aggregate)
            if every and aggregate.version // every > expected // every:
                snapshots.append((stream, aggregate.version, aggregate.snapshot_state()))
        return PreparedSave(event_rows(batches), snapshots, saved)


class PreparedSave(Generic[A]):
    """Aggregates' pending events as rows, ready to be written."""

    def __init__(
        self,
        rows: list[tuple[Any, ...]],
        snapshots: list[tuple[str, int, dict[str, Any]]],
        aggregates: list[A],
    ) -> None:
        self.rows = rows
        self.snapshots = snapshots
        self.aggregates = aggregates

    def write(self, tx: Transaction) -> None:
        """Append the rows (``ConcurrencyConflict`` if another writer took a version), take
        the snapshots, and mark the aggregates' events persisted."""
        tx.insert_event_rows(self.rows)
        for stream, version, state in self.snapshots:
            tx.save_snapshot(stream, version, state)
        for aggregate in self.aggregates:
            aggregate.mark_persisted()


def retry_on_conflict(operation: Callable[[], T], attempts: int = 8) -> T:
    """Run ``operation`` again when another writer won the race, with a short backoff.

    The operation must start its own transaction and reload what it changes, so each try sees
    the other writer's events.
    """
    for attempt in range(attempts):
        try:
            return operation()
        except ConcurrencyConflict:
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.002 * 2**attempt, 0.1))
    raise AssertionError("unreachable")
