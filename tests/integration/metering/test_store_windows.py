"""``SqlMeteringStore.windows`` (the neighbours of late readings, read for many metering points
at once) returns exactly what reading each point on its own returns: the readings from the
first to the last end, plus the one just before and the one just after, whatever the gaps,
spans and clusters (hypothesis, on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prosum_metering.adapters.store import SqlMeteringStore
from prosum_metering.adapters.tables import readings
from prosum_metering.domain.readings import INTERVAL_S
from prosum_metering.domain.series import Point
from tests.integration.metering.harness import Metering

BASE = 1_700_000_100 // INTERVAL_S * INTERVAL_S
POINTS = [f"MP-W{i}" for i in range(6)]

series_strategy = st.dictionaries(
    st.sampled_from(POINTS),
    st.sets(st.integers(0, 400), min_size=0, max_size=40),
    min_size=1,
)


def _hash(mp: str, k: int) -> str:
    return f"{mp}-{k}-".ljust(64, "0")


def _naive(held: list[int], first: int, last: int) -> list[int]:
    before = [e for e in held if e < first][-1:]
    inside = [e for e in held if first <= e <= last]
    after = [e for e in held if e > last][:1]
    return before + inside + after


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), held=series_strategy)
def test_windows_equal_each_points_own_window(
    metering: Metering, data: st.DataObject, held: dict[str, set[int]]
) -> None:
    with metering.store.transaction() as tx:
        tx.conn.execute(readings.delete())
        rows = [
            {
                "reading_hash": _hash(mp, k),
                "metering_point": mp,
                "interval_end": BASE + k * INTERVAL_S,
                "device_id": f"dev-{mp}",
                "participant_id": "p",
                "import_wh": k,
                "export_wh": 2 * k,
                "signature": "sig",
                "submission_id": "s",
                "batch_id": None,
                "received_at": datetime.now(UTC),
            }
            for mp, ks in held.items()
            for k in ks
        ]
        if rows:
            tx.conn.execute(readings.insert(), rows)
    spans: dict[str, tuple[int, int]] = {}
    for mp in held:
        first = data.draw(st.integers(-5, 405), label=f"first {mp}")
        length = data.draw(st.sampled_from([0, 0, 1, 3, 9, 60]), label=f"length {mp}")
        spans[mp] = (BASE + first * INTERVAL_S, BASE + (first + length) * INTERVAL_S)
    with metering.store.transaction() as tx:
        found = SqlMeteringStore(tx).windows(spans)
    assert set(found) == set(spans)
    for mp, (first, last) in spans.items():
        ends = sorted(BASE + k * INTERVAL_S for k in held[mp])
        assert [p.end for p in found[mp]] == _naive(ends, first, last), mp
        for point in found[mp]:
            k = (point.end - BASE) // INTERVAL_S
            assert point == Point(point.end, k, 2 * k, _hash(mp, k))
