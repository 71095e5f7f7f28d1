"""Ingesting signed readings: check, verify, record, measure, mint.

One submission (a request of one participant, one reading or thousands) goes through:

1. shape and time: fields, types, exact integer Wh, the 15-minute grid, not in the future;
2. device: known, not revoked, measuring that metering point, and covered by the submitter's
   threshold (the reading's device belongs to the threshold's participant and, where the
   threshold names a metering point, measures it);
3. signature: Ed25519 with the device key from identity's events, checked by the verifier's
   worker processes while this process goes on with step 4; the outcomes are taken before the
   commit, and a reading that does not verify rolls the transaction back to be run without it;
4. series, in one transaction with a lock on each metering point: duplicates, conflicts,
   registers never going back and plausible for the rating, also for late readings; then the
   intervals this completes, the gaps it opens or closes, and the mint of each interval's
   surplus (exactly once: the interval row is unique).

Every refused reading is reported with its position (JSON index or CSV line) and reason, and
the good readings of the same submission are kept.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prosum_metering.application.ports import (
    Clock,
    Device,
    MeasuredInterval,
    MeteringStore,
    NewReading,
    PendingVerification,
    ReadView,
    Series,
    SignatureVerifier,
    UnitOfWork,
)
from prosum_metering.domain.minting import mint_command_id, mint_decision
from prosum_metering.domain.model import (
    ConflictRecorded,
    MintStatus,
    ReadingConflict,
    ReadingsRecorded,
    Submission,
)
from prosum_metering.domain.readings import (
    Reason,
    Rejection,
    SignedReading,
    check_time,
    format_utc,
    leaf_hash,
    parse_reading,
    reading_as_dict,
)
from prosum_metering.domain.series import Candidate, Gap, Interval, Point, evaluate
from prosum_platform.domain import ConcurrencyConflict

log = logging.getLogger(__name__)

SOURCE = "metering"
EVENT_ITEMS = 500
"""Most list items in one integration event, which keeps each well under a Kafka message's
1 MB default limit."""
WRITE_ATTEMPTS = 5
SIGNATURE_WAIT_IN_TRANSACTION_S = 0.5
"""How long a transaction ready to commit waits for its signature checks while holding the
write lock; longer, it rolls back, waits outside and runs again."""
DEVICE_CACHE_S = 5.0
DEVICE_CACHE_SIZE = 100_000
HEADS_CACHE_SIZE = 500_000

READINGS_RECEIVED = "metering.readings_received"
READINGS_REJECTED = "metering.readings_rejected"
INTERVALS_MEASURED = "metering.intervals_measured"
GAP_DETECTED = "metering.gap_detected"
GAP_CLOSED = "metering.gap_closed"
CONFLICT_DETECTED = "metering.reading_conflict_detected"
MINT_ENERGY = "ledger.mint_energy"


@dataclass(frozen=True, slots=True)
class Submitter:
    """Who submits: the participant a threshold was issued to, and what it covers."""

    participant_id: str
    metering_point: str | None
    credential_id: str


@dataclass(frozen=True, slots=True)
class Item:
    """One submitted reading as received. ``position`` is its index in a JSON batch or its
    line in a CSV file; ``problem`` is set when the transport already found it unreadable."""

    position: int
    raw: object
    from_text: bool = False
    problem: Rejection | None = None


@dataclass(frozen=True, slots=True)
class ItemResult:
    position: int
    status: str
    """accepted, duplicate or rejected."""
    reading_hash: str | None = None
    reason: str | None = None
    detail: str | None = None
    conflict_id: str | None = None

    def as_dict(self, position_name: str) -> dict[str, Any]:
        out: dict[str, Any] = {position_name: self.position, "status": self.status}
        if self.reading_hash is not None:
            out["reading_hash"] = self.reading_hash
        if self.reason is not None:
            out["reason"] = self.reason
            out["detail"] = self.detail
        if self.conflict_id is not None:
            out["conflict_id"] = self.conflict_id
        return out


@dataclass
class SubmissionResult:
    submission_id: str
    results: list[ItemResult]
    intervals_measured: int = 0
    mints_requested: int = 0

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def summary(self, position_name: str) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "accepted": self.count("accepted"),
            "duplicates": self.count("duplicate"),
            "rejected": self.count("rejected"),
            "intervals_measured": self.intervals_measured,
            "mints_requested": self.mints_requested,
            "results": [r.as_dict(position_name) for r in self.results],
        }


@dataclass
class _Verified:
    candidate: Candidate
    device: Device
    held: bool = False
    """The very same signed reading is stored already (so it was not verified again)."""
    check: int = -1
    """Its place among the signature checks started, when it is not held."""


@dataclass
class _Draft:
    """What one submission's transaction writes and publishes."""

    submission_id: str
    submitter: Submitter
    received_at: datetime
    fmt: str
    results: dict[int, ItemResult]
    accepted: list[NewReading] = field(default_factory=list)
    measured: list[MeasuredInterval] = field(default_factory=list)
    heads: dict[str, Point] = field(default_factory=dict)
    opened: list[tuple[Gap, str]] = field(default_factory=list)
    closed: list[tuple[Gap, str]] = field(default_factory=list)
    conflicts: list[ReadingConflict] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    interval_views: list[dict[str, Any]] = field(default_factory=list)

    def statuses(self) -> list[str]:
        return [r.status for r in self.results.values()]

    def copy(self) -> _Draft:
        """A new draft with the same header and the results decided so far."""
        return _Draft(
            self.submission_id, self.submitter, self.received_at, self.fmt, dict(self.results)
        )


class _Unverified(Exception):
    """The signature checks were not done when the transaction was ready to commit."""


class _Forged(Exception):
    """Readings whose signatures turned out not to verify, found before the commit."""

    def __init__(self, items: list[_Verified]) -> None:
        super().__init__(f"{len(items)} signature(s) do not verify")
        self.items = items


def chunks(items: Sequence[Any], size: int = EVENT_ITEMS) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [items]


def mint_command(measured: MeasuredInterval) -> dict[str, Any]:
    interval = measured.interval
    assert measured.mint_command_id is not None
    return {
        "command_id": measured.mint_command_id,
        "participant_id": measured.participant_id,
        "amount_wh": measured.mint_wh,
        "evidence_hash": interval.evidence_hash,
        "metering_point": interval.metering_point,
        "interval_start": format_utc(interval.start),
    }


def interval_data(measured: MeasuredInterval) -> dict[str, Any]:
    interval = measured.interval
    out: dict[str, Any] = {
        "metering_point": interval.metering_point,
        "interval_start": format_utc(interval.start),
        "interval_end": format_utc(interval.end),
        "import_wh": interval.import_wh,
        "export_wh": interval.export_wh,
        "surplus_wh": interval.surplus_wh,
        "consumption_wh": interval.consumption_wh,
        "evidence_hash": interval.evidence_hash,
        "mint_status": measured.mint_status.value,
    }
    if measured.mint_command_id is not None:
        out["mint_command_id"] = measured.mint_command_id
    return out


def gap_data(gap: Gap, participant_id: str) -> dict[str, Any]:
    return {
        "participant_id": participant_id,
        "metering_point": gap.metering_point,
        "gap_start": format_utc(gap.start),
        "gap_end": format_utc(gap.end),
        "unmeasured_intervals": gap.unmeasured_intervals,
        "import_wh": gap.import_wh,
        "export_wh": gap.export_wh,
    }


class IngestService:
    def __init__(
        self,
        unit_of_work: UnitOfWork,
        read_view: ReadView,
        verifier: SignatureVerifier,
        clock: Clock,
        *,
        clock_skew_s: int = 30,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._uow = unit_of_work
        self._read = read_view
        self._verifier = verifier
        self._clock = clock
        self._skew = clock_skew_s
        self._new_id = new_id
        self._device_cache: dict[str, tuple[float, Device]] = {}
        self._heads: dict[str, int] = {}
        """Latest interval end this process stored per metering point (never ahead of the
        series: heads only move forward)."""

    def submit(self, submitter: Submitter, items: Iterable[Item], fmt: str) -> SubmissionResult:
        now = self._clock()
        results: dict[int, ItemResult] = {}
        described: dict[int, SignedReading] = {}  # what a refusal says the reading was
        parsed: list[tuple[int, SignedReading]] = []
        for item in items:
            try:
                if item.problem is not None:
                    raise item.problem
                reading = parse_reading(item.raw, from_text=item.from_text)
                described[item.position] = reading
                check_time(reading, now, self._skew)
            except Rejection as refused:
                results[item.position] = _rejected(item.position, refused.reason, refused.detail)
                continue
            parsed.append((item.position, reading))

        verified, signatures = self._verify(submitter, parsed, results)
        submission_id = self._new_id()
        for attempt in range(WRITE_ATTEMPTS):
            # Each try starts from what was decided before the transaction.
            base = _Draft(
                submission_id=submission_id,
                submitter=submitter,
                received_at=datetime.fromtimestamp(now, UTC),
                fmt=fmt,
                results=dict(results),
            )
            try:
                with self._uow() as store:
                    final = self._write(store, base, verified, signatures, described)
                if len(self._heads) > HEADS_CACHE_SIZE:
                    self._heads.clear()
                for metering_point, head in final.heads.items():
                    self._heads[metering_point] = head.end
                break
            except _Unverified:
                assert signatures is not None
                signatures.result()  # outside the transaction; then write again
                continue
            except _Forged as forged:
                for bad in forged.items:
                    position = bad.candidate.position
                    results[position] = _rejected(
                        position,
                        Reason.SIGNATURE_INVALID,
                        "the signature does not verify with the key of device "
                        f"{bad.candidate.reading.device_id}",
                    )
                dropped = {id(bad) for bad in forged.items}
                verified = [v for v in verified if id(v) not in dropped]
            except ConcurrencyConflict:
                # Another submission stored one of these readings first: run again; it is
                # then a duplicate (or a conflict) like any repeat.
                log.info("metering: submission raced another writer (try %d)", attempt + 1)
        else:
            raise ConcurrencyConflict(f"submission-{submission_id}", 0, None)
        return SubmissionResult(
            final.submission_id,
            [final.results[p] for p in sorted(final.results)],
            intervals_measured=len(final.measured),
            mints_requested=sum(1 for m in final.measured if m.mint_status is MintStatus.ISSUED),
        )

    # -- device and signature ---------------------------------------------------------------
    def _verify(
        self,
        submitter: Submitter,
        parsed: list[tuple[int, SignedReading]],
        results: dict[int, ItemResult],
    ) -> tuple[list[_Verified], PendingVerification | None]:
        """The readings whose device may submit them, and their signature checks started.

        The checks run in the verifier's workers while the transaction locks the series, works
        out what the readings do and writes it; the transaction takes the outcomes before it
        commits.
        """
        if not parsed:
            return [], None
        devices = self._devices({r.device_id for _, r in parsed})
        pending: list[tuple[int, SignedReading, Device, bytes, str]] = []
        for position, reading in parsed:
            device = devices.get(reading.device_id)
            problem = device_problem(reading, device, submitter)
            if problem is not None:
                results[position] = _rejected(position, *problem)
                continue
            assert device is not None
            message = reading.message()
            reading_hash = leaf_hash(message, reading.signature).hex()
            pending.append((position, reading, device, message, reading_hash))
        # A reading already held has this very hash: the same signed bytes, verified when
        # they were first stored. A resent day costs a lookup, not a signature check each. A
        # reading after the latest one this process stored for its point cannot be held, so
        # live readings need no lookup (a stale entry only costs a signature check).
        heads = self._heads
        maybe_held = set()
        for _, reading, _, _, reading_hash in pending:
            head = heads.get(reading.metering_point)
            if head is None or reading.interval_end <= head:
                maybe_held.add(reading_hash)
        held: set[str] = set()
        if maybe_held:
            with self._read() as queries:
                held = queries.known_hashes(maybe_held)
        checks: list[tuple[bytes, bytes, bytes]] = []
        verified: list[_Verified] = []
        for position, reading, device, message, reading_hash in pending:
            candidate = Candidate(position, reading, reading_hash)
            if reading_hash in held:
                verified.append(_Verified(candidate, device, held=True))
            else:
                verified.append(_Verified(candidate, device, check=len(checks)))
                checks.append((device.public_key, message, reading.signature))
        return verified, (self._verifier.begin(checks) if checks else None)

    def _devices(self, device_ids: set[str]) -> dict[str, Device]:
        """Devices to verify against, cached for a few seconds: the transaction checks them
        again (revoked since? key changed?), so a stale entry costs a retry, never a wrong
        acceptance."""
        now = time.monotonic()
        found: dict[str, Device] = {}
        missing: list[str] = []
        for device_id in device_ids:
            cached = self._device_cache.get(device_id)
            if cached is not None and cached[0] > now:
                found[device_id] = cached[1]
            else:
                missing.append(device_id)
        if missing:
            with self._read() as queries:
                fetched = queries.devices(missing)
            if len(self._device_cache) > DEVICE_CACHE_SIZE:
                self._device_cache.clear()
            for device_id, device in fetched.items():
                self._device_cache[device_id] = (now + DEVICE_CACHE_S, device)
            found.update(fetched)
        return found

    # -- the transaction ----------------------------------------------------------------------
    def _write(
        self,
        store: MeteringStore,
        base: _Draft,
        verified: list[_Verified],
        signatures: PendingVerification | None,
        described: dict[int, SignedReading],
    ) -> _Draft:
        # Identity may have revoked a device, or given it a new key, since the check outside
        # the transaction: this check is the one that counts. Locking the series reads the
        # device measuring each point; a reading from another device is looked up.
        series = store.lock_series({v.candidate.reading.metering_point for v in verified})
        current = {s.device.device_id: s.device for s in series.values() if s.device is not None}
        others = {v.device.device_id for v in verified} - current.keys()
        if others:
            current.update(store.devices(others))
        by_point: dict[str, list[Candidate]] = defaultdict(list)
        rekeyed: list[tuple[Candidate, Device]] = []
        awaited: list[_Verified] = []
        for item in verified:
            candidate = item.candidate
            device = current.get(item.device.device_id)
            problem = device_problem(candidate.reading, device, base.submitter)
            if problem is not None:
                base.results[candidate.position] = _rejected(candidate.position, *problem)
            elif (
                device is not None and device.public_key != item.device.public_key and not item.held
            ):
                rekeyed.append((candidate, device))
            else:
                by_point[candidate.reading.metering_point].append(candidate)
                if not item.held:
                    awaited.append(item)
        if rekeyed:
            self._device_cache.clear()
            valid = self._verifier.verify_many(
                [(d.public_key, c.reading.message(), c.reading.signature) for c, d in rekeyed]
            )
            for (candidate, _device), ok in zip(rekeyed, valid, strict=True):
                if ok:
                    by_point[candidate.reading.metering_point].append(candidate)
                else:
                    base.results[candidate.position] = _rejected(
                        candidate.position,
                        Reason.SIGNATURE_INVALID,
                        "the signature does not verify with the device's current key",
                    )

        draft = base.copy()
        intervals = self._evaluate(store, draft, by_point, series)
        draft.measured = self._decide_mints(store, intervals, draft)
        draft.interval_views = [interval_data(m) for m in draft.measured]
        refusals = [
            _refusal(r, described.get(r.position))
            for r in sorted(
                (r for r in draft.results.values() if r.status == "rejected"),
                key=lambda r: r.position,
            )
        ]
        submission = Submission.record(
            ReadingsRecorded(
                submission_id=draft.submission_id,
                participant_id=draft.submitter.participant_id,
                format=draft.fmt,
                received_at=draft.received_at,
                readings=tuple(
                    {**reading_as_dict(r.reading), "reading_hash": r.reading_hash}
                    for r in draft.accepted
                ),
                duplicates=draft.statuses().count("duplicate"),
                refusals=tuple(refusals),
                intervals=tuple(draft.interval_views),
                gaps_opened=tuple(gap_data(g, p) for g, p in draft.opened),
                gaps_closed=tuple(gap_data(g, p) for g, p in draft.closed),
            )
        )
        store.record_submission(
            submission,
            draft.accepted,
            draft.measured,
            draft.heads,
            draft.opened,
            [g for g, _ in draft.closed],
            draft.conflicts,
        )
        self._publish(store, draft, refusals)
        # Everything above was worked out and written as if every signature verifies (nearly
        # always so) while the workers checked them; only now, before the commit, are the
        # outcomes needed. A reading that does not verify rolls the transaction back, and it
        # runs again without it.
        # The workers may still be busy with earlier submissions: rather than hold the write
        # lock while they finish, give it back and wait outside the transaction.
        try:
            outcomes = (
                signatures.result(timeout=SIGNATURE_WAIT_IN_TRANSACTION_S)
                if signatures is not None and awaited
                else []
            )
        except TimeoutError:
            raise _Unverified from None
        forged = [item for item in awaited if not outcomes[item.check]]
        if forged:
            raise _Forged(forged)
        return draft

    def _evaluate(
        self,
        store: MeteringStore,
        draft: _Draft,
        by_point: dict[str, list[Candidate]],
        series: dict[str, Series],
    ) -> list[Interval]:
        """Each metering point's candidates against its series: what is accepted, a duplicate
        or refused, the intervals completed and the gaps opened or closed (nothing written)."""
        intervals: list[Interval] = []
        # Readings after a series' latest one (the common case) need only that one; late
        # readings need their neighbours in the series, read for all such points at once.
        spans: dict[str, tuple[int, int]] = {}
        for metering_point, candidates in by_point.items():
            held = series.get(metering_point)
            if held is None or held.head is None or not candidates:
                continue
            first = min(c.reading.interval_end for c in candidates)
            if first <= held.head.end:
                spans[metering_point] = (first, max(c.reading.interval_end for c in candidates))
        windows = store.windows(spans) if spans else {}
        for metering_point in sorted(by_point):
            candidates = by_point[metering_point]
            if not candidates:
                continue
            held = series.get(metering_point)
            if held is None:
                for c in candidates:
                    draft.results[c.position] = _rejected(
                        c.position, Reason.UNKNOWN_DEVICE, f"no device measures {metering_point}"
                    )
                continue
            owner = draft.owners[metering_point] = held.participant_id
            if held.head is None:
                known: list[Point] = []
            elif metering_point in windows:
                known = windows[metering_point]
            else:
                known = [held.head]
            outcome = evaluate(metering_point, held.rating_w, known, candidates)
            for c in outcome.accepted:
                draft.results[c.position] = ItemResult(c.position, "accepted", c.reading_hash)
                draft.accepted.append(
                    NewReading(c.reading, c.reading_hash, owner, draft.submission_id)
                )
            for duplicate in outcome.duplicates:
                draft.results[duplicate.position] = ItemResult(
                    duplicate.position, "duplicate", duplicate.reading_hash
                )
            by_position = {c.position: c for c in candidates}
            for refused in outcome.refused:
                conflict_id = None
                if refused.reason == Reason.CONFLICTING_DUPLICATE:
                    assert refused.existing_hash is not None
                    conflict = self._conflict(
                        store, by_position[refused.position], refused.existing_hash, owner, draft
                    )
                    assert conflict.recorded is not None
                    conflict_id = conflict.recorded.conflict_id
                    if conflict.pending_events:
                        draft.conflicts.append(conflict)
                draft.results[refused.position] = ItemResult(
                    refused.position,
                    "rejected",
                    reason=refused.reason,
                    detail=refused.detail,
                    conflict_id=conflict_id,
                )
            intervals.extend(outcome.intervals)
            if outcome.head is not None and (held.head is None or outcome.head.end > held.head.end):
                draft.heads[metering_point] = outcome.head
            draft.opened.extend((gap, owner) for gap in outcome.gaps_opened)
            draft.closed.extend((gap, owner) for gap in outcome.gaps_closed)
        return intervals

    def _conflict(
        self,
        store: MeteringStore,
        candidate: Candidate,
        held_hash: str,
        participant_id: str,
        draft: _Draft,
    ) -> ReadingConflict:
        # A conflict is named by the submitted reading: sending it again finds the same one.
        conflict_id = candidate.reading_hash
        existing = store.conflict(conflict_id)
        if existing is not None:
            return existing
        for pending in draft.conflicts:
            if pending.recorded is not None and pending.recorded.conflict_id == conflict_id:
                return pending
        reading = candidate.reading
        return ReadingConflict.open(
            ConflictRecorded(
                conflict_id=conflict_id,
                metering_point=reading.metering_point,
                interval_end=format_utc(reading.interval_end),
                held_hash=held_hash,
                submitted=reading_as_dict(reading),
                submitted_hash=candidate.reading_hash,
                submission_id=draft.submission_id,
                participant_id=participant_id,
            )
        )

    def _decide_mints(
        self, store: MeteringStore, intervals: list[Interval], draft: _Draft
    ) -> list[MeasuredInterval]:
        if not intervals:
            return []
        participants = store.participants(set(draft.owners.values()))
        measured: list[MeasuredInterval] = []
        for interval in intervals:
            owner = draft.owners[interval.metering_point]
            participant = participants.get(owner)
            status = mint_decision(
                interval.surplus_wh,
                participant.role if participant else None,
                participant.status if participant else None,
            )
            command_id = (
                mint_command_id(interval.metering_point, interval.start)
                if status in (MintStatus.ISSUED, MintStatus.DEFERRED)
                else None
            )
            mint_wh = interval.surplus_wh if command_id is not None else 0
            measured.append(
                MeasuredInterval(interval, owner, status, command_id, mint_wh, draft.submission_id)
            )
        return measured

    def _publish(self, store: MeteringStore, draft: _Draft, refusals: list[dict[str, Any]]) -> None:
        participant = draft.submitter.participant_id
        statuses = draft.statuses()
        out: list[tuple[str, str, dict[str, Any]]] = [
            (
                READINGS_RECEIVED,
                participant,
                {
                    "submission_id": draft.submission_id,
                    "participant_id": participant,
                    "format": draft.fmt,
                    "accepted": statuses.count("accepted"),
                    "duplicates": statuses.count("duplicate"),
                    "rejected": statuses.count("rejected"),
                    "received_at": format_utc(int(draft.received_at.timestamp())),
                },
            )
        ]
        header = {"submission_id": draft.submission_id, "participant_id": participant}
        parts = chunks(refusals)
        for number, part in enumerate(parts, 1):
            if part:
                data = {**header, "format": draft.fmt, "part": number, "parts": len(parts)}
                out.append((READINGS_REJECTED, participant, {**data, "rejections": list(part)}))
        parts = chunks(draft.interval_views)
        for number, part in enumerate(parts, 1):
            if part:
                data = {**header, "part": number, "parts": len(parts), "intervals": list(part)}
                out.append((INTERVALS_MEASURED, participant, data))
        # A late reading closes the gap it lands in, then reports what is left of it.
        out.extend((GAP_CLOSED, owner, gap_data(gap, owner)) for gap, owner in draft.closed)
        out.extend((GAP_DETECTED, owner, gap_data(gap, owner)) for gap, owner in draft.opened)
        for conflict in draft.conflicts:
            recorded = conflict.recorded
            assert recorded is not None
            out.append((CONFLICT_DETECTED, recorded.participant_id, conflict_data(recorded)))
        out.extend(
            (MINT_ENERGY, m.participant_id, mint_command(m))
            for m in draft.measured
            if m.mint_status is MintStatus.ISSUED
        )
        store.publish_many(out)


def conflict_data(recorded: ConflictRecorded) -> dict[str, Any]:
    return {
        "conflict_id": recorded.conflict_id,
        "participant_id": recorded.participant_id,
        "metering_point": recorded.metering_point,
        "interval_end": recorded.interval_end,
        "held_reading_hash": recorded.held_hash,
        "submitted_reading_hash": recorded.submitted_hash,
        "submitted_import_wh": recorded.submitted["import_wh"],
        "submitted_export_wh": recorded.submitted["export_wh"],
        "submission_id": recorded.submission_id,
    }


def device_problem(
    reading: SignedReading, device: Device | None, submitter: Submitter
) -> tuple[str, str] | None:
    if device is None:
        return Reason.UNKNOWN_DEVICE, f"no device {reading.device_id} is registered"
    if not device.active:
        return Reason.DEVICE_REVOKED, f"device {reading.device_id} was revoked"
    if device.metering_point != reading.metering_point:
        return (
            Reason.WRONG_METERING_POINT,
            f"device {reading.device_id} measures {device.metering_point}, "
            f"not {reading.metering_point}",
        )
    if device.participant_id != submitter.participant_id or (
        submitter.metering_point and submitter.metering_point != reading.metering_point
    ):
        return (
            Reason.NOT_COVERED,
            f"the threshold of {submitter.participant_id} does not cover device "
            f"{reading.device_id} at {reading.metering_point}",
        )
    return None


def _rejected(position: int, reason: str, detail: str) -> ItemResult:
    return ItemResult(position, "rejected", reason=reason, detail=detail)


def _refusal(result: ItemResult, reading: SignedReading | None) -> dict[str, Any]:
    described = (
        {}
        if reading is None
        else {
            "device_id": reading.device_id,
            "metering_point": reading.metering_point,
            "interval_end": format_utc(reading.interval_end),
        }
    )
    out: dict[str, Any] = {
        **described,
        "position": result.position,
        "reason": result.reason,
        "detail": (result.detail or "")[:500],
    }
    if result.conflict_id is not None:
        out["conflict_id"] = result.conflict_id
    return out
