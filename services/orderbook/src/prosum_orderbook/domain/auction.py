"""The uniform-price call auction: one clearing price for everything that trades.

At a candidate price ``p``, demand ``D(p)`` is the quantity of bids priced at ``p`` or above and
supply ``S(p)`` the quantity of asks priced at ``p`` or below; ``min(D, S)`` can execute. The
candidates are the limit prices in the book. The clearing price is chosen by, in turn:

1. the largest executable volume;
2. then the smallest imbalance ``|D(p) - S(p)|``;
3. then market pressure: if buyers are left over at every remaining candidate, the highest of
   them; if sellers are left over at every one, the lowest; otherwise (no surplus, or surplus on
   both sides) the midpoint of the lowest and the highest remaining candidate, rounded down to
   the tick.

The midpoint keeps the largest volume: ``D`` only falls and ``S`` only rises with the price, so
every price between two candidates of volume ``V`` also has ``D >= V`` and ``S >= V``. Orders
then execute in price-time priority (bids from the highest, asks from the lowest, earlier before
later at one price) until that volume is reached, all at the clearing price.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True, slots=True)
class Clearing:
    price: int | None
    """None when nothing crosses."""
    volume_wh: int
    imbalance_wh: int
    """``D - S`` at the clearing price (0 when nothing crosses)."""


def clear(bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]]) -> Clearing:
    """Clearing price and volume for bid and ask quantities per price, ``(price, quantity)``."""
    if not bids or not asks:
        return Clearing(None, 0, 0)
    bid_prices = sorted({p for p, _ in bids})
    ask_prices = sorted({p for p, _ in asks})
    bid_qty = dict.fromkeys(bid_prices, 0)
    for price, quantity in bids:
        bid_qty[price] += quantity
    ask_qty = dict.fromkeys(ask_prices, 0)
    for price, quantity in asks:
        ask_qty[price] += quantity
    # demand_from[i]: bids at bid_prices[i] or above; supply_to[i]: asks at ask_prices[i] or below
    demand_from = list(accumulate(bid_qty[p] for p in reversed(bid_prices)))[::-1]
    supply_to = list(accumulate(ask_qty[p] for p in ask_prices))

    def demand(price: int) -> int:
        i = bisect_left(bid_prices, price)
        return demand_from[i] if i < len(bid_prices) else 0

    def supply(price: int) -> int:
        i = bisect_right(ask_prices, price)
        return supply_to[i - 1] if i else 0

    best: list[tuple[int, int, int]] = []  # (price, D, S) of the candidates still in the running
    best_volume, best_imbalance = 0, 0
    for price in sorted(set(bid_prices) | set(ask_prices)):
        d, s = demand(price), supply(price)
        volume, imbalance = min(d, s), abs(d - s)
        if volume == 0:
            continue
        if volume > best_volume or (volume == best_volume and imbalance < best_imbalance):
            best, best_volume, best_imbalance = [(price, d, s)], volume, imbalance
        elif volume == best_volume and imbalance == best_imbalance:
            best.append((price, d, s))
    if not best:
        return Clearing(None, 0, 0)
    if all(d > s for _, d, s in best):
        price, d, s = best[-1]
    elif all(d < s for _, d, s in best):
        price, d, s = best[0]
    else:
        price = (best[0][0] + best[-1][0]) // 2
        d, s = demand(price), supply(price)
    return Clearing(price, min(d, s), d - s)
