"""Building blocks for event-sourced aggregates. Standard library only: domain code imports this.

An aggregate's command methods check the rules and then ``_trigger`` events; its state changes
only in ``apply``. A repository persists ``pending_events`` and rebuilds the aggregate by
replaying them (from a snapshot where one exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Base of a service's internal events: frozen dataclasses named in the past tense.

    Subclasses set ``event_type`` (stable name in the store) and ``schema_version``; when the
    shape changes the version goes up and an upcaster turns old payloads into the new shape.
    """

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class ConcurrencyConflict(Exception):
    """Another writer appended to the same stream first; reload and try again."""

    def __init__(self, stream_id: str, expected_version: int, actual_version: int | None) -> None:
        super().__init__(
            f"stream {stream_id!r}: expected version {expected_version}, found {actual_version}"
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class DomainRuleViolation(Exception):
    """A command broke a business rule; ``reason`` is a stable code for clients."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Aggregate:
    """An event-sourced aggregate root with optimistic versioning."""

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self._pending: list[DomainEvent] = []

    def apply(self, event: DomainEvent) -> None:  # pragma: no cover - subclasses override
        raise TypeError(f"{type(self).__name__} cannot apply {type(event).__name__}")

    def _trigger(self, event: DomainEvent) -> None:
        self.apply(event)
        self.version += 1
        self._pending.append(event)

    def replay(self, event: DomainEvent, version: int) -> None:
        self.apply(event)
        self.version = version

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        return tuple(self._pending)

    def mark_persisted(self) -> None:
        self._pending.clear()

    # Snapshots: aggregates that grow long streams override these two.
    snapshot_every: ClassVar[int | None] = None

    def snapshot_state(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not take snapshots")

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: dict[str, Any]) -> Self:
        raise NotImplementedError(f"{cls.__name__} does not take snapshots")
