"""The series rules: given the readings a metering point holds, when readings arrive, then what
is accepted, refused, measured and reported as gaps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from prosum_metering.domain.merkle import evidence_hash
from prosum_metering.domain.readings import Reason, SignedReading
from prosum_metering.domain.series import (
    Candidate,
    Gap,
    Point,
    _after_head,
    _in_series,
    evaluate,
)

T0 = 1_780_000_200
Q = 900
MP = "MP-1"
RATING = 8_000  # 2,000 Wh per interval at most


def point(k: int, imp: int, exp: int) -> Point:
    return Point(T0 + k * Q, imp, exp, f"{k:064x}"[-64:].replace(" ", "0"))


def candidate(position: int, k: int, imp: int, exp: int) -> Candidate:
    reading = SignedReading("dev-1", MP, T0 + k * Q, imp, exp, b"\x00" * 64)
    return Candidate(position, reading, f"{1000 + position:064x}")


def test_readings_in_order_measure_each_interval_once_both_ends_are_in() -> None:
    outcome = evaluate(
        MP,
        RATING,
        [],
        [candidate(0, 0, 100, 0), candidate(1, 1, 150, 900), candidate(2, 2, 150, 2_000)],
    )
    assert [c.position for c in outcome.accepted] == [0, 1, 2]
    assert [
        (i.start, i.import_wh, i.export_wh, i.surplus_wh, i.consumption_wh)
        for i in outcome.intervals
    ] == [
        (T0, 50, 900, 850, 0),
        (T0 + Q, 0, 1_100, 1_100, 0),
    ]
    first = outcome.intervals[0]
    assert first.evidence_hash == evidence_hash(first.start_hash, first.end_hash)
    assert outcome.head is not None and outcome.head.end == T0 + 2 * Q
    assert outcome.gaps_opened == [] and outcome.gaps_closed == []


def test_the_first_reading_is_a_baseline_and_measures_nothing() -> None:
    outcome = evaluate(MP, RATING, [], [candidate(0, 0, 100, 0)])
    assert outcome.intervals == []


def test_net_consumption_has_no_surplus() -> None:
    outcome = evaluate(MP, RATING, [point(0, 100, 100)], [candidate(0, 1, 600, 200)])
    [interval] = outcome.intervals
    assert (interval.surplus_wh, interval.consumption_wh) == (0, 400)


def test_a_repeat_is_a_duplicate_and_a_different_value_a_conflict() -> None:
    held = point(1, 150, 900)
    outcome = evaluate(
        MP, RATING, [point(0, 100, 0), held], [candidate(0, 1, 150, 900), candidate(1, 1, 151, 900)]
    )
    assert [(d.position, d.reading_hash) for d in outcome.duplicates] == [(0, held.reading_hash)]
    [conflict] = outcome.refused
    assert (conflict.position, conflict.reason, conflict.existing_hash) == (
        1,
        Reason.CONFLICTING_DUPLICATE,
        held.reading_hash,
    )
    assert outcome.accepted == [] and outcome.intervals == []


def test_the_same_time_twice_in_one_submission() -> None:
    outcome = evaluate(
        MP,
        RATING,
        [point(0, 0, 0)],
        [candidate(0, 1, 10, 0), candidate(1, 1, 10, 0), candidate(2, 1, 11, 0)],
    )
    assert [c.position for c in outcome.accepted] == [0]
    assert [d.position for d in outcome.duplicates] == [1]
    assert [r.reason for r in outcome.refused] == [Reason.CONFLICTING_DUPLICATE]


def test_a_register_going_backwards_is_refused() -> None:
    outcome = evaluate(MP, RATING, [point(0, 500, 500)], [candidate(0, 1, 499, 600)])
    [refused] = outcome.refused
    assert refused.reason == Reason.REGISTER_BACKWARDS
    assert "import_wh 499" in refused.detail


def test_a_late_reading_must_fit_between_its_neighbours() -> None:
    known = [point(0, 100, 100), point(2, 300, 300)]
    too_high = evaluate(MP, RATING, known, [candidate(0, 1, 350, 200)])
    assert [r.reason for r in too_high.refused] == [Reason.REGISTER_BACKWARDS]
    fits = evaluate(MP, RATING, known, [candidate(0, 1, 200, 200)])
    assert [c.position for c in fits.accepted] == [0]
    assert [i.start for i in fits.intervals] == [T0, T0 + Q]


def test_energy_beyond_the_rating_is_implausible_also_across_a_gap() -> None:
    base = [point(0, 0, 0)]
    assert [r.reason for r in evaluate(MP, RATING, base, [candidate(0, 1, 0, 2_001)]).refused] == [
        Reason.IMPLAUSIBLE
    ]
    assert evaluate(MP, RATING, base, [candidate(0, 1, 0, 2_000)]).refused == []
    # Three intervals apart: up to 6,000 Wh.
    assert evaluate(MP, RATING, base, [candidate(0, 3, 6_000, 0)]).refused == []
    assert [r.reason for r in evaluate(MP, RATING, base, [candidate(0, 3, 6_001, 0)]).refused] == [
        Reason.IMPLAUSIBLE
    ]


def test_a_late_reading_is_checked_for_plausibility_against_the_later_one() -> None:
    known = [point(0, 0, 0), point(2, 0, 2_500)]
    refused = evaluate(MP, RATING, known, [candidate(0, 1, 0, 100)]).refused
    assert [r.reason for r in refused] == [Reason.IMPLAUSIBLE]  # 2,400 Wh in the second interval


def test_gaps_are_reported_and_never_filled_in() -> None:
    outcome = evaluate(MP, RATING, [point(0, 0, 0)], [candidate(0, 3, 300, 3_000)])
    assert outcome.intervals == []
    assert outcome.gaps_opened == [Gap(MP, T0, T0 + 3 * Q, 300, 3_000)]
    assert outcome.gaps_opened[0].unmeasured_intervals == 3


def test_a_late_reading_splits_a_gap_and_one_closes_it() -> None:
    known = [point(0, 0, 0), point(3, 300, 3_000)]
    split = evaluate(MP, RATING, known, [candidate(0, 1, 100, 1_000)])
    assert split.gaps_closed == [Gap(MP, T0, T0 + 3 * Q, 300, 3_000)]
    assert split.gaps_opened == [Gap(MP, T0 + Q, T0 + 3 * Q, 200, 2_000)]
    assert [i.start for i in split.intervals] == [T0]
    known = [point(0, 0, 0), point(1, 100, 1_000), point(3, 300, 3_000)]
    filled = evaluate(MP, RATING, known, [candidate(0, 2, 200, 2_000)])
    assert filled.gaps_closed == [Gap(MP, T0 + Q, T0 + 3 * Q, 200, 2_000)]
    assert filled.gaps_opened == []
    assert [i.start for i in filled.intervals] == [T0 + Q, T0 + 2 * Q]


def test_a_refused_reading_is_no_neighbour_for_the_next() -> None:
    outcome = evaluate(
        MP, RATING, [point(0, 100, 0)], [candidate(0, 1, 50, 0), candidate(1, 2, 120, 0)]
    )
    assert [r.position for r in outcome.refused] == [0]
    assert [c.position for c in outcome.accepted] == [1]
    assert outcome.intervals == []  # 1 is missing: a gap, not an interval
    assert [g.start for g in outcome.gaps_opened] == [T0]


@settings(max_examples=300, deadline=None)
@given(
    head=st.none() | st.tuples(st.integers(0, 50), st.integers(0, 10_000), st.integers(0, 10_000)),
    step=st.integers(1, 6),
    rise=st.tuples(st.integers(-50, 20_000), st.integers(-50, 20_000)),
    rating_w=st.sampled_from([1_000, 40_000]),
)
def test_one_reading_after_the_head_is_decided_as_the_general_rules_decide_it(
    head: tuple[int, int, int] | None,
    step: int,
    rise: tuple[int, int],
    rating_w: int,
) -> None:
    """The live case (one reading after the series' latest) has a short path; it decides
    exactly what the general rules decide."""
    base = T0
    held = None if head is None else Point(base + head[0] * Q, head[1], head[2], "a" * 64)
    after = (held.end if held else base) + step * Q
    imports = (held.import_wh if held else 0) + rise[0]
    exports = (held.export_wh if held else 0) + rise[1]
    if imports < 0 or exports < 0:
        return
    reading = SignedReading("dev-1", "MP-1", after, imports, exports, b"\x00" * 64)
    candidate = Candidate(0, reading, "c" * 64)
    known = [] if held is None else [held]
    assert _after_head("MP-1", rating_w, held, candidate) == _in_series(
        "MP-1", rating_w, known, [candidate]
    )
    assert evaluate("MP-1", rating_w, known, [candidate]) == _in_series(
        "MP-1", rating_w, known, [candidate]
    )
