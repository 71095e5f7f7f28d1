"""How a command commits: its aggregates saved with the integration events they imply, in one
transaction, tried again when another writer got to a stream first."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from prosum_identity.application.events import integration_events
from prosum_identity.application.ports import IdentityStore
from prosum_identity.domain.base import IdentityAggregate
from prosum_platform.domain import ConcurrencyConflict

T = TypeVar("T")


def commit(store: IdentityStore, *aggregates: IdentityAggregate) -> None:
    for aggregate in aggregates:
        events = aggregate.pending_events
        if not events:
            continue
        store.save(aggregate)
        for event_type, subject, data in integration_events(aggregate, events):
            store.publish(event_type, subject, data)


def retrying(operation: Callable[[], T], attempts: int = 8) -> T:
    """Run ``operation`` (which opens its own transaction and reloads what it changes) again
    when a concurrent writer won the race for a stream."""
    for attempt in range(attempts):
        try:
            return operation()
        except ConcurrencyConflict:
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.002 * 2**attempt, 0.1))
    raise AssertionError("unreachable")
