"""Exact asset quantities across the JSON-RPC boundary.

MultiChain speaks in display units (``energy`` in kWh with 0.001 resolution, ``ecoin`` in
whole units) while prosum counts integer smallest units (Wh, ecoin). Neither direction may go
through binary floating point, yet both have to pass through JSON numbers:

- Incoming, requests has already parsed the numbers into ``float`` (1.0.9 prints ``495.0``,
  2.x prints ``495``). A double carries any decimal of up to 15 significant digits through
  ``repr`` unchanged, so ``Decimal(repr(x))`` recovers the exact decimal the node printed;
  anything with more digits may have been rounded and is refused.
- Outgoing, Savoir serialises with ``json.dumps``, which cannot write a ``Decimal``. We hand it
  an ``int`` when the quantity is whole and otherwise a ``float`` whose ``repr`` we have checked
  is exactly the decimal we mean, so the text on the wire is exact.
"""

from __future__ import annotations

import math
from decimal import Decimal

from prosum_ledger.adapters.multichain.errors import MultiChainProtocolError

# A double holds 15 significant decimal digits exactly (DBL_DIG).
_EXACT_DIGITS = 15


class UnrepresentableAmount(ValueError):
    """An amount that cannot cross JSON exactly (more than 15 significant digits)."""


def exact_decimal(value: object, what: str) -> Decimal:
    """A quantity the node printed, as the exact decimal it printed."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise MultiChainProtocolError(f"{what}: expected a number, got {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    else:
        if not math.isfinite(value):
            raise MultiChainProtocolError(f"{what}: {value!r} is not a quantity")
        result = Decimal(repr(value))
        if len(result.normalize().as_tuple().digits) > _EXACT_DIGITS:
            raise MultiChainProtocolError(
                f"{what}: {value!r} has more digits than a JSON double carries exactly"
            )
    if not result.is_finite():
        raise MultiChainProtocolError(f"{what}: {value!r} is not a quantity")
    return result


def to_units(quantity: Decimal, decimals: int, what: str) -> int:
    """A display quantity as an integer count of smallest units (10**-decimals each)."""
    scaled = quantity.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise MultiChainProtocolError(
            f"{what}: {quantity} is finer than the asset's unit of 10^-{decimals}"
        )
    return int(scaled)


def to_display(units: int, decimals: int) -> Decimal:
    """An integer count of smallest units as the display quantity MultiChain expects."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"an amount must be an int of smallest units, not {units!r}")
    return Decimal(units).scaleb(-decimals)


def wire_number(quantity: Decimal) -> int | float:
    """``quantity`` as a number ``json.dumps`` writes as exactly that decimal."""
    if not quantity.is_finite():
        raise UnrepresentableAmount(f"{quantity} is not a quantity")
    if quantity == quantity.to_integral_value():
        return int(quantity)
    as_float = float(quantity)
    if Decimal(repr(as_float)) != quantity:
        raise UnrepresentableAmount(f"{quantity} cannot be written as an exact JSON number")
    return as_float
