"""Domain events become stored payloads and come back exact, through upcasters when old."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import ClassVar

import pytest

from prosum_platform.codec import EventCodec
from prosum_platform.domain import DomainEvent


@dataclass(frozen=True, kw_only=True)
class PriceSet(DomainEvent):
    event_type: ClassVar[str] = "PriceSet"
    schema_version: ClassVar[int] = 2
    price: Decimal
    at: datetime
    limits: tuple[Decimal, ...] = ()
    note: str | None = None


def codec() -> EventCodec:
    c = EventCodec().register(PriceSet)

    @c.upcaster("PriceSet", 1)
    def _v1_to_v2(payload: dict[str, object]) -> dict[str, object]:
        # v1 had the price in hundredths as an integer
        cents = payload.pop("price_cents")
        assert isinstance(cents, int)
        return {**payload, "price": str(Decimal(cents) / 100)}

    return c


def test_decimals_and_datetimes_round_trip_exactly() -> None:
    event = PriceSet(
        price=Decimal("0.1"), at=datetime(2026, 11, 21, tzinfo=UTC), limits=(Decimal("1.005"),)
    )
    name, version, payload = codec().encode(event)
    assert (name, version) == ("PriceSet", 2)
    assert payload["price"] == "0.1"
    assert codec().decode(name, version, payload) == event


def test_old_payloads_are_upcast() -> None:
    old = {"price_cents": 1234, "at": "2026-11-21T00:00:00+00:00", "limits": [], "note": None}
    event = codec().decode("PriceSet", 1, old)
    assert isinstance(event, PriceSet)
    assert event.price == Decimal("12.34")


def test_floats_are_refused() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Sloppy(DomainEvent):
        event_type: ClassVar[str] = "Sloppy"
        amount: float

    with pytest.raises(TypeError, match="floats"):
        EventCodec().register(Sloppy).encode(Sloppy(amount=0.1))


def test_unknown_types_and_missing_upcasters_are_errors() -> None:
    with pytest.raises(LookupError):
        codec().decode("Nope", 1, {})
    bare = EventCodec().register(PriceSet)
    with pytest.raises(LookupError, match="upcaster"):
        bare.decode("PriceSet", 1, {})
