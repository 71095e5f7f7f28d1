"""Metering's persistence on SQLAlchemy Core: events, read models and outbox in one transaction.

Bulk writes (readings, intervals) are one ``executemany`` each; the statements are built once so
SQLAlchemy reuses their compiled form. A unique key violation (another transaction stored the
same reading or interval first) surfaces as ``ConcurrencyConflict`` for the caller to retry.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from prosum_auth.trust import participant_status
from prosum_contracts import Envelope
from prosum_metering.adapters.tables import (
    adjustments,
    batches,
    conflicts,
    devices,
    gaps,
    intervals,
    participants,
    readings,
    series,
    superseded_readings,
    trades,
)
from prosum_metering.application.ports import (
    BatchView,
    ConflictRecord,
    Device,
    Evidence,
    GapRecord,
    IntervalRecord,
    MeasuredInterval,
    NewReading,
    Participant,
    ReadView,
    Series,
    StoredReading,
    UnitOfWork,
)
from prosum_metering.domain.model import (
    METERING_EVENTS,
    ConflictStatus,
    DeferredMintsReleased,
    MintConfirmed,
    MintOutcome,
    MintStatus,
    ReadingBatch,
    ReadingConflict,
    Submission,
    stream_of_batch,
    stream_of_conflict,
    stream_of_mint,
    stream_of_release,
)
from prosum_metering.domain.readings import INTERVAL_S, SignedReading, b64url
from prosum_metering.domain.series import Gap, Interval, Point
from prosum_platform.codec import EventCodec
from prosum_platform.domain import ConcurrencyConflict
from prosum_platform.eventstore import EventStore, NewEvent, Repository, Transaction, as_utc
from prosum_platform.eventstore.bulk import BulkStatement

SOURCE = "metering"
CODEC = EventCodec().register(*METERING_EVENTS)

_BATCHES = Repository(ReadingBatch, CODEC)
_CONFLICTS = Repository(ReadingConflict, CODEC)
_MINTS = Repository(MintOutcome, CODEC)

_READING_ROW = (
    "reading_hash",
    "metering_point",
    "interval_end",
    "device_id",
    "participant_id",
    "import_wh",
    "export_wh",
    "signature",
    "submission_id",
    "batch_id",
    "received_at",
)
_INTERVAL_ROW = (
    "metering_point",
    "interval_start",
    "participant_id",
    "import_wh",
    "export_wh",
    "surplus_wh",
    "consumption_wh",
    "start_hash",
    "end_hash",
    "evidence_hash",
    "mint_status",
    "mint_command_id",
    "mint_wh",
    "mint_evidence_hash",
    "mint_tx_id",
    "mint_block",
    "mint_reason",
    "adjustment_wh",
    "submission_id",
    "measured_at",
)
_INSERT_READINGS = BulkStatement.insert(readings, _READING_ROW)
_INSERT_INTERVALS = BulkStatement.insert(intervals, _INTERVAL_ROW)
_MOVE_HEAD = BulkStatement.update(
    series,
    ["metering_point"],
    ["head_end", "head_import_wh", "head_export_wh", "head_hash"],
)
_SERIES_COLUMNS = (
    series.c.metering_point,
    series.c.participant_id,
    series.c.rating_w,
    series.c.head_end,
    series.c.head_import_wh,
    series.c.head_export_wh,
    series.c.head_hash,
)
_DEVICE_COLUMNS = (
    devices.c.device_id.label("d_device_id"),
    devices.c.participant_id.label("d_participant_id"),
    devices.c.public_key.label("d_public_key"),
    devices.c.metering_point.label("d_metering_point"),
    devices.c.rating_w.label("d_rating_w"),
    devices.c.status.label("d_status"),
)
_READING_COLUMNS = (
    readings.c.interval_end,
    readings.c.import_wh,
    readings.c.export_wh,
    readings.c.reading_hash,
)
_OF_POINT = select(*_READING_COLUMNS).where(readings.c.metering_point == bindparam("mp"))
_BEFORE = (
    _OF_POINT.where(readings.c.interval_end < bindparam("end"))
    .order_by(readings.c.interval_end.desc())
    .limit(1)
)
_AFTER = (
    _OF_POINT.where(readings.c.interval_end > bindparam("end"))
    .order_by(readings.c.interval_end)
    .limit(1)
)
_INSIDE = _OF_POINT.where(
    readings.c.interval_end.between(bindparam("first"), bindparam("last"))
).order_by(readings.c.interval_end)
_CLUSTER_SPAN_S = 8 * INTERVAL_S
"""Late readings of points within two hours of each other are read in one query."""


def _now() -> datetime:
    return datetime.now(UTC)


def _point(row: Any) -> Point:
    return Point(int(row.interval_end), int(row.import_wh), int(row.export_wh), row.reading_hash)


def _device(row: Any) -> Device:
    return Device(
        device_id=row.device_id,
        participant_id=row.participant_id,
        public_key=bytes(row.public_key),
        metering_point=row.metering_point,
        rating_w=int(row.rating_w),
        active=row.status == "active",
    )


def _interval_record(row: Any) -> IntervalRecord:
    return IntervalRecord(
        metering_point=row.metering_point,
        interval_start=int(row.interval_start),
        participant_id=row.participant_id,
        import_wh=int(row.import_wh),
        export_wh=int(row.export_wh),
        surplus_wh=int(row.surplus_wh),
        consumption_wh=int(row.consumption_wh),
        start_hash=row.start_hash,
        end_hash=row.end_hash,
        evidence_hash=row.evidence_hash,
        mint_status=row.mint_status,
        mint_command_id=row.mint_command_id,
        mint_wh=int(row.mint_wh),
        mint_evidence_hash=row.mint_evidence_hash,
        mint_tx_id=row.mint_tx_id,
        mint_block=None if row.mint_block is None else int(row.mint_block),
        mint_reason=row.mint_reason,
        adjustment_wh=int(row.adjustment_wh),
    )


def _stored_reading(row: Any, superseded: bool) -> StoredReading:
    return StoredReading(
        reading=SignedReading(
            device_id=row.device_id,
            metering_point=row.metering_point,
            interval_end=int(row.interval_end),
            import_wh=int(row.import_wh),
            export_wh=int(row.export_wh),
            signature=base64.urlsafe_b64decode(row.signature + "=="),
        ),
        reading_hash=row.reading_hash,
        participant_id=row.participant_id,
        batch_id=row.batch_id,
        superseded=superseded,
        received_at=as_utc(row.received_at),
    )


def _reading_row(new: NewReading, received_at: datetime) -> tuple[Any, ...]:
    """A reading's row, in _READING_ROW order."""
    r = new.reading
    return (
        new.reading_hash,
        r.metering_point,
        r.interval_end,
        r.device_id,
        new.participant_id,
        r.import_wh,
        r.export_wh,
        b64url(r.signature),
        new.submission_id,
        None,
        received_at,
    )


def _interval_row(m: MeasuredInterval, at: datetime) -> tuple[Any, ...]:
    """An interval's row, in _INTERVAL_ROW order."""
    i = m.interval
    evidence = i.evidence_hash
    return (
        i.metering_point,
        i.start,
        m.participant_id,
        i.import_wh,
        i.export_wh,
        i.surplus_wh,
        i.consumption_wh,
        i.start_hash,
        i.end_hash,
        evidence,
        m.mint_status.value,
        m.mint_command_id,
        m.mint_wh,
        evidence if m.mint_command_id is not None else None,
        None,
        None,
        None,
        0,
        m.submission_id,
        at,
    )


class _Reads:
    """Reads shared by the transaction and the read-only view."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def devices(self, device_ids: Collection[str]) -> dict[str, Device]:
        if not device_ids:
            return {}
        rows = self._conn.execute(select(devices).where(devices.c.device_id.in_(list(device_ids))))
        return {row.device_id: _device(row) for row in rows}

    def known_hashes(self, reading_hashes: Collection[str]) -> set[str]:
        wanted = list(reading_hashes)
        if not wanted:
            return set()
        found = set(
            self._conn.execute(
                select(readings.c.reading_hash).where(readings.c.reading_hash.in_(wanted))
            ).scalars()
        )
        return found | set(
            self._conn.execute(
                select(superseded_readings.c.reading_hash).where(
                    superseded_readings.c.reading_hash.in_(wanted)
                )
            ).scalars()
        )

    def reading(self, reading_hash: str) -> StoredReading | None:
        row = self._conn.execute(
            select(readings).where(readings.c.reading_hash == reading_hash)
        ).first()
        if row is not None:
            return _stored_reading(row, superseded=False)
        row = self._conn.execute(
            select(superseded_readings).where(superseded_readings.c.reading_hash == reading_hash)
        ).first()
        return None if row is None else _stored_reading(row, superseded=True)

    def interval(self, metering_point: str, start: int) -> IntervalRecord | None:
        row = self._conn.execute(
            select(intervals).where(
                intervals.c.metering_point == metering_point, intervals.c.interval_start == start
            )
        ).first()
        return None if row is None else _interval_record(row)


class SqlMeteringStore(_Reads):
    """``MeteringStore`` in one event store transaction."""

    def __init__(self, tx: Transaction) -> None:
        super().__init__(tx.conn)
        self._tx = tx

    # -- projections of identity and the order book ---------------------------------------
    def _upsert(self, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> None:
        where = sa.and_(*(table.c[name] == value for name, value in key.items()))
        if self._conn.execute(update(table).where(where).values(**values)).rowcount == 0:
            self._conn.execute(insert(table).values(**key, **values))

    def upsert_participant(self, participant_id: str, role: str, metering_point: str) -> None:
        self._upsert(
            participants,
            {"participant_id": participant_id},
            {"role": role, "metering_point": metering_point, "updated_at": _now()},
        )

    def upsert_device(self, device: Device, kind: str) -> None:
        self._upsert(
            devices,
            {"device_id": device.device_id},
            {
                "participant_id": device.participant_id,
                "kind": kind,
                "public_key": device.public_key,
                "metering_point": device.metering_point,
                "rating_w": device.rating_w,
                "status": "active" if device.active else "revoked",
                "updated_at": _now(),
            },
        )
        # The series keeps its readings when its device changes (a new gateway, a new key).
        self._upsert(
            series,
            {"metering_point": device.metering_point},
            {
                "participant_id": device.participant_id,
                "device_id": device.device_id,
                "rating_w": device.rating_w,
            },
        )

    def revoke_device(self, device_id: str) -> None:
        self._conn.execute(
            update(devices)
            .where(devices.c.device_id == device_id)
            .values(status="revoked", updated_at=_now())
        )

    def add_trade(self, trade_id: str, seller: str, buyer: str, start: int, end: int) -> None:
        self._upsert(
            trades,
            {"trade_id": trade_id},
            {"seller": seller, "buyer": buyer, "delivery_start": start, "delivery_end": end},
        )

    # -- ingestion --------------------------------------------------------------------------
    def participants(self, participant_ids: Collection[str]) -> dict[str, Participant]:
        ids = list(participant_ids)
        if not ids:
            return {}
        # .all(): a result has keys() and would pass for a mapping with dict() itself.
        roles: dict[str, str] = dict(
            self._conn.execute(
                select(participants.c.participant_id, participants.c.role).where(
                    participants.c.participant_id.in_(ids)
                )
            ).all()
        )
        statuses: dict[str, str] = dict(
            self._conn.execute(
                select(participant_status.c.participant_id, participant_status.c.status).where(
                    participant_status.c.participant_id.in_(ids)
                )
            ).all()
        )
        return {
            pid: Participant(pid, roles.get(pid), statuses.get(pid))
            for pid in ids
            if pid in roles or pid in statuses
        }

    def lock_series(self, metering_points: Collection[str]) -> dict[str, Series]:
        if not metering_points:
            return {}
        # Rows are locked in key order, so two submissions never wait on each other in a
        # circle. (SQLite has one writer at a time and needs no row locks.) The device that
        # measures each point comes in the same query.
        rows = self._conn.execute(
            select(*_SERIES_COLUMNS, *_DEVICE_COLUMNS)
            .select_from(series.outerjoin(devices, devices.c.device_id == series.c.device_id))
            .where(series.c.metering_point.in_(sorted(metering_points)))
            .order_by(series.c.metering_point)
            .with_for_update(of=series)
        )
        found: dict[str, Series] = {}
        for (
            metering_point,
            participant_id,
            rating_w,
            head_end,
            head_import_wh,
            head_export_wh,
            head_hash,
            device_id,
            device_participant,
            public_key,
            device_point,
            device_rating,
            device_status,
        ) in rows:
            head = (
                None
                if head_end is None
                else Point(int(head_end), int(head_import_wh), int(head_export_wh), head_hash)
            )
            device = (
                None
                if device_id is None
                else Device(
                    device_id,
                    device_participant,
                    bytes(public_key),
                    device_point,
                    int(device_rating),
                    device_status == "active",
                )
            )
            found[metering_point] = Series(
                metering_point, participant_id, int(rating_w), head, device
            )
        return found

    def windows(self, spans: Mapping[str, tuple[int, int]]) -> dict[str, list[Point]]:
        # Points whose spans lie close together in time are read with one query over their
        # common time range, widened by one interval on each side, which holds the neighbours
        # of readings late by a few intervals. A point whose neighbour lies further away, or
        # whose own span is long, is read on its own.
        out: dict[str, list[Point]] = {}
        ordered = sorted(spans.items(), key=lambda item: item[1][0])
        cluster: list[str] = []
        low = high = 0
        for metering_point, (first, last) in ordered:
            if last - first > _CLUSTER_SPAN_S:
                out[metering_point] = self._window(metering_point, first, last)
                continue
            if cluster and max(high, last) - low > _CLUSTER_SPAN_S:
                self._cluster_windows(cluster, spans, low, high, out)
                cluster = []
            if not cluster:
                low, high = first, last
            cluster.append(metering_point)
            high = max(high, last)
        if cluster:
            self._cluster_windows(cluster, spans, low, high, out)
        return out

    def _cluster_windows(
        self,
        cluster: list[str],
        spans: Mapping[str, tuple[int, int]],
        low: int,
        high: int,
        out: dict[str, list[Point]],
    ) -> None:
        near: dict[str, list[Point]] = {mp: [] for mp in cluster}
        rows = self._conn.execute(
            select(readings.c.metering_point, *_READING_COLUMNS)
            .where(
                readings.c.metering_point.in_(cluster),
                readings.c.interval_end.between(low - INTERVAL_S, high + INTERVAL_S),
            )
            .order_by(readings.c.metering_point, readings.c.interval_end)
        )
        for metering_point, end, import_wh, export_wh, reading_hash in rows:
            near[metering_point].append(
                Point(int(end), int(import_wh), int(export_wh), reading_hash)
            )
        for metering_point in cluster:
            first, last = spans[metering_point]
            points = near[metering_point]
            before = [p for p in points if p.end < first]
            inside = [p for p in points if first <= p.end <= last]
            after = [p for p in points if p.end > last]
            if not before:
                before = self._neighbour(metering_point, first, earlier=True)
            if not after:
                after = self._neighbour(metering_point, last, earlier=False)
            out[metering_point] = [*before[-1:], *inside, *after[:1]]

    def _neighbour(self, metering_point: str, end: int, *, earlier: bool) -> list[Point]:
        statement = _BEFORE if earlier else _AFTER
        row = self._conn.execute(statement, {"mp": metering_point, "end": end}).first()
        return [] if row is None else [_point(row)]

    def _window(self, metering_point: str, first_end: int, last_end: int) -> list[Point]:
        inside = self._conn.execute(
            _INSIDE, {"mp": metering_point, "first": first_end, "last": last_end}
        ).all()
        return [
            *self._neighbour(metering_point, first_end, earlier=True),
            *(_point(row) for row in inside),
            *self._neighbour(metering_point, last_end, earlier=False),
        ]

    def record_submission(
        self,
        submission: Submission,
        readings_: Sequence[NewReading],
        measured: Sequence[MeasuredInterval],
        heads: Mapping[str, Point],
        gaps_opened: Sequence[tuple[Gap, str]],
        gaps_closed: Sequence[Gap],
        conflicts_: Sequence[ReadingConflict],
    ) -> None:
        now = _now()
        self._append_submission(submission)
        try:
            _INSERT_READINGS.execute(self._conn, [_reading_row(r, now) for r in readings_])
            _INSERT_INTERVALS.execute(self._conn, [_interval_row(m, now) for m in measured])
        except IntegrityError:
            raise ConcurrencyConflict(submission.id, 0, None) from None
        _MOVE_HEAD.execute(
            self._conn,
            [(p.end, p.import_wh, p.export_wh, p.reading_hash, mp) for mp, p in heads.items()],
        )
        for gap, owner in gaps_opened:
            self._conn.execute(
                insert(gaps).values(
                    metering_point=gap.metering_point,
                    gap_start=gap.start,
                    gap_end=gap.end,
                    participant_id=owner,
                    import_wh=gap.import_wh,
                    export_wh=gap.export_wh,
                    status="open",
                    detected_at=now,
                )
            )
        for gap in gaps_closed:
            self._conn.execute(
                update(gaps)
                .where(
                    gaps.c.metering_point == gap.metering_point,
                    gaps.c.gap_start == gap.start,
                    gaps.c.gap_end == gap.end,
                )
                .values(status="closed", closed_at=now)
            )
        for conflict in conflicts_:
            self.save_conflict(conflict)

    def _append_submission(self, submission: Submission) -> None:
        """Store the submission's event as the codec would, without its value-by-value walk.

        The event holds thousands of readings of plain strings and integers, which orjson
        writes directly (the codec's recursive encoding cost more than storing them); its one
        datetime is timezone-aware and comes back through ``CODEC.decode`` like any other.
        """
        events = []
        for event in submission.pending_events:
            payload = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
            events.append(NewEvent(event.event_type, event.schema_version, payload))
        self._tx.append(submission.id, submission.version - len(events), events)
        submission.mark_persisted()

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        self._tx.enqueue(
            Envelope(type=event_type, schema_version=1, source=SOURCE, subject=subject, data=data)
        )

    def publish_many(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        # One INSERT for a submission's events and mint commands: one per mint cost more than
        # verifying the reading.
        self._tx.enqueue_many(
            [
                Envelope(type=t, schema_version=1, source=SOURCE, subject=subject, data=data)
                for t, subject, data in events
            ]
        )

    # -- mints ------------------------------------------------------------------------------
    def deferred_mints(self, participant_id: str) -> list[IntervalRecord]:
        rows = self._conn.execute(
            select(intervals)
            .where(
                intervals.c.participant_id == participant_id,
                intervals.c.mint_status == MintStatus.DEFERRED.value,
            )
            .order_by(intervals.c.metering_point, intervals.c.interval_start)
        )
        return [_interval_record(row) for row in rows]

    def release_mints(
        self,
        cause_id: str,
        event: DeferredMintsReleased,
        decisions: Mapping[tuple[str, int], tuple[MintStatus, str | None]],
    ) -> None:
        event_type, version, data = CODEC.encode(event)
        self._tx.append(stream_of_release(cause_id), 0, [NewEvent(event_type, version, data)])
        for (mp, start), (status, command_id) in decisions.items():
            self._conn.execute(
                update(intervals)
                .where(intervals.c.metering_point == mp, intervals.c.interval_start == start)
                .values(mint_status=status.value, mint_command_id=command_id)
            )

    def interval_by_mint(self, command_id: str) -> IntervalRecord | None:
        row = self._conn.execute(
            select(intervals).where(intervals.c.mint_command_id == command_id)
        ).first()
        return None if row is None else _interval_record(row)

    def mint_outcome(self, command_id: str) -> MintOutcome | None:
        return _MINTS.get(self._tx, stream_of_mint(command_id))

    def record_mint_outcome(self, outcome: MintOutcome) -> None:
        _MINTS.save(self._tx, outcome)
        result = outcome.outcome
        assert result is not None
        if isinstance(result, MintConfirmed):
            values: dict[str, Any] = {
                "mint_status": MintStatus.CONFIRMED.value,
                "mint_tx_id": result.tx_id,
                "mint_block": result.block,
            }
        else:
            values = {"mint_status": MintStatus.FAILED.value, "mint_reason": result.reason}
        self._conn.execute(
            update(intervals)
            .where(intervals.c.mint_command_id == result.command_id)
            .values(**values)
        )

    # -- batches ----------------------------------------------------------------------------
    def claim_unsealed(self, batch_id: str, limit: int) -> list[str]:
        oldest = (
            select(readings.c.seq)
            .where(readings.c.batch_id.is_(None))
            .order_by(readings.c.seq)
            .limit(limit)
            .scalar_subquery()
        )
        # "batch_id IS NULL" again on the outer statement: should two sealers ever race (a
        # lease that expired mid-seal), PostgreSQL re-checks it on a row it waited for, and
        # a reading already claimed stays in its first batch.
        rows = self._conn.execute(
            update(readings)
            .where(readings.c.seq.in_(oldest), readings.c.batch_id.is_(None))
            .values(batch_id=batch_id)
            .returning(readings.c.seq, readings.c.reading_hash)
        ).all()
        return [row.reading_hash for row in sorted(rows, key=lambda r: r.seq)]

    def save_batch(self, batch: ReadingBatch) -> None:
        new = batch.version == len(batch.pending_events)
        _BATCHES.save(self._tx, batch)
        values: dict[str, Any] = {
            "anchor_status": batch.status.value,
            "anchor_command_id": batch.command_id,
            "anchor_tx_id": batch.tx_id,
            "anchor_block": batch.block,
            "anchor_backend": batch.backend,
            "anchor_reason": batch.failure,
        }
        if new:
            self._conn.execute(
                insert(batches).values(
                    batch_id=batch.batch_id,
                    root=batch.root,
                    leaf_count=len(batch.reading_hashes),
                    leaves=b"".join(bytes.fromhex(h) for h in batch.reading_hashes),
                    sealed_at=batch.sealed_at,
                    **values,
                )
            )
        else:
            self._conn.execute(
                update(batches).where(batches.c.batch_id == batch.batch_id).values(**values)
            )

    def batch(self, batch_id: str) -> ReadingBatch | None:
        return _BATCHES.get(self._tx, stream_of_batch(batch_id))

    # -- conflicts and corrections ------------------------------------------------------------
    def conflict(self, conflict_id: str) -> ReadingConflict | None:
        return _CONFLICTS.get(self._tx, stream_of_conflict(conflict_id))

    def save_conflict(self, conflict: ReadingConflict) -> None:
        new = conflict.version == len(conflict.pending_events)
        _CONFLICTS.save(self._tx, conflict)
        recorded = conflict.recorded
        assert recorded is not None
        if new:
            self._conn.execute(
                insert(conflicts).values(
                    conflict_id=recorded.conflict_id,
                    metering_point=recorded.metering_point,
                    interval_end=int(_parse_utc(recorded.interval_end)),
                    participant_id=recorded.participant_id,
                    held_hash=recorded.held_hash,
                    submitted_hash=recorded.submitted_hash,
                    submitted=orjson.dumps(recorded.submitted).decode(),
                    status=conflict.status.value,
                    detected_at=_now(),
                )
            )
        else:
            self._conn.execute(
                update(conflicts)
                .where(conflicts.c.conflict_id == recorded.conflict_id)
                .values(
                    status=conflict.status.value,
                    resolved_at=_now() if conflict.status is not ConflictStatus.OPEN else None,
                    resolved_by=conflict.resolved_by,
                )
            )

    def neighbours(self, metering_point: str, end: int) -> tuple[Point | None, Point | None]:
        base = select(*_READING_COLUMNS).where(readings.c.metering_point == metering_point)
        before = self._conn.execute(
            base.where(readings.c.interval_end < end)
            .order_by(readings.c.interval_end.desc())
            .limit(1)
        ).first()
        after = self._conn.execute(
            base.where(readings.c.interval_end > end).order_by(readings.c.interval_end).limit(1)
        ).first()
        return (
            None if before is None else _point(before),
            None if after is None else _point(after),
        )

    def replace_reading(self, held_hash: str, replacement: NewReading, conflict_id: str) -> None:
        held = self._conn.execute(
            select(readings).where(readings.c.reading_hash == held_hash)
        ).first()
        if held is None:
            raise ConcurrencyConflict(f"reading-{held_hash}", 0, None)
        now = _now()
        row = dict(held._mapping)
        self._conn.execute(
            insert(superseded_readings).values(
                **row,
                superseded_by=replacement.reading_hash,
                conflict_id=conflict_id,
                superseded_at=now,
            )
        )
        self._conn.execute(readings.delete().where(readings.c.reading_hash == held_hash))
        _INSERT_READINGS.execute(self._conn, [_reading_row(replacement, now)])
        r = replacement.reading
        self._conn.execute(
            update(series)
            .where(series.c.metering_point == r.metering_point, series.c.head_hash == held_hash)
            .values(
                head_import_wh=r.import_wh,
                head_export_wh=r.export_wh,
                head_hash=replacement.reading_hash,
            )
        )
        before, after = self.neighbours(r.metering_point, r.interval_end)
        if before is not None:
            self._conn.execute(
                update(gaps)
                .where(
                    gaps.c.metering_point == r.metering_point,
                    gaps.c.gap_start == before.end,
                    gaps.c.gap_end == r.interval_end,
                )
                .values(
                    import_wh=r.import_wh - before.import_wh,
                    export_wh=r.export_wh - before.export_wh,
                )
            )
        if after is not None:
            self._conn.execute(
                update(gaps)
                .where(
                    gaps.c.metering_point == r.metering_point,
                    gaps.c.gap_start == r.interval_end,
                    gaps.c.gap_end == after.end,
                )
                .values(
                    import_wh=after.import_wh - r.import_wh,
                    export_wh=after.export_wh - r.export_wh,
                )
            )

    def adjust_interval(
        self, record: IntervalRecord, corrected: Interval, conflict_id: str, at: datetime
    ) -> None:
        self._conn.execute(
            insert(adjustments).values(
                metering_point=record.metering_point,
                interval_start=record.interval_start,
                participant_id=record.participant_id,
                conflict_id=conflict_id,
                previous_import_wh=record.import_wh,
                previous_export_wh=record.export_wh,
                previous_surplus_wh=record.surplus_wh,
                previous_start_hash=record.start_hash,
                previous_end_hash=record.end_hash,
                previous_evidence_hash=record.evidence_hash,
                corrected_import_wh=corrected.import_wh,
                corrected_export_wh=corrected.export_wh,
                corrected_surplus_wh=corrected.surplus_wh,
                corrected_evidence_hash=corrected.evidence_hash,
                adjusted_at=at,
            )
        )
        self._conn.execute(
            update(intervals)
            .where(
                intervals.c.metering_point == record.metering_point,
                intervals.c.interval_start == record.interval_start,
            )
            .values(
                import_wh=corrected.import_wh,
                export_wh=corrected.export_wh,
                surplus_wh=corrected.surplus_wh,
                consumption_wh=corrected.consumption_wh,
                start_hash=corrected.start_hash,
                end_hash=corrected.end_hash,
                evidence_hash=corrected.evidence_hash,
                adjustment_wh=record.adjustment_wh + corrected.surplus_wh - record.surplus_wh,
            )
        )


def _parse_utc(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


class SqlMeteringQueries(_Reads):
    """``MeteringQueries`` on a read-only connection."""

    def batch_view(self, batch_id: str) -> BatchView | None:
        row = self._conn.execute(select(batches).where(batches.c.batch_id == batch_id)).first()
        if row is None:
            return None
        raw = bytes(row.leaves)
        return BatchView(
            batch_id=row.batch_id,
            root=row.root,
            leaves=tuple(raw[i : i + 32].hex() for i in range(0, len(raw), 32)),
            sealed_at=as_utc(row.sealed_at),
            anchor_status=row.anchor_status,
            anchor_command_id=row.anchor_command_id,
            anchor_tx_id=row.anchor_tx_id,
            anchor_block=None if row.anchor_block is None else int(row.anchor_block),
            anchor_backend=row.anchor_backend,
            anchor_reason=row.anchor_reason,
        )

    def evidence(self, evidence_hash: str) -> Evidence | None:
        row = self._conn.execute(
            select(intervals).where(intervals.c.evidence_hash == evidence_hash)
        ).first()
        if row is not None:
            return Evidence(
                evidence_hash=evidence_hash,
                metering_point=row.metering_point,
                interval_start=int(row.interval_start),
                participant_id=row.participant_id,
                start_hash=row.start_hash,
                end_hash=row.end_hash,
                import_wh=int(row.import_wh),
                export_wh=int(row.export_wh),
                surplus_wh=int(row.surplus_wh),
                current=True,
            )
        old = self._conn.execute(
            select(adjustments).where(adjustments.c.previous_evidence_hash == evidence_hash)
        ).first()
        if old is None:
            return None
        return Evidence(
            evidence_hash=evidence_hash,
            metering_point=old.metering_point,
            interval_start=int(old.interval_start),
            participant_id=old.participant_id,
            start_hash=old.previous_start_hash,
            end_hash=old.previous_end_hash,
            import_wh=int(old.previous_import_wh),
            export_wh=int(old.previous_export_wh),
            surplus_wh=int(old.previous_surplus_wh),
            current=False,
        )

    def series_owner(self, metering_point: str) -> str | None:
        owner: str | None = self._conn.execute(
            select(series.c.participant_id).where(series.c.metering_point == metering_point)
        ).scalar()
        return owner

    def intervals(
        self, metering_point: str, first_start: int, last_start: int
    ) -> list[IntervalRecord]:
        rows = self._conn.execute(
            select(intervals)
            .where(
                intervals.c.metering_point == metering_point,
                intervals.c.interval_start.between(first_start, last_start),
            )
            .order_by(intervals.c.interval_start)
        )
        return [_interval_record(row) for row in rows]

    def gaps(self, metering_point: str) -> list[GapRecord]:
        rows = self._conn.execute(
            select(gaps).where(gaps.c.metering_point == metering_point).order_by(gaps.c.gap_start)
        )
        return [
            GapRecord(
                row.metering_point,
                int(row.gap_start),
                int(row.gap_end),
                row.participant_id,
                int(row.import_wh),
                int(row.export_wh),
                row.status,
            )
            for row in rows
        ]

    def traded_windows(
        self, participant: str, other: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        pair = sa.or_(
            sa.and_(trades.c.seller == participant, trades.c.buyer == other),
            sa.and_(trades.c.seller == other, trades.c.buyer == participant),
        )
        rows = self._conn.execute(
            select(trades.c.delivery_start, trades.c.delivery_end).where(
                pair, trades.c.delivery_start < end, trades.c.delivery_end > start
            )
        )
        return [(int(a), int(b)) for a, b in rows]

    def conflicts(self, status: str | None) -> list[ConflictRecord]:
        query = select(conflicts).order_by(conflicts.c.detected_at)
        if status is not None:
            query = query.where(conflicts.c.status == status)
        return [
            ConflictRecord(
                conflict_id=row.conflict_id,
                metering_point=row.metering_point,
                interval_end=int(row.interval_end),
                participant_id=row.participant_id,
                held_hash=row.held_hash,
                submitted_hash=row.submitted_hash,
                submitted=orjson.loads(row.submitted),
                status=row.status,
                detected_at=as_utc(row.detected_at),
            )
            for row in self._conn.execute(query)
        ]


def unit_of_work(store: EventStore) -> UnitOfWork:
    @contextmanager
    def open_unit() -> Iterator[SqlMeteringStore]:
        with store.transaction() as tx:
            yield SqlMeteringStore(tx)

    return open_unit


def read_view(store: EventStore) -> ReadView:
    @contextmanager
    def open_view() -> Iterator[SqlMeteringQueries]:
        with store.reading() as conn:
            yield SqlMeteringQueries(conn)

    return open_view
