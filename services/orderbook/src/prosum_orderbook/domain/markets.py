"""Markets: one book per 15-minute delivery interval, its id and its trading window.

A market is named by the start of its delivery interval in UTC, ``2026-11-21T14:00Z``: readable,
sortable, and valid as an event subject and Kafka key. It opens ``open_ahead`` before delivery
and closes at gate closure, ``gate_closure`` before delivery; orders still open then expire.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

INTERVAL = timedelta(minutes=15)
_MARKET_ID = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})Z$")


class Mechanism(StrEnum):
    CONTINUOUS = "continuous"
    """Continuous double auction: every order is matched on arrival, price-time priority."""
    CALL_AUCTION = "call_auction"
    """Orders collect until gate closure and clear at one uniform price."""


class MarketIdError(ValueError):
    """Not the id of a 15-minute delivery interval."""


@dataclass(frozen=True, slots=True)
class Fees:
    """What a buyer pays on top of the traded value; settlement collects it for the operator.

    ``operator_fee`` is whole ecoin per trade, charged **once per buy order**, on the trade that
    first fills it: a bid filled in three trades pays it once. A fee per fill could not be covered
    when the bid is placed (how many fills it gets is unknown then), so either the cover check
    would be a promise the book cannot keep or orders would be cut short when fees ran out.
    ``grid_fee_per_kwh`` is in the price unit (milli-ecoin per kWh), charged on every Wh.
    """

    operator_fee: int = 0
    grid_fee_per_kwh: int = 0

    def __post_init__(self) -> None:
        if self.operator_fee < 0 or self.grid_fee_per_kwh < 0:
            raise ValueError("fees cannot be negative")


@dataclass(frozen=True, slots=True)
class Schedule:
    """When markets open and close relative to their delivery interval."""

    open_ahead: timedelta
    gate_closure: timedelta

    def __post_init__(self) -> None:
        if self.gate_closure < timedelta(0):
            raise ValueError("gate closure cannot be after the start of delivery")
        if self.open_ahead <= self.gate_closure:
            raise ValueError("a market must open before its gate closure")

    def window(self, market_id: str) -> MarketWindow:
        start = delivery_start(market_id)
        return MarketWindow(
            market_id=market_id,
            delivery_start=start,
            delivery_end=start + INTERVAL,
            opens_at=start - self.open_ahead,
            gate_closure=start - self.gate_closure,
        )

    def open_markets(self, now: datetime) -> list[str]:
        """Ids of every market open for trading at ``now``, earliest delivery first."""
        first = interval_start(now + self.gate_closure)
        if first - self.gate_closure <= now:
            first += INTERVAL
        ids: list[str] = []
        start = first
        while start - self.open_ahead <= now:
            ids.append(market_id_for(start))
            start += INTERVAL
        return ids


@dataclass(frozen=True, slots=True)
class MarketWindow:
    market_id: str
    delivery_start: datetime
    delivery_end: datetime
    opens_at: datetime
    gate_closure: datetime

    def state_at(self, now: datetime) -> str:
        """``not_open`` before it opens, ``open`` until gate closure, ``closed`` after."""
        if now < self.opens_at:
            return "not_open"
        if now < self.gate_closure:
            return "open"
        return "closed"


def interval_start(moment: datetime) -> datetime:
    """The start of the 15-minute interval containing ``moment`` (UTC)."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    moment = moment.astimezone(UTC)
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def market_id_for(start: datetime) -> str:
    if start.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    start = start.astimezone(UTC)
    if start != interval_start(start):
        raise MarketIdError(f"{start.isoformat()} is not the start of a 15-minute interval")
    return start.strftime("%Y-%m-%dT%H:%MZ")


def delivery_start(market_id: str) -> datetime:
    match = _MARKET_ID.match(market_id)
    if match is None:
        raise MarketIdError(f"{market_id!r} is not a market id like 2026-11-21T14:00Z")
    year, month, day, hour, minute = (int(part) for part in match.groups())
    try:
        start = datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError as exc:
        raise MarketIdError(f"{market_id!r}: {exc}") from None
    if start.minute % 15:
        raise MarketIdError(f"{market_id!r} does not start a 15-minute interval")
    return start


def partition_of(market_id: str, partitions: int) -> int:
    """The command partition of a market: consecutive delivery intervals on consecutive
    partitions, so the markets open at one time (a day's run of intervals) are spread evenly
    over the partitions, and so over the instances that own them. Hashing market ids left some
    partitions with three times the markets of others. A key that is not a market id (none is
    sent) goes by a checksum."""
    try:
        start = delivery_start(market_id)
    except MarketIdError:
        return zlib.crc32(market_id.encode()) % partitions
    return int(start.timestamp()) // 900 % partitions
