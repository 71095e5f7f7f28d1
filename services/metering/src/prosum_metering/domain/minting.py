"""When surplus becomes energy on the ledger: once per metering point and interval.

The mint command id is derived from the metering point and the interval, and the ledger
adapter executes a command id at most once; the interval's read-model row (unique per metering
point and interval) records the decision in the same transaction as the command. The decision
is taken once, when the interval is first measured; a later correction of the interval is an
adjustment, never a second mint.
"""

from __future__ import annotations

import hashlib
import re

from prosum_metering.domain.model import MintStatus
from prosum_metering.domain.readings import compact_utc

RECEIVING_ROLES = frozenset({"producer", "prosumer"})
"""Roles identity grants the right to receive minted energy."""

_ID_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def mint_command_id(metering_point: str, interval_start: int) -> str:
    """``mint:<metering point>:<YYYYMMDDTHHMMZ>``; a metering point that cannot appear in a
    command id as it is (the ledger allows ``[A-Za-z0-9_.:-]``) is replaced by ``h`` and the
    first 40 hex digits of its SHA-256."""
    key = metering_point
    if not _ID_SAFE.match(metering_point) or ":" in metering_point:
        key = "h" + hashlib.sha256(metering_point.encode()).hexdigest()[:40]
    return f"mint:{key}:{compact_utc(interval_start)}"


def mint_decision(surplus_wh: int, role: str | None, status: str | None) -> MintStatus:
    """What to do with an interval's surplus, given the owner's role and status in identity.

    A participant identity has not activated yet (or suspended) gets its mints once it is
    active: the ledger would refuse them before its permissions are granted, and a refused
    command id cannot be used again.
    """
    if surplus_wh <= 0:
        return MintStatus.NONE
    if status == "closed" or (role is not None and role not in RECEIVING_ROLES):
        return MintStatus.NOT_ELIGIBLE
    if status != "active" or role is None:
        return MintStatus.DEFERRED
    return MintStatus.ISSUED
