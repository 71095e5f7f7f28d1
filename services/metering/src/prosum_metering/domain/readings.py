"""The signed meter reading: its fields, the exact bytes a device signs, and its hash.

A reading is the state of a meter's two cumulative registers at the end of a 15-minute
interval, in integer watt-hours:

- ``import_wh``: OBIS 1-0:1.8.0, energy taken from the grid since the meter was installed;
- ``export_wh``: OBIS 1-0:2.8.0, energy fed into the grid.

The device signs, with its Ed25519 key, the UTF-8 bytes of six lines joined by ``\\n`` (no
trailing newline)::

    prosum-reading-v1
    <device_id>
    <metering_point>
    <interval_end as YYYY-MM-DDTHH:MM:SSZ>
    <import_wh in decimal, no sign, no leading zeros>
    <export_wh in decimal, no sign, no leading zeros>

The reading hash, which names a reading everywhere (the "hash address" under which it is
served, and the leaf of its batch's Merkle tree), is
``SHA-256(0x00 || canonical bytes || 64-byte signature)``, in lowercase hex. It commits to the
values and to the device's signature, so a proof of inclusion is also a proof of origin.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

INTERVAL_S = 900
"""Length of a market and metering interval: 15 minutes."""

MAX_REGISTER_WH = 10**15
"""Largest register value accepted (a petawatt-hour: far beyond any meter, within int64)."""

EARLIEST_END_S = 946_684_800
"""2000-01-01T00:00:00Z: readings from before it are refused as malformed."""

SIGNATURE_VERSION = "prosum-reading-v1"
LEAF_PREFIX = b"\x00"

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_DIGITS = re.compile(r"^(0|[1-9][0-9]*)$")
_B64URL_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{85}[AQgw]$")


class Rejection(Exception):
    """A reading was refused; ``reason`` is a stable code for clients, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Reason:
    """The stable reason codes of refused readings (also in the OpenAPI description)."""

    MALFORMED = "malformed"
    OFF_GRID = "off_grid"
    IN_FUTURE = "in_future"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_REVOKED = "device_revoked"
    WRONG_METERING_POINT = "wrong_metering_point"
    NOT_COVERED = "not_covered_by_threshold"
    SIGNATURE_INVALID = "signature_invalid"
    REGISTER_BACKWARDS = "register_backwards"
    IMPLAUSIBLE = "implausible"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


# Readings of one submission share few distinct times (a live batch: one), so formatting and
# parsing are cached: they were the largest cost of ingestion after the signature.
@functools.lru_cache(maxsize=8192)
def format_utc(epoch_s: int) -> str:
    """Seconds since the epoch as the canonical ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=8192)
def compact_utc(epoch_s: int) -> str:
    """``YYYYMMDDTHHMMZ``: an interval time inside identifiers."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y%m%dT%H%MZ")


@functools.lru_cache(maxsize=8192)
def parse_utc(text: str) -> tuple[int, bool]:
    """An RFC 3339 UTC timestamp as (whole epoch seconds, has a non-zero fraction).

    Only UTC is accepted (``Z`` or ``+00:00``): the grid and the signed form are in UTC, and a
    local offset is where a meter's daylight-saving bug hides.
    """
    match = _TIMESTAMP.match(text)
    if match is None:
        raise Rejection(Reason.MALFORMED, f"interval_end {text!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone not in ("Z", "z", "+00:00", "-00:00"):
        raise Rejection(Reason.MALFORMED, f"interval_end {text!r} is not in UTC")
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as exc:
        raise Rejection(Reason.MALFORMED, f"interval_end {text!r}: {exc}") from None
    has_fraction = fraction is not None and fraction.strip(".0") != ""
    return int(moment.timestamp()), has_fraction


def canonical_message(
    device_id: str, metering_point: str, interval_end_s: int, import_wh: int, export_wh: int
) -> bytes:
    """The exact bytes a device signs (see the module docstring)."""
    return "\n".join(
        (
            SIGNATURE_VERSION,
            device_id,
            metering_point,
            format_utc(interval_end_s),
            str(import_wh),
            str(export_wh),
        )
    ).encode()


def leaf_hash(message: bytes, signature: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + message + signature).digest()


@dataclass(frozen=True, slots=True)
class SignedReading:
    device_id: str
    metering_point: str
    interval_end: int
    """Seconds since the epoch, UTC, a multiple of 900."""
    import_wh: int
    export_wh: int
    signature: bytes
    """64 raw bytes of Ed25519 signature over ``message()``."""

    def message(self) -> bytes:
        return canonical_message(
            self.device_id, self.metering_point, self.interval_end, self.import_wh, self.export_wh
        )

    def hash(self) -> str:
        return leaf_hash(self.message(), self.signature).hex()

    @property
    def interval_start(self) -> int:
        return self.interval_end - INTERVAL_S

    def same_values(self, import_wh: int, export_wh: int) -> bool:
        return self.import_wh == import_wh and self.export_wh == export_wh


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "==")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _text(raw: dict[str, object], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise Rejection(Reason.MALFORMED, f"{name} must be a string")
    return value


def _register(value: object, name: str, *, from_text: bool) -> int:
    if from_text:
        if not isinstance(value, str) or not _DIGITS.match(value):
            raise Rejection(Reason.MALFORMED, f"{name} {value!r} is not a whole number of Wh")
        number = int(value)
    else:
        # bool is an int in Python, and 1.0 is not an exact Wh count: both are refused.
        if isinstance(value, bool) or not isinstance(value, int):
            raise Rejection(Reason.MALFORMED, f"{name} must be an integer number of Wh")
        number = value
    if not 0 <= number <= MAX_REGISTER_WH:
        raise Rejection(Reason.MALFORMED, f"{name} {number} is outside 0..{MAX_REGISTER_WH}")
    return number


FIELDS = ("device_id", "metering_point", "interval_end", "import_wh", "export_wh", "signature")
_FIELD_SET = frozenset(FIELDS)


def parse_reading(raw: object, *, from_text: bool = False) -> SignedReading:
    """Check one submitted reading's shape and turn it into a ``SignedReading``.

    ``from_text``: the registers come as decimal strings (a CSV row) instead of JSON integers.
    Grid and time rules are checked by ``check_time``; signature and series rules later.
    """
    if not isinstance(raw, dict):
        raise Rejection(Reason.MALFORMED, "a reading must be an object")
    if raw.keys() != _FIELD_SET:
        unknown = set(raw) - _FIELD_SET
        if unknown:
            raise Rejection(Reason.MALFORMED, f"unknown fields {sorted(unknown)}")
        missing = [name for name in FIELDS if name not in raw]
        raise Rejection(Reason.MALFORMED, f"missing fields {missing}")
    device_id = _text(raw, "device_id")
    if not DEVICE_ID.match(device_id):
        raise Rejection(Reason.MALFORMED, f"device_id {device_id!r} is not a valid device id")
    metering_point = _text(raw, "metering_point")
    if not 1 <= len(metering_point) <= 64 or _CONTROL.search(metering_point):
        raise Rejection(Reason.MALFORMED, "metering_point must be 1-64 printable characters")
    end_s, has_fraction = parse_utc(_text(raw, "interval_end"))
    import_wh = _register(raw["import_wh"], "import_wh", from_text=from_text)
    export_wh = _register(raw["export_wh"], "export_wh", from_text=from_text)
    signature_text = _text(raw, "signature")
    if not _B64URL_SIGNATURE.match(signature_text):
        raise Rejection(Reason.MALFORMED, "signature must be 64 bytes in base64url without padding")
    if has_fraction:
        raise Rejection(Reason.OFF_GRID, "interval_end has a fraction of a second")
    return SignedReading(
        device_id=device_id,
        metering_point=metering_point,
        interval_end=end_s,
        import_wh=import_wh,
        export_wh=export_wh,
        signature=_b64url_decode(signature_text),
    )


def check_time(reading: SignedReading, now_s: float, skew_s: int) -> None:
    """The interval end sits on the 15-minute grid, after 2000, and not in the future.

    ``skew_s`` tolerates a meter clock slightly ahead of ours; beyond it the reading claims to
    measure time that has not passed yet.
    """
    end = reading.interval_end
    if end % INTERVAL_S:
        raise Rejection(
            Reason.OFF_GRID, f"interval_end {format_utc(end)} is not on the 15-minute grid"
        )
    if end < EARLIEST_END_S:
        raise Rejection(Reason.MALFORMED, f"interval_end {format_utc(end)} is before 2000")
    if end > now_s + skew_s:
        raise Rejection(Reason.IN_FUTURE, f"interval_end {format_utc(end)} is in the future")


def reading_as_dict(reading: SignedReading) -> dict[str, object]:
    """The wire form of a reading (what a device sends and what is served back)."""
    return {
        "device_id": reading.device_id,
        "metering_point": reading.metering_point,
        "interval_end": format_utc(reading.interval_end),
        "import_wh": reading.import_wh,
        "export_wh": reading.export_wh,
        "signature": b64url(reading.signature),
    }
