"""Roles, device kinds, actions, chain permissions and limits: the vocabulary of identity."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from prosum_identity.domain.errors import invalid


class Role(StrEnum):
    PRODUCER = "producer"
    CONSUMER = "consumer"
    PROSUMER = "prosumer"
    # The market operator's own account (it receives fees); it does not trade.
    OPERATOR = "operator"


class DeviceKind(StrEnum):
    SMART_METER = "smart_meter"
    HOME_GATEWAY = "home_gateway"
    EV_CHARGER = "ev_charger"
    BATTERY = "battery"


class Action(StrEnum):
    BID = "bid"
    ASK = "ask"
    SUBMIT_READINGS = "submit_readings"
    READ_DATA = "read_data"


ALL_ACTIONS = frozenset(a.value for a in Action)

# What a participant's role lets its devices do; a threshold grants the DACT's actions that
# the role permits. Every role's meter reports readings (consumption is metered too).
ROLE_ACTIONS: dict[Role, frozenset[str]] = {
    Role.PRODUCER: frozenset({"ask", "submit_readings", "read_data"}),
    Role.CONSUMER: frozenset({"bid", "submit_readings", "read_data"}),
    Role.PROSUMER: ALL_ACTIONS,
    Role.OPERATOR: frozenset({"read_data"}),
}

# Chain permissions per role (Oh et al.: connect,send,receive for every node, energy.issue
# for the nodes that produce).
BASE_PERMISSIONS = ("connect", "send", "receive")
ROLE_PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.PRODUCER: (*BASE_PERMISSIONS, "energy.issue"),
    Role.PROSUMER: (*BASE_PERMISSIONS, "energy.issue"),
    Role.CONSUMER: BASE_PERMISSIONS,
    Role.OPERATOR: BASE_PERMISSIONS,
}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
MAX_ID = 128
MAX_METERING_POINT = 64
MAX_NAME = 200
MAX_REASON = 500
MAX_RATING_W = 100_000_000


def check_id(value: str, what: str) -> str:
    """Ids travel in events and Kafka keys: letters, digits and ``_ . : -``, at most 128."""
    if not (0 < len(value) <= MAX_ID) or not _ID.match(value):
        raise invalid(
            f"{what}_invalid",
            f"{what} must be 1-{MAX_ID} characters of A-Z a-z 0-9 _ . : - "
            "starting with a letter or digit",
        )
    return value


def check_metering_point(value: str) -> str:
    if not (0 < len(value) <= MAX_METERING_POINT) or value != value.strip():
        raise invalid(
            "metering_point_invalid",
            f"metering_point must be 1-{MAX_METERING_POINT} characters without surrounding spaces",
        )
    return value


def check_reason(value: str) -> str:
    if len(value) > MAX_REASON:
        raise invalid("reason_too_long", f"a reason has at most {MAX_REASON} characters")
    return value


@dataclass(frozen=True, slots=True)
class Limits:
    """What one threshold allows: the largest single order (Wh), the most volume in open
    orders (Wh) and the most ecoin one order may be worth. Exact integers."""

    max_order_wh: int
    max_open_wh: int
    max_ecoin: int

    def __post_init__(self) -> None:
        for name in ("max_order_wh", "max_open_wh", "max_ecoin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise invalid("limits_invalid", f"{name} must be a non-negative integer")
        if self.max_order_wh > self.max_open_wh:
            raise invalid("limits_invalid", "max_order_wh cannot exceed max_open_wh")


def aware(moment: datetime) -> datetime:
    """Datetimes in identity's events are always timezone-aware UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
