"""Fakes of identity's ports, written as classes: an in-memory store that passes the same
contract tests as the SQL one, and a clock tests move by hand."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from prosum_identity.application.ports import IdentityStore
from prosum_identity.domain.base import IdentityAggregate
from prosum_platform.domain import ConcurrencyConflict, DomainEvent

A = TypeVar("A", bound=IdentityAggregate)

START = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def timestamp(self) -> float:
        return self.now.timestamp()


class FakeStore:
    """Streams, outbox and key vault in memory, committed only when a unit of work ends without
    an exception. Like the real store, a unit that appended to a stream another unit changed in
    the meantime fails with ``ConcurrencyConflict`` and leaves nothing behind."""

    def __init__(self) -> None:
        self.streams: dict[str, list[DomainEvent]] = {}
        self.published: list[tuple[str, str, dict[str, Any]]] = []
        self.vault: dict[str, bytes] = {}

    @contextmanager
    def _open(self) -> Iterator[IdentityStore]:
        view = FakeStoreView(self)
        yield view
        for stream_id in view.touched:
            if len(self.streams.get(stream_id, [])) != view.start_lengths.get(stream_id, 0):
                raise ConcurrencyConflict(
                    stream_id, view.start_lengths.get(stream_id, 0), len(self.streams[stream_id])
                )
        self.streams, self.published, self.vault = view.streams, view.published, view.vault

    def unit(self) -> AbstractContextManager[IdentityStore]:
        return self._open()

    def events(self, stream_id: str) -> list[DomainEvent]:
        return list(self.streams.get(stream_id, []))

    def published_types(self) -> list[str]:
        return [event_type for event_type, _subject, _data in self.published]

    def size(self) -> tuple[int, int, int]:
        """How much is stored: a refused command must leave all three unchanged."""
        return (sum(map(len, self.streams.values())), len(self.published), len(self.vault))


class FakeStoreView:
    """One unit of work: reads see what was committed when it opened plus its own writes."""

    def __init__(self, committed: FakeStore) -> None:
        self.streams = copy.deepcopy(committed.streams)
        self.published = list(committed.published)
        self.vault = dict(committed.vault)
        self.start_lengths = {sid: len(events) for sid, events in committed.streams.items()}
        self.touched: set[str] = set()

    def get(self, cls: type[A], key: str) -> A | None:
        stream_id = cls.stream(key)
        stored = self.streams.get(stream_id)
        if not stored:
            return None
        aggregate = cls(stream_id)
        for version, event in enumerate(stored, start=1):
            aggregate.replay(event, version)
        return aggregate

    def save(self, aggregate: IdentityAggregate) -> None:
        pending = aggregate.pending_events
        if not pending:
            return
        expected = aggregate.version - len(pending)
        stream = self.streams.setdefault(aggregate.id, [])
        if len(stream) != expected:
            raise ConcurrencyConflict(aggregate.id, expected, len(stream))
        stream.extend(pending)
        self.touched.add(aggregate.id)
        aggregate.mark_persisted()

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        self.published.append((event_type, subject, copy.deepcopy(data)))

    def put_private_key(self, kid: str, private_key: bytes) -> None:
        self.vault[kid] = private_key

    def private_key(self, kid: str) -> bytes | None:
        return self.vault.get(kid)

    def discard_private_key(self, kid: str) -> None:
        self.vault.pop(kid, None)
