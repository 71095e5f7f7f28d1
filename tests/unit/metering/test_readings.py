"""The signed reading: its exact signed bytes, its hash, and every way its shape can be wrong."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from prosum_metering.domain.readings import (
    Reason,
    Rejection,
    check_time,
    parse_reading,
)
from tests.unit.metering.meters import Meter, signed_bytes

END = 1_780_000_200  # 2026-05-28T20:30:00Z, on the grid
NOW = END + 3600


@pytest.fixture
def meter() -> Meter:
    return Meter("dev-1", "MP-0001", "p-1")


def reason(raw: Any, *, from_text: bool = False, now: float = NOW) -> str:
    with pytest.raises(Rejection) as refused:
        check_time(parse_reading(raw, from_text=from_text), now, 30)
    return refused.value.reason


def test_the_signed_bytes_and_the_hash_are_exactly_as_documented(meter: Meter) -> None:
    raw = meter.reading(END, 12_345, 0)
    reading = parse_reading(raw)
    assert reading.message() == (
        b"prosum-reading-v1\ndev-1\nMP-0001\n2026-05-28T20:30:00Z\n12345\n0"
    )
    expected = hashlib.sha256(b"\x00" + reading.message() + reading.signature).hexdigest()
    assert reading.hash() == expected
    meter.key.public_key().verify(
        reading.signature, signed_bytes("dev-1", "MP-0001", END, 12_345, 0)
    )


def test_an_offset_of_zero_is_signed_in_the_canonical_z_form(meter: Meter) -> None:
    raw = meter.reading(END, 1, 2, interval_end="2026-05-28T20:30:00+00:00")
    assert parse_reading(raw).message() == parse_reading(meter.reading(END, 1, 2)).message()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"import_wh": 1.0}, "float register"),
        ({"import_wh": True}, "bool register"),
        ({"import_wh": "10"}, "string register in JSON"),
        ({"export_wh": -1}, "negative register"),
        ({"export_wh": 10**15 + 1}, "register beyond the limit"),
        ({"device_id": ""}, "empty device"),
        ({"device_id": "dev 1"}, "space in device id"),
        ({"metering_point": "MP\n1"}, "control character"),
        ({"metering_point": "x" * 65}, "metering point too long"),
        ({"interval_end": "2026-05-28 20:30"}, "not RFC 3339"),
        ({"interval_end": "2026-05-28T21:30:00+01:00"}, "not UTC"),
        ({"interval_end": "2026-02-30T00:00:00Z"}, "no such date"),
        ({"signature": "abc"}, "short signature"),
        ({"signature": "A" * 85 + "B"}, "non-canonical base64 tail"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_malformed_readings_are_refused(meter: Meter, change: dict[str, Any], why: str) -> None:
    assert reason(meter.reading(END, 10, 0) | change) == Reason.MALFORMED, why


def test_a_missing_field_and_a_non_object_are_malformed(meter: Meter) -> None:
    raw = meter.reading(END, 10, 0)
    del raw["signature"]
    assert reason(raw) == Reason.MALFORMED
    assert reason([1, 2]) == Reason.MALFORMED


def test_csv_registers_are_plain_decimal_integers(meter: Meter) -> None:
    raw = {k: str(v) for k, v in meter.reading(END, 10, 0).items()}
    assert parse_reading(raw, from_text=True).import_wh == 10
    for bad in ("1.0", "+1", "01", "1e3", " 1", ""):
        assert reason(raw | {"import_wh": bad}, from_text=True) == Reason.MALFORMED, bad


@pytest.mark.parametrize(
    "end",
    [
        "2026-05-28T20:31:00Z",
        "2026-05-28T20:30:01Z",
        "2026-05-28T20:30:00.5Z",
        "2026-05-28T20:07:00Z",
    ],
)
def test_times_off_the_15_minute_grid_are_refused(meter: Meter, end: str) -> None:
    assert reason(meter.reading(END, 10, 0, interval_end=end)) == Reason.OFF_GRID


def test_a_zero_fraction_is_on_the_grid(meter: Meter) -> None:
    parse_reading(meter.reading(END, 10, 0, interval_end="2026-05-28T20:30:00.000Z"))


def test_a_reading_from_the_future_is_refused_beyond_the_clock_skew(meter: Meter) -> None:
    assert reason(meter.reading(END, 10, 0), now=END - 31) == Reason.IN_FUTURE
    check_time(parse_reading(meter.reading(END, 10, 0)), END - 29, 30)  # within the skew


def test_readings_from_before_2000_are_refused(meter: Meter) -> None:
    assert reason(meter.reading(900_000_000, 10, 0)) == Reason.MALFORMED
