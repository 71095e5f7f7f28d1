"""Units of the order book: quantities in Wh, prices as integers, money in whole ecoin.

Quantities are whole Wh, the resolution of the ``energy`` token. Prices arrive as exact decimals
in ecoin per kWh (``"0.245"``, ``"240"``; never floats) and are kept as integers in the book's
price unit, **milli-ecoin per kWh** (= ecoin per MWh): one tick is 0.001 ecoin/kWh, and a price
with more decimals than that is refused rather than rounded. Integer prices make levels exact
dictionary keys and comparisons cheap.

Money is whole ecoin (the token's unit). A trade of ``q`` Wh at ``p`` milli-ecoin/kWh is worth
``q * p / 1_000_000`` ecoin, rounded **down**: the buyer never pays more than the exact value and
the seller loses less than one ecoin per trade. Rounding down is also what keeps a bid's
reservation sufficient however it is split into fills, because
``floor(a) + floor(b) <= floor(a + b)``. The grid fee per kWh is computed the same way.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PRICE_SCALE = 1000
"""Price units per ecoin/kWh: prices are integers in milli-ecoin per kWh."""
VALUE_DIVISOR = 1000 * PRICE_SCALE
"""Wh x (milli-ecoin/kWh) / VALUE_DIVISOR = ecoin."""

MAX_PRICE = 1_000_000 * PRICE_SCALE
"""The highest accepted limit price: one million ecoin per kWh."""
MAX_QUANTITY_WH = 1_000_000_000
"""The largest order: 1 GWh."""


class PriceError(ValueError):
    """A price that is not an exact, positive decimal on the tick grid."""


def parse_rate(text: str | Decimal) -> int:
    """Exact decimal ecoin/kWh -> integer milli-ecoin/kWh (zero allowed: fees); refuses floats,
    NaN, negatives and anything off the tick."""
    try:
        value = Decimal(text) if isinstance(text, str) else text
    except InvalidOperation:
        raise PriceError(f"{text!r} is not a decimal number") from None
    if not value.is_finite():
        raise PriceError(f"{text!r} is not a finite number")
    scaled = value * PRICE_SCALE
    if scaled != scaled.to_integral_value():
        raise PriceError(f"{text} has more decimals than the tick of 0.001 ecoin/kWh")
    rate = int(scaled)
    if rate < 0:
        raise PriceError(f"{text} is negative")
    return rate


def parse_price(text: str | Decimal) -> int:
    """A limit price: like ``parse_rate``, and positive and at most ``MAX_PRICE``."""
    price = parse_rate(text)
    if price == 0:
        raise PriceError("a limit price must be positive")
    if price > MAX_PRICE:
        raise PriceError(f"a limit price may not exceed {format_price(MAX_PRICE)} ecoin/kWh")
    return price


def format_price(price: int) -> str:
    """Integer milli-ecoin/kWh -> the shortest exact decimal string in ecoin/kWh."""
    whole, fraction = divmod(price, PRICE_SCALE)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:03d}".rstrip("0")


def trade_value(quantity_wh: int, price: int) -> int:
    """Ecoin a buyer pays for ``quantity_wh`` at ``price`` (rounded down)."""
    return quantity_wh * price // VALUE_DIVISOR


def grid_fee(quantity_wh: int, grid_fee_per_kwh: int) -> int:
    """The grid fee for ``quantity_wh``; ``grid_fee_per_kwh`` is in the price unit."""
    return quantity_wh * grid_fee_per_kwh // VALUE_DIVISOR
