"""What the orderbook learns from other services: balances, settlement outcomes, suspensions.

**Balances** come from ``ledger.balance_changed``: the chain balances after each confirmed
command, with the block they are from. Older blocks than the one held are ignored.

**A settled trade's reservation is released only once the balance held reflects it.** The
ledger's balance event and settlement's ``trade_settled`` travel on different topics and may
arrive in either order. Releasing on ``trade_settled`` while the balance held is still from
before the settlement block would count the sold energy (or the spent ecoin) as free for a
moment, and a participant could sell it again. So each side of a settled trade stays reserved
until that side's balance is from the settlement block or later: released at once when it
already is, else by the balance event that brings it.

**A failed trade** releases both sides at once: nothing moved on chain.

**Payouts** burn ecoin, so the order book is asked first. When ops approves one
(``settlement.payout_approved``), its amount is reserved if that much is free, like a bid's
cover, and ``orderbook.payout_cover_held`` tells settlement to burn it; otherwise
``orderbook.payout_cover_refused`` fails it. The reservation is released as a settled trade's
is: once the balance held is from the burn's block (``settlement.payout_completed``), or at
once when the payout failed.

**Reconciliation.** Settlement's reconciliation job has the ledger report chain balances
(``ledger.balances_reported``); the order book compares them with the balances its cover
checks use and reports the differences (``orderbook.reconciliation_completed``), as settlement
does for its own projection.

**A suspended or closed participant** has its open orders cancelled (the verifier already
refuses its thresholds, so it cannot place new ones).
"""

from __future__ import annotations

import logging
from typing import Any

from prosum_contracts import format_timestamp
from prosum_orderbook.application.messages import (
    CANCEL_ORDER,
    PAYOUT_COVER_HELD,
    PAYOUT_COVER_REFUSED,
    RECONCILIATION_COMPLETED,
)
from prosum_orderbook.application.ports import Clock, OrderbookStore, PayoutHold, TradeRecord
from prosum_orderbook.domain.book import PARTICIPANT_SUSPENDED

log = logging.getLogger(__name__)

EXECUTED = "executed"
SETTLED = "settled"
FAILED = "failed"


def balance_changed(store: OrderbookStore, data: dict[str, Any]) -> None:
    participant = data["participant_id"]
    block = int(data["block"])
    if not store.record_balance(participant, int(data["energy_wh"]), int(data["ecoin"]), block):
        return
    for trade in store.trades_to_release(participant, block):
        _release_reflected(store, trade, participant, block)
        store.update_trade(trade)
    for hold in store.payout_holds_to_release(participant, block):
        _release_payout(store, hold)


def payout_approved(store: OrderbookStore, data: dict[str, Any]) -> None:
    """Hold the payout's ecoin out of the free balance, or refuse it if that much is not free
    (open bids and unsettled purchases hold it). Once per payout: settlement asking again (no
    answer reached it) gets the decision made the first time."""
    request_id, participant = data["request_id"], data["participant_id"]
    amount = int(data["amount"])
    base = {"request_id": request_id, "participant_id": participant, "amount": amount}
    known = store.payout_hold(request_id)
    if known is not None:
        if known.status == "refused":
            account = store.account(participant)
            free_now = account.free_ecoin if account is not None else 0
            answer = {**base, "reason": "insufficient_ecoin", "free_ecoin": free_now}
            store.publish(PAYOUT_COVER_REFUSED, request_id, answer)
        else:  # held, or released since (settlement ignores it then)
            store.publish(PAYOUT_COVER_HELD, request_id, base)
        return
    free = store.reserve_free_ecoin(participant, amount)
    held = free is not None and free >= amount
    store.save_payout_hold(
        PayoutHold(request_id, participant, amount, "held" if held else "refused")
    )
    if held:
        store.publish(PAYOUT_COVER_HELD, request_id, base)
    else:
        store.publish(
            PAYOUT_COVER_REFUSED,
            request_id,
            {**base, "reason": "insufficient_ecoin", "free_ecoin": free or 0},
        )


def payout_completed(store: OrderbookStore, data: dict[str, Any]) -> None:
    """Burned: released once the balance held is from the burn's block."""
    hold = store.payout_hold(data["request_id"])
    if hold is None or hold.status != "held" or hold.release_block is not None:
        return
    hold.release_block = int(data["block"])
    account = store.locked_accounts([hold.participant_id]).get(hold.participant_id)
    if account is not None and account.block >= hold.release_block:
        _release_payout(store, hold)
    else:
        store.save_payout_hold(hold)


def payout_failed(store: OrderbookStore, data: dict[str, Any]) -> None:
    """Nothing was burned: released at once."""
    hold = store.payout_hold(data["request_id"])
    if hold is not None and hold.status == "held":
        _release_payout(store, hold)


def _release_payout(store: OrderbookStore, hold: PayoutHold) -> None:
    store.adjust_reserved(hold.participant_id, 0, -hold.amount)
    hold.status = "released"
    store.save_payout_hold(hold)


def balances_reported(store: OrderbookStore, data: dict[str, Any], clock: Clock) -> None:
    """Compare the chain's balances at the reported block with those held. A balance held
    from a later block cannot be compared (skipped); one from an earlier block is still the
    current balance, and one never reported counts as zero."""
    run_id = data["command_id"].removeprefix("reconcile-")
    block = int(data["block"])
    held = store.balances_of([row["participant_id"] for row in data["balances"]])
    differences: list[dict[str, Any]] = []
    skipped = 0
    for row in data["balances"]:
        energy, ecoin, seen_block = held.get(row["participant_id"], (0, 0, -1))
        if seen_block > block:
            skipped += 1
            continue
        if (energy, ecoin) != (int(row["energy_wh"]), int(row["ecoin"])):
            differences.append(
                {
                    "participant_id": row["participant_id"],
                    "projected_energy_wh": energy,
                    "projected_ecoin": ecoin,
                    "chain_energy_wh": int(row["energy_wh"]),
                    "chain_ecoin": int(row["ecoin"]),
                }
            )
    checked = len(data["balances"])
    if not store.record_reconciliation(run_id, block, checked, skipped, differences, clock()):
        return  # this run's report was compared already
    store.publish(
        RECONCILIATION_COMPLETED,
        run_id,
        {
            "run_id": run_id,
            "block": block,
            "checked": checked,
            "skipped": skipped,
            "differences": differences,
        },
    )
    if differences:
        log.warning(
            "orderbook: reconciliation %s at block %d: %d of %d participants' balances differ "
            "from the chain; cover checks use the balances held",
            run_id,
            block,
            len(differences),
            checked,
        )


def _release_reflected(
    store: OrderbookStore, trade: TradeRecord, participant: str, block: int
) -> None:
    """Release the sides of a settled trade that ``participant``'s balance at ``block``
    reflects."""
    if (
        trade.seller == participant
        and trade.seller_release_block is not None
        and trade.seller_release_block <= block
    ):
        store.adjust_reserved(participant, -trade.seller_reserved_wh, 0)
        trade.seller_reserved_wh = 0
        trade.seller_release_block = None
    if (
        trade.buyer == participant
        and trade.buyer_release_block is not None
        and trade.buyer_release_block <= block
    ):
        store.adjust_reserved(participant, 0, -trade.buyer_reserved_ecoin)
        trade.buyer_reserved_ecoin = 0
        trade.buyer_release_block = None


def trade_settled(store: OrderbookStore, data: dict[str, Any]) -> None:
    trade = store.trade(data["trade_id"])
    if trade is None:
        log.warning("orderbook: settlement of unknown trade %s ignored", data["trade_id"])
        return
    if trade.status != EXECUTED:
        log.info("orderbook: trade %s already %s; outcome ignored", trade.trade_id, trade.status)
        return
    block = int(data["block"])
    trade.status = SETTLED
    trade.settled_block = block
    trade.tx_id = data["tx_id"]
    trade.seller_release_block = block
    trade.buyer_release_block = block
    # Locked: a balance event of the settlement block applied at the same moment (on another
    # instance) either shows here, or waits and then finds the release block set.
    held = store.locked_accounts(sorted({trade.seller, trade.buyer}))
    for participant in (trade.seller, trade.buyer):
        account = held.get(participant)
        if account is not None and account.block >= block:
            _release_reflected(store, trade, participant, block)
    store.update_trade(trade)


def trade_failed(store: OrderbookStore, data: dict[str, Any]) -> None:
    trade = store.trade(data["trade_id"])
    if trade is None:
        log.warning("orderbook: failure of unknown trade %s ignored", data["trade_id"])
        return
    if trade.status != EXECUTED:
        log.info("orderbook: trade %s already %s; outcome ignored", trade.trade_id, trade.status)
        return
    trade.status = FAILED
    trade.failure_reason = data["reason"]
    store.adjust_reserved(trade.seller, -trade.seller_reserved_wh, 0)
    store.adjust_reserved(trade.buyer, 0, -trade.buyer_reserved_ecoin)
    trade.seller_reserved_wh = 0
    trade.buyer_reserved_ecoin = 0
    trade.seller_release_block = None
    trade.buyer_release_block = None
    store.update_trade(trade)


def participant_inactive(store: OrderbookStore, participant_id: str, clock: Clock) -> None:
    """Cancel every open order of a participant that may no longer trade."""
    now = format_timestamp(clock())
    for order in store.open_orders_of(participant_id):
        store.publish(
            CANCEL_ORDER,
            order.market_id,
            {
                "order_id": order.order_id,
                "market_id": order.market_id,
                "participant_id": participant_id,
                "reason": PARTICIPANT_SUSPENDED,
                "requested_at": now,
            },
        )
