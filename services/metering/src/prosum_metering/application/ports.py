"""What metering's application code needs from the outside, as Protocols.

``MeteringStore`` is one store transaction (a unit of work): the read models, the event store
and the outbox together, so that a command's effects commit or roll back as one.
``MeteringQueries`` reads without taking the write lock. ``SignatureVerifier`` checks Ed25519
signatures (in a pool of processes where there are cores to spare).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prosum_metering.domain.model import (
    DeferredMintsReleased,
    MintOutcome,
    MintStatus,
    ReadingBatch,
    ReadingConflict,
    Submission,
)
from prosum_metering.domain.readings import SignedReading
from prosum_metering.domain.series import Gap, Interval, Point


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    participant_id: str
    public_key: bytes
    metering_point: str
    rating_w: int
    active: bool


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: str
    role: str | None
    status: str | None
    """As identity last said: pending, active, suspended or closed; None if never heard of."""


@dataclass(frozen=True, slots=True)
class Series:
    """A metering point: its owner, its rating and its latest reading (the lock row)."""

    metering_point: str
    participant_id: str
    rating_w: int
    head: Point | None
    device: Device | None = None
    """The device that measures it now, read with the lock (so not revoked meanwhile)."""


@dataclass(frozen=True, slots=True)
class NewReading:
    reading: SignedReading
    reading_hash: str
    participant_id: str
    submission_id: str


@dataclass(frozen=True, slots=True)
class MeasuredInterval:
    interval: Interval
    participant_id: str
    mint_status: MintStatus
    mint_command_id: str | None
    mint_wh: int
    submission_id: str


@dataclass(frozen=True, slots=True)
class StoredReading:
    reading: SignedReading
    reading_hash: str
    participant_id: str
    batch_id: str | None
    superseded: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    metering_point: str
    interval_start: int
    participant_id: str
    import_wh: int
    export_wh: int
    surplus_wh: int
    consumption_wh: int
    start_hash: str
    end_hash: str
    evidence_hash: str
    mint_status: str
    mint_command_id: str | None
    mint_wh: int
    mint_evidence_hash: str | None
    mint_tx_id: str | None
    mint_block: int | None
    mint_reason: str | None
    adjustment_wh: int

    def interval(self) -> Interval:
        return Interval(
            self.metering_point,
            self.interval_start,
            self.import_wh,
            self.export_wh,
            self.start_hash,
            self.end_hash,
        )


@dataclass(frozen=True, slots=True)
class Evidence:
    """The readings behind an evidence hash (current or from before a correction)."""

    evidence_hash: str
    metering_point: str
    interval_start: int
    participant_id: str
    start_hash: str
    end_hash: str
    import_wh: int
    export_wh: int
    surplus_wh: int
    current: bool


@dataclass(frozen=True, slots=True)
class BatchView:
    batch_id: str
    root: str
    leaves: tuple[str, ...]
    sealed_at: datetime
    anchor_status: str
    anchor_command_id: str | None
    anchor_tx_id: str | None
    anchor_block: int | None
    anchor_backend: str | None
    anchor_reason: str | None


@dataclass(frozen=True, slots=True)
class GapRecord:
    metering_point: str
    gap_start: int
    gap_end: int
    participant_id: str
    import_wh: int
    export_wh: int
    status: str


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    conflict_id: str
    metering_point: str
    interval_end: int
    participant_id: str
    held_hash: str
    submitted_hash: str
    submitted: dict[str, Any]
    status: str
    detected_at: datetime


class MeteringStore(Protocol):
    """One transaction of metering's store."""

    # -- projections of identity and the order book ---------------------------------------
    def upsert_participant(self, participant_id: str, role: str, metering_point: str) -> None: ...

    def upsert_device(self, device: Device, kind: str) -> None:
        """Record a device and make its metering point a series owned by its participant."""
        ...

    def revoke_device(self, device_id: str) -> None: ...

    def add_trade(self, trade_id: str, seller: str, buyer: str, start: int, end: int) -> None: ...

    # -- ingestion --------------------------------------------------------------------------
    def devices(self, device_ids: Collection[str]) -> dict[str, Device]: ...

    def participants(self, participant_ids: Collection[str]) -> dict[str, Participant]: ...

    def lock_series(self, metering_points: Collection[str]) -> dict[str, Series]:
        """The series rows, locked until the transaction ends (concurrent writers queue)."""
        ...

    def windows(self, spans: Mapping[str, tuple[int, int]]) -> dict[str, list[Point]]:
        """For each metering point and (first end, last end): its current readings from the
        first to the last, plus the one just before and the one just after, in time order."""
        ...

    def record_submission(
        self,
        submission: Submission,
        readings: Sequence[NewReading],
        intervals: Sequence[MeasuredInterval],
        heads: Mapping[str, Point],
        gaps_opened: Sequence[tuple[Gap, str]],
        gaps_closed: Sequence[Gap],
        conflicts: Sequence[ReadingConflict],
    ) -> None:
        """Write a processed submission: its event, readings, intervals, gaps, conflicts.

        Raises ``ConcurrencyConflict`` when another transaction stored the same reading or
        interval first (the caller retries, and then sees it as a duplicate).
        """
        ...

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        """Put an integration event (or a ledger command) in this transaction's outbox."""
        ...

    def publish_many(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Put many (type, subject, data) in the outbox at once, in order."""
        ...

    # -- mints ------------------------------------------------------------------------------
    def deferred_mints(self, participant_id: str) -> list[IntervalRecord]: ...

    def release_mints(
        self,
        cause_id: str,
        event: DeferredMintsReleased,
        decisions: Mapping[tuple[str, int], tuple[MintStatus, str | None]],
    ) -> None:
        """Record the release and set each interval's mint status and command id."""
        ...

    def interval_by_mint(self, command_id: str) -> IntervalRecord | None: ...

    def mint_outcome(self, command_id: str) -> MintOutcome | None: ...

    def record_mint_outcome(self, outcome: MintOutcome) -> None: ...

    # -- batches ----------------------------------------------------------------------------
    def claim_unsealed(self, batch_id: str, limit: int) -> list[str]:
        """Assign up to ``limit`` unsealed readings to ``batch_id``; their hashes in order."""
        ...

    def save_batch(self, batch: ReadingBatch) -> None: ...

    def batch(self, batch_id: str) -> ReadingBatch | None: ...

    # -- conflicts and corrections ------------------------------------------------------------
    def conflict(self, conflict_id: str) -> ReadingConflict | None: ...

    def reading(self, reading_hash: str) -> StoredReading | None: ...

    def save_conflict(self, conflict: ReadingConflict) -> None: ...

    def neighbours(self, metering_point: str, end: int) -> tuple[Point | None, Point | None]:
        """The current readings just before and just after ``end``."""
        ...

    def interval(self, metering_point: str, start: int) -> IntervalRecord | None: ...

    def replace_reading(self, held_hash: str, replacement: NewReading, conflict_id: str) -> None:
        """Supersede the held reading (kept on record) with the replacement."""
        ...

    def adjust_interval(
        self, record: IntervalRecord, corrected: Interval, conflict_id: str, at: datetime
    ) -> None: ...


class MeteringQueries(Protocol):
    """Read-only questions, answered without the write lock."""

    def devices(self, device_ids: Collection[str]) -> dict[str, Device]: ...

    def known_hashes(self, reading_hashes: Collection[str]) -> set[str]:
        """Which of these readings are held already (current or superseded)."""
        ...

    def reading(self, reading_hash: str) -> StoredReading | None: ...

    def batch_view(self, batch_id: str) -> BatchView | None: ...

    def evidence(self, evidence_hash: str) -> Evidence | None: ...

    def series_owner(self, metering_point: str) -> str | None: ...

    def intervals(
        self, metering_point: str, first_start: int, last_start: int
    ) -> list[IntervalRecord]: ...

    def gaps(self, metering_point: str) -> list[GapRecord]: ...

    def traded_windows(
        self, participant: str, other: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        """Delivery windows of trades between the two that overlap [start, end)."""
        ...

    def conflicts(self, status: str | None) -> list[ConflictRecord]: ...


class PendingVerification(Protocol):
    def result(self, timeout: float | None = None) -> list[bool]:
        """The outcomes, in the order given; waits for them if they are still being checked,
        and raises ``TimeoutError`` if they are not in within ``timeout`` seconds."""
        ...


class SignatureVerifier(Protocol):
    def verify_many(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        """For each (public key, message, signature): does the signature verify?"""
        ...

    def begin(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> PendingVerification:
        """Start checking ``items`` and return at once where the verifier works elsewhere
        (worker processes), so the caller can go on meanwhile; ``result()`` gives the
        outcomes."""
        ...


UnitOfWork = Callable[[], AbstractContextManager[MeteringStore]]
ReadView = Callable[[], AbstractContextManager[MeteringQueries]]
Clock = Callable[[], float]
