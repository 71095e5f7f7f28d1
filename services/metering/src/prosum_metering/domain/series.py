"""The rules of one metering point's series of readings, and what follows from new readings.

Cumulative registers never go backwards, also when a reading arrives late between two known
ones; the energy between two readings cannot exceed what the metering point's rated power
delivers in that time; a reading for a time already known is a duplicate when its values are
the same and a conflict otherwise. An interval is measured once the readings at both of its
ends are in; a span between two consecutive known readings longer than one interval is a gap,
reported and never filled in with invented values.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from prosum_metering.domain.merkle import evidence_hash
from prosum_metering.domain.readings import (
    INTERVAL_S,
    Reason,
    SignedReading,
    format_utc,
)


@dataclass(frozen=True, slots=True)
class Point:
    """A reading the series already holds (or has just accepted)."""

    end: int
    import_wh: int
    export_wh: int
    reading_hash: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A reading whose shape, time, device and signature have been checked."""

    position: int
    reading: SignedReading
    reading_hash: str

    def point(self) -> Point:
        r = self.reading
        return Point(r.interval_end, r.import_wh, r.export_wh, self.reading_hash)


@dataclass(frozen=True, slots=True)
class Refused:
    position: int
    reason: str
    detail: str
    existing_hash: str | None = None
    """For a conflicting duplicate: the reading already held for that time."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    position: int
    reading_hash: str
    """The reading already held (the same values, so the submission changes nothing)."""


@dataclass(frozen=True, slots=True)
class Interval:
    """Energy through one metering point in one 15-minute interval, from two readings."""

    metering_point: str
    start: int
    import_wh: int
    export_wh: int
    start_hash: str
    end_hash: str
    evidence_hash: str = ""
    """SHA-256(0x02 || start hash || end hash); computed when not given."""

    def __post_init__(self) -> None:
        if not self.evidence_hash:
            object.__setattr__(self, "evidence_hash", evidence_hash(self.start_hash, self.end_hash))

    @property
    def end(self) -> int:
        return self.start + INTERVAL_S

    @property
    def surplus_wh(self) -> int:
        """Net surplus: export minus import, floored at zero."""
        return max(self.export_wh - self.import_wh, 0)

    @property
    def consumption_wh(self) -> int:
        """Net consumption: import minus export, floored at zero."""
        return max(self.import_wh - self.export_wh, 0)


@dataclass(frozen=True, slots=True)
class Gap:
    """Consecutive readings more than one interval apart: the intervals between are unmeasured.

    The energy over the whole gap is known (the difference of the two readings) and is
    reported, but never spread over the intervals in it.
    """

    metering_point: str
    start: int
    end: int
    import_wh: int
    export_wh: int

    @property
    def unmeasured_intervals(self) -> int:
        return (self.end - self.start) // INTERVAL_S


@dataclass
class SeriesOutcome:
    accepted: list[Candidate] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)
    gaps_opened: list[Gap] = field(default_factory=list)
    gaps_closed: list[Gap] = field(default_factory=list)
    head: Point | None = None
    """The latest reading of the series afterwards."""


def _check_between(earlier: Point, later: Point, rating_w: int, mp: str) -> tuple[str, str] | None:
    span = later.end - earlier.end
    limit = rating_w * span  # the most energy the rating allows, in Wh x 3600 (exact)
    imports = later.import_wh - earlier.import_wh
    exports = later.export_wh - earlier.export_wh
    if imports >= 0 and exports >= 0 and imports * 3600 <= limit and exports * 3600 <= limit:
        return None
    for name, before, after in (
        ("import_wh", earlier.import_wh, later.import_wh),
        ("export_wh", earlier.export_wh, later.export_wh),
    ):
        if after < before:
            return (
                Reason.REGISTER_BACKWARDS,
                f"{name} {after} at {format_utc(later.end)} is below {before} at "
                f"{format_utc(earlier.end)}",
            )
    for name, rise in (("import_wh", imports), ("export_wh", exports)):
        if rise * 3600 > limit:
            return (
                Reason.IMPLAUSIBLE,
                f"{name} rose {rise} Wh between {format_utc(earlier.end)} and "
                f"{format_utc(later.end)}; {mp} is rated {rating_w} W, at most "
                f"{rating_w * span // 3600} Wh",
            )
    return None  # pragma: no cover - one of the checks above failed


def _gap(points: dict[int, Point], a: int, b: int, mp: str) -> Gap:
    pa, pb = points[a], points[b]
    return Gap(mp, a, b, pb.import_wh - pa.import_wh, pb.export_wh - pa.export_wh)


def evaluate(
    metering_point: str,
    rating_w: int,
    known: Sequence[Point],
    candidates: Sequence[Candidate],
) -> SeriesOutcome:
    """Decide on ``candidates`` for one metering point.

    ``known`` are the readings the series holds around the candidates: every one between the
    earliest and the latest candidate, plus the one just before and the one just after, if
    any (consecutive in the series, so that neighbours and gaps are seen correctly).
    Candidates are taken in time order; each is checked against its neighbours, which may be
    candidates accepted just before it.
    """
    if len(candidates) == 1 and len(known) <= 1:
        head = known[0] if known else None
        if head is None or candidates[0].reading.interval_end > head.end:
            return _after_head(metering_point, rating_w, head, candidates[0])
    return _in_series(metering_point, rating_w, known, candidates)


def _after_head(
    metering_point: str, rating_w: int, head: Point | None, candidate: Candidate
) -> SeriesOutcome:
    """One reading after the series' latest (the live case): what ``_in_series`` decides for
    it, without its bookkeeping."""
    outcome = SeriesOutcome()
    point = candidate.point()
    if head is not None:
        problem = _check_between(head, point, rating_w, metering_point)
        if problem is not None:
            outcome.refused.append(Refused(candidate.position, *problem))
            outcome.head = head
            return outcome
        if point.end - head.end == INTERVAL_S:
            outcome.intervals.append(
                Interval(
                    metering_point,
                    head.end,
                    point.import_wh - head.import_wh,
                    point.export_wh - head.export_wh,
                    head.reading_hash,
                    point.reading_hash,
                )
            )
        else:
            outcome.gaps_opened.append(
                Gap(
                    metering_point,
                    head.end,
                    point.end,
                    point.import_wh - head.import_wh,
                    point.export_wh - head.export_wh,
                )
            )
    outcome.accepted.append(candidate)
    outcome.head = point
    return outcome


def _in_series(
    metering_point: str,
    rating_w: int,
    known: Sequence[Point],
    candidates: Sequence[Candidate],
) -> SeriesOutcome:
    outcome = SeriesOutcome()
    points = {p.end: p for p in known}
    ends = sorted(points)
    fresh: list[int] = []
    # Gaps change only where a reading lands: the pair around it splits in two.
    opened: set[tuple[int, int]] = set()
    closed: set[tuple[int, int]] = set()
    ordered = (
        candidates
        if len(candidates) == 1
        else sorted(candidates, key=lambda c: c.reading.interval_end)
    )
    for candidate in ordered:
        reading = candidate.reading
        end = reading.interval_end
        existing = points.get(end)
        if existing is not None:
            if existing.import_wh == reading.import_wh and existing.export_wh == reading.export_wh:
                outcome.duplicates.append(Duplicate(candidate.position, existing.reading_hash))
            else:
                outcome.refused.append(
                    Refused(
                        candidate.position,
                        Reason.CONFLICTING_DUPLICATE,
                        f"{metering_point} at {format_utc(end)} already reads import "
                        f"{existing.import_wh} Wh, export {existing.export_wh} Wh",
                        existing.reading_hash,
                    )
                )
            continue
        point = candidate.point()
        at = bisect.bisect_left(ends, end)
        before = ends[at - 1] if at > 0 else None
        after = ends[at] if at < len(ends) else None
        problem = None
        if before is not None:
            problem = _check_between(points[before], point, rating_w, metering_point)
        if problem is None and after is not None:
            problem = _check_between(point, points[after], rating_w, metering_point)
        if problem is not None:
            outcome.refused.append(Refused(candidate.position, *problem))
            continue
        points[end] = point
        ends.insert(at, end)
        fresh.append(end)
        outcome.accepted.append(candidate)
        if before is not None and after is not None and after - before > INTERVAL_S:
            if (before, after) in opened:
                opened.discard((before, after))
            else:
                closed.add((before, after))
        if before is not None and end - before > INTERVAL_S:
            opened.add((before, end))
        if after is not None and after - end > INTERVAL_S:
            opened.add((end, after))

    starts = {s for end in fresh for s in (end - INTERVAL_S, end)}
    for start in sorted(starts):
        first, last = points.get(start), points.get(start + INTERVAL_S)
        if first is None or last is None:
            continue
        outcome.intervals.append(
            Interval(
                metering_point,
                start,
                last.import_wh - first.import_wh,
                last.export_wh - first.export_wh,
                first.reading_hash,
                last.reading_hash,
            )
        )
    # A closed gap's ends were both known before, so its energy is from the old readings.
    outcome.gaps_opened = [_gap(points, a, b, metering_point) for a, b in sorted(opened)]
    outcome.gaps_closed = [_gap(points, a, b, metering_point) for a, b in sorted(closed)]
    outcome.head = points[ends[-1]] if ends else None
    return outcome


def check_neighbours(
    metering_point: str,
    rating_w: int,
    before: Point | None,
    point: Point,
    after: Point | None,
) -> tuple[str, str] | None:
    """The series rules for one reading between its neighbours: (reason, detail) or None."""
    if before is not None:
        problem = _check_between(before, point, rating_w, metering_point)
        if problem is not None:
            return problem
    if after is not None:
        return _check_between(point, after, rating_w, metering_point)
    return None
