"""Metering's aggregates and domain events.

Readings are not aggregates of their own: at ten thousand a second, one stream append per
reading would cost more than verifying it. The unit of write is the *submission* (one request
of one participant): one ``ReadingsRecorded`` event holds every reading it added, every refusal
and every interval it measured, and the read models are written in the same transaction.
The invariants of a metering point's series (one reading per time, registers never go back,
one measurement and at most one mint per interval) are held by the series rules in
:mod:`prosum_metering.domain.series`, by unique keys in the read model, and by a row lock per
metering point taken for the length of the transaction.

Things with a life cycle are aggregates: a sealed batch of readings and its anchoring on
chain (``ReadingBatch``), a conflicting duplicate until ops resolves it (``ReadingConflict``),
and the ledger's answer to a mint command (``MintOutcome``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from prosum_platform.domain import Aggregate, DomainEvent, DomainRuleViolation

# -- submissions ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReadingsRecorded(DomainEvent):
    """A submission was processed: what it added, what it refused, what it measured."""

    event_type: ClassVar[str] = "ReadingsRecorded"
    submission_id: str
    participant_id: str
    format: str
    received_at: datetime
    readings: tuple[dict[str, Any], ...]
    duplicates: int
    refusals: tuple[dict[str, Any], ...]
    intervals: tuple[dict[str, Any], ...]
    gaps_opened: tuple[dict[str, Any], ...]
    gaps_closed: tuple[dict[str, Any], ...]


class Submission(Aggregate):
    """One request of readings. It is recorded once and never changes."""

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.recorded: ReadingsRecorded | None = None

    @classmethod
    def record(cls, event: ReadingsRecorded) -> Submission:
        submission = cls(stream_of_submission(event.submission_id))
        submission._trigger(event)
        return submission

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, ReadingsRecorded):
            self.recorded = event
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)


def stream_of_submission(submission_id: str) -> str:
    return f"metering-submission-{submission_id}"


# -- batches and anchoring --------------------------------------------------------------------


class AnchorStatus(StrEnum):
    UNANCHORED = "unanchored"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class BatchSealed(DomainEvent):
    event_type: ClassVar[str] = "BatchSealed"
    batch_id: str
    root: str
    reading_hashes: tuple[str, ...]
    sealed_at: datetime


@dataclass(frozen=True, kw_only=True)
class AnchorRequested(DomainEvent):
    event_type: ClassVar[str] = "AnchorRequested"
    command_id: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class BatchAnchored(DomainEvent):
    event_type: ClassVar[str] = "BatchAnchored"
    command_id: str
    tx_id: str
    block: int
    backend: str


@dataclass(frozen=True, kw_only=True)
class AnchorFailed(DomainEvent):
    event_type: ClassVar[str] = "AnchorFailed"
    command_id: str
    reason: str
    message: str


def anchor_command_id(batch_id: str, attempt: int) -> str:
    return f"anchor:{batch_id}" if attempt == 1 else f"anchor:{batch_id}:{attempt}"


class ReadingBatch(Aggregate):
    """Readings sealed under one Merkle root, and the root's way onto the chain."""

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.batch_id = ""
        self.root = ""
        self.reading_hashes: tuple[str, ...] = ()
        self.sealed_at: datetime | None = None
        self.status = AnchorStatus.UNANCHORED
        self.attempt = 0
        self.command_id: str | None = None
        self.tx_id: str | None = None
        self.block: int | None = None
        self.backend: str | None = None
        self.failure: str | None = None

    @classmethod
    def seal(
        cls, batch_id: str, root: str, reading_hashes: tuple[str, ...], sealed_at: datetime
    ) -> ReadingBatch:
        if not reading_hashes:
            raise DomainRuleViolation("empty_batch", "a batch needs at least one reading")
        batch = cls(stream_of_batch(batch_id))
        batch._trigger(
            BatchSealed(
                batch_id=batch_id, root=root, reading_hashes=reading_hashes, sealed_at=sealed_at
            )
        )
        return batch

    def request_anchor(self) -> str:
        """Ask the ledger to anchor the root; again only after a failure."""
        if self.status in (AnchorStatus.PENDING, AnchorStatus.CONFIRMED):
            raise DomainRuleViolation(
                "anchor_in_progress", f"batch {self.batch_id} is {self.status.value}"
            )
        attempt = self.attempt + 1
        command_id = anchor_command_id(self.batch_id, attempt)
        self._trigger(AnchorRequested(command_id=command_id, attempt=attempt))
        return command_id

    def anchored(self, command_id: str, tx_id: str, block: int, backend: str) -> bool:
        """Record the ledger's confirmation; False when it is not for the pending command."""
        if self.status is not AnchorStatus.PENDING or command_id != self.command_id:
            return False
        self._trigger(
            BatchAnchored(command_id=command_id, tx_id=tx_id, block=block, backend=backend)
        )
        return True

    def anchor_failed(self, command_id: str, reason: str, message: str) -> bool:
        if self.status is not AnchorStatus.PENDING or command_id != self.command_id:
            return False
        self._trigger(AnchorFailed(command_id=command_id, reason=reason, message=message))
        return True

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, BatchSealed):
            self.batch_id = event.batch_id
            self.root = event.root
            self.reading_hashes = event.reading_hashes
            self.sealed_at = event.sealed_at
        elif isinstance(event, AnchorRequested):
            self.attempt = event.attempt
            self.command_id = event.command_id
            self.status = AnchorStatus.PENDING
            self.failure = None
        elif isinstance(event, BatchAnchored):
            self.status = AnchorStatus.CONFIRMED
            self.tx_id, self.block, self.backend = event.tx_id, event.block, event.backend
        elif isinstance(event, AnchorFailed):
            self.status = AnchorStatus.FAILED
            self.failure = event.reason
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)


def stream_of_batch(batch_id: str) -> str:
    return f"metering-batch-{batch_id}"


# -- conflicting duplicates -------------------------------------------------------------------


class ConflictStatus(StrEnum):
    OPEN = "open"
    KEPT = "kept"
    REPLACED = "replaced"


class Decision(StrEnum):
    KEEP_HELD = "keep_held"
    TAKE_SUBMITTED = "take_submitted"


@dataclass(frozen=True, kw_only=True)
class ConflictRecorded(DomainEvent):
    event_type: ClassVar[str] = "ConflictRecorded"
    conflict_id: str
    metering_point: str
    interval_end: str
    held_hash: str
    submitted: dict[str, Any]
    submitted_hash: str
    submission_id: str
    participant_id: str


@dataclass(frozen=True, kw_only=True)
class ConflictResolved(DomainEvent):
    event_type: ClassVar[str] = "ConflictResolved"
    decision: str
    resolved_by: str
    note: str
    adjustments: tuple[dict[str, Any], ...]


class ReadingConflict(Aggregate):
    """Two signed readings of one metering point and time with different values.

    The one held first stays in force until ops decides; taking the submitted one supersedes
    the held reading (which stays on record: it is in an anchored batch) and re-measures the
    two intervals around it, each change reported as an adjustment.
    """

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.recorded: ConflictRecorded | None = None
        self.status = ConflictStatus.OPEN
        self.resolved_by: str | None = None

    @classmethod
    def open(cls, event: ConflictRecorded) -> ReadingConflict:
        conflict = cls(stream_of_conflict(event.conflict_id))
        conflict._trigger(event)
        return conflict

    def resolve(
        self,
        decision: Decision,
        resolved_by: str,
        note: str,
        adjustments: tuple[dict[str, Any], ...] = (),
    ) -> None:
        if self.status is not ConflictStatus.OPEN:
            raise DomainRuleViolation(
                "conflict_resolved", f"the conflict was already resolved ({self.status.value})"
            )
        self._trigger(
            ConflictResolved(
                decision=decision.value,
                resolved_by=resolved_by,
                note=note,
                adjustments=adjustments,
            )
        )

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, ConflictRecorded):
            self.recorded = event
        elif isinstance(event, ConflictResolved):
            self.resolved_by = event.resolved_by
            self.status = (
                ConflictStatus.KEPT
                if event.decision == Decision.KEEP_HELD.value
                else ConflictStatus.REPLACED
            )
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)


def stream_of_conflict(conflict_id: str) -> str:
    return f"metering-conflict-{conflict_id}"


# -- mints ------------------------------------------------------------------------------------


class MintStatus(StrEnum):
    NONE = "none"
    """No surplus in the interval: nothing to mint."""
    NOT_ELIGIBLE = "not_eligible"
    """Surplus, but the participant's role does not receive minted energy (or it closed)."""
    DEFERRED = "deferred"
    """Surplus of a participant not active (yet): minted when identity activates it."""
    ISSUED = "issued"
    CONFIRMED = "confirmed"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class DeferredMintsReleased(DomainEvent):
    """A participant became active: the mints held back for it were requested."""

    event_type: ClassVar[str] = "DeferredMintsReleased"
    participant_id: str
    command_ids: tuple[str, ...]
    released_at: datetime


@dataclass(frozen=True, kw_only=True)
class MintConfirmed(DomainEvent):
    event_type: ClassVar[str] = "MintConfirmed"
    command_id: str
    tx_id: str
    block: int


@dataclass(frozen=True, kw_only=True)
class MintFailed(DomainEvent):
    event_type: ClassVar[str] = "MintFailed"
    command_id: str
    reason: str
    message: str


class MintOutcome(Aggregate):
    """The ledger's one answer to a mint command.

    The request itself is part of the submission that measured the interval (or of the
    release of deferred mints): a stream per request would double the cost of minting.
    """

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.outcome: MintConfirmed | MintFailed | None = None

    @classmethod
    def record(cls, outcome: MintConfirmed | MintFailed) -> MintOutcome:
        record = cls(stream_of_mint(outcome.command_id))
        record._trigger(outcome)
        return record

    @property
    def status(self) -> MintStatus:
        return (
            MintStatus.CONFIRMED if isinstance(self.outcome, MintConfirmed) else MintStatus.FAILED
        )

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, MintConfirmed | MintFailed):
            self.outcome = event
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)


def stream_of_mint(command_id: str) -> str:
    return f"metering-mint-{command_id}"


def stream_of_release(cause_id: str) -> str:
    return f"metering-release-{cause_id}"


METERING_EVENTS: tuple[type[DomainEvent], ...] = (
    ReadingsRecorded,
    BatchSealed,
    AnchorRequested,
    BatchAnchored,
    AnchorFailed,
    ConflictRecorded,
    ConflictResolved,
    DeferredMintsReleased,
    MintConfirmed,
    MintFailed,
)
