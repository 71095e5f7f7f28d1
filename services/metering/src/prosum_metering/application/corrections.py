"""Resolving conflicting duplicates: the only way a held reading is ever corrected.

A conflicting duplicate is refused when it arrives and kept as an open conflict. Ops decides:
keep the held reading (nothing changes), or take the submitted one. Taking it supersedes the
held reading (which stays on record, and in its anchored batch) and re-measures the two
intervals it bounds. Each re-measured interval is reported as ``metering.interval_adjusted``
with its previous and corrected values: the mint decided when the interval was first measured
stands, and the difference is for settlement to account for. Nothing is minted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prosum_metering.application.ports import (
    Clock,
    IntervalRecord,
    MeteringStore,
    NewReading,
    UnitOfWork,
)
from prosum_metering.domain.model import ConflictStatus, Decision, ReadingConflict
from prosum_metering.domain.readings import INTERVAL_S, format_utc, parse_reading
from prosum_metering.domain.series import Interval, Point, check_neighbours
from prosum_platform.domain import DomainRuleViolation

INTERVAL_ADJUSTED = "metering.interval_adjusted"
CONFLICT_RESOLVED = "metering.reading_conflict_resolved"


@dataclass(frozen=True)
class Resolution:
    conflict_id: str
    decision: str
    adjustments: tuple[dict[str, Any], ...]


def _values(record: IntervalRecord) -> dict[str, Any]:
    return {
        "import_wh": record.import_wh,
        "export_wh": record.export_wh,
        "surplus_wh": record.surplus_wh,
        "consumption_wh": record.consumption_wh,
        "evidence_hash": record.evidence_hash,
    }


def _interval_values(interval: Interval) -> dict[str, Any]:
    return {
        "import_wh": interval.import_wh,
        "export_wh": interval.export_wh,
        "surplus_wh": interval.surplus_wh,
        "consumption_wh": interval.consumption_wh,
        "evidence_hash": interval.evidence_hash,
    }


class CorrectionService:
    def __init__(self, unit_of_work: UnitOfWork, clock: Clock) -> None:
        self._uow = unit_of_work
        self._clock = clock

    def resolve(
        self, conflict_id: str, decision: Decision, resolved_by: str, note: str
    ) -> Resolution:
        with self._uow() as store:
            conflict = store.conflict(conflict_id)
            if conflict is None or conflict.recorded is None:
                raise DomainRuleViolation("unknown_conflict", f"no conflict {conflict_id}")
            adjustments: tuple[dict[str, Any], ...] = ()
            if decision is Decision.TAKE_SUBMITTED:
                adjustments = self._take_submitted(store, conflict)
            conflict.resolve(decision, resolved_by, note, adjustments)
            store.save_conflict(conflict)
            recorded = conflict.recorded
            store.publish(
                CONFLICT_RESOLVED,
                recorded.participant_id,
                {
                    "conflict_id": conflict_id,
                    "participant_id": recorded.participant_id,
                    "metering_point": recorded.metering_point,
                    "interval_end": recorded.interval_end,
                    "decision": decision.value,
                    "resolved_by": resolved_by,
                    "adjusted_intervals": len(adjustments),
                },
            )
            return Resolution(conflict_id, decision.value, adjustments)

    def _take_submitted(
        self, store: MeteringStore, conflict: ReadingConflict
    ) -> tuple[dict[str, Any], ...]:
        recorded = conflict.recorded
        assert recorded is not None
        if conflict.status is not ConflictStatus.OPEN:
            raise DomainRuleViolation("conflict_resolved", "the conflict was already resolved")
        mp = recorded.metering_point
        series = store.lock_series([mp]).get(mp)
        if series is None:
            raise DomainRuleViolation("unknown_series", f"no series {mp}")
        held = store.reading(recorded.held_hash)
        if held is None or held.superseded:
            raise DomainRuleViolation(
                "held_reading_superseded",
                "another resolution already replaced the held reading; keep what is held now",
            )
        reading = parse_reading(recorded.submitted)
        end = reading.interval_end
        replacement = Point(end, reading.import_wh, reading.export_wh, recorded.submitted_hash)
        before, after = store.neighbours(mp, end)
        problem = check_neighbours(mp, series.rating_w, before, replacement, after)
        if problem is not None:
            reason, detail = problem
            raise DomainRuleViolation(reason, f"the submitted reading cannot replace: {detail}")
        store.replace_reading(
            recorded.held_hash,
            NewReading(
                reading, recorded.submitted_hash, series.participant_id, recorded.submission_id
            ),
            recorded.conflict_id,
        )
        now = datetime.fromtimestamp(self._clock(), UTC)
        adjustments: list[dict[str, Any]] = []
        for start, first, last in (
            (end - INTERVAL_S, before, replacement),
            (end, replacement, after),
        ):
            record = store.interval(mp, start)
            if record is None or first is None or last is None:
                continue
            if first.end != start or last.end != start + INTERVAL_S:
                continue
            corrected = Interval(
                mp,
                start,
                last.import_wh - first.import_wh,
                last.export_wh - first.export_wh,
                first.reading_hash,
                last.reading_hash,
            )
            store.adjust_interval(record, corrected, recorded.conflict_id, now)
            minted = record.mint_wh if record.mint_status in ("issued", "confirmed") else 0
            adjustment = {
                "participant_id": record.participant_id,
                "metering_point": mp,
                "interval_start": format_utc(start),
                "interval_end": format_utc(start + INTERVAL_S),
                "conflict_id": recorded.conflict_id,
                "previous": _values(record),
                "corrected": _interval_values(corrected),
                "mint_status": record.mint_status,
                "minted_wh": minted,
                "adjustment_wh": corrected.surplus_wh - record.surplus_wh,
            }
            if record.mint_command_id is not None:
                adjustment["mint_command_id"] = record.mint_command_id
            adjustments.append(adjustment)
            store.publish(INTERVAL_ADJUSTED, record.participant_id, adjustment)
        return tuple(adjustments)
