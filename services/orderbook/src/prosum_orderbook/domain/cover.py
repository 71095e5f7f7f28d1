"""Pre-trade cover: what an open order and an unsettled trade hold back from a balance.

An ask reserves the energy it offers (its remaining Wh). A bid reserves the ecoin its remaining
quantity can cost: the value at its limit price plus the grid fee, plus the operator fee until
its first trade has paid it (see ``Fees``). A trade, from execution until its settlement is
reflected in the balances (or it failed), reserves the seller's Wh and the buyer's value plus
fee. Every fill moves reservation from the order to the trade and never adds to it: the trade
costs at most what the filled part reserved (it trades at the limit price or better, and values
and fees round down, ``floor(a) + floor(b) <= floor(a + b)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from prosum_orderbook.domain.markets import Fees
from prosum_orderbook.domain.orders import SELL
from prosum_orderbook.domain.units import grid_fee, trade_value


@dataclass(frozen=True, slots=True)
class Reservation:
    energy_wh: int = 0
    ecoin: int = 0


def order_reservation(
    side: str, remaining_wh: int, price: int, fee_charged: bool, fees: Fees
) -> Reservation:
    """What an open order with ``remaining_wh`` left holds back."""
    if remaining_wh <= 0:
        return Reservation()
    if side == SELL:
        return Reservation(energy_wh=remaining_wh)
    ecoin = trade_value(remaining_wh, price) + grid_fee(remaining_wh, fees.grid_fee_per_kwh)
    if not fee_charged:
        ecoin += fees.operator_fee
    return Reservation(ecoin=ecoin)


def open_value(side: str, remaining_wh: int, price: int) -> int:
    """The ecoin value an open bid still commits, fees excluded: what a threshold's
    ``max_ecoin`` bounds. Asks commit none."""
    if side == SELL or remaining_wh <= 0:
        return 0
    return trade_value(remaining_wh, price)
