"""Settlement's use cases: trades become instructions, instructions become batches on chain,
outcomes come back; top-ups and payouts; reconciliation of projections with the chain."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prosum_platform.domain import DomainRuleViolation
from prosum_settlement.application.ports import BalanceView, SettlementStore
from prosum_settlement.domain.model import FundsRequest, Instruction, RequestStatus

log = logging.getLogger(__name__)

SETTLE_PREFIX = "settle-"
BATCH_KEY = "settlement-batches"  # one Kafka key: the ledger executes batches in order


@dataclass(frozen=True)
class BatchPolicy:
    max_trades: int = 500
    window_s: float = 0.2
    max_in_flight: int = 4
    max_attempts: int = 5
    fee_account: str = "operator"
    # A batch without an outcome this long after it was sent is sent again (same command id:
    # the ledger executes it once, and answers a repeat of an ended command with its outcome).
    resend_after_s: float = 60.0


def fee_account_report(fee_account: str, status: str | None) -> dict[str, Any]:
    """What ``/ready`` says of the fee account: its status in settlement's projection of
    identity's events ("unknown" when identity never announced it)."""
    report: dict[str, Any] = {
        "participant_id": fee_account,
        "status": status or "unknown",
        "active": status == "active",
    }
    if status != "active":
        report["warning"] = (
            f"the fee account {fee_account!r} is {status or 'unknown'}: every batch pays fees "
            "to it, so the chain fails batches until ops onboards it and it is active"
        )
    return report


class FeeAccountWatch:
    """Warns when settlement is about to rely on a fee account that is not an active
    participant (the chain fails every such batch, e.g. with ``unknown_participant``).

    It does not hold batches back: settlement's projection of identity may lag behind, and the
    chain has the last word. It warns on the first sighting, on every change of status, and
    then at most every ``warn_every_s`` while it stays inactive; it notes when it turns active.
    """

    def __init__(
        self,
        fee_account: str,
        *,
        warn_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fee_account = fee_account
        self._warn_every_s = warn_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = False
        self._last: str | None = None
        self._warned_at: float | None = None

    def observe(self, status: str | None, when: str) -> bool:
        """Record the status seen ``when`` (e.g. "at startup"); True when it is active."""
        active = status == "active"
        with self._lock:
            changed = not self._seen or status != self._last
            was_inactive = self._seen and self._last != "active"
            self._seen, self._last = True, status
            now = self._clock()
            if active:
                self._warned_at = None
                if was_inactive:
                    log.info("settlement: fee account %r is active now", self.fee_account)
                return True
            recently = self._warned_at is not None and now - self._warned_at < self._warn_every_s
            if recently and not changed:
                return False
            self._warned_at = now
        log.warning(
            "settlement: %s, the fee account %r is %s, not active: batches pay fees to it, so "
            "the chain will fail them (unknown_participant or permission_denied) until ops "
            "onboards it in identity and its chain grants are confirmed "
            "(PROSUM_SETTLEMENT_FEE_ACCOUNT names it)",
            when,
            self.fee_account,
            status or "unknown to settlement",
        )
        return False


def record_trade(store: SettlementStore, trade: dict[str, Any]) -> bool:
    """An executed trade becomes a pending instruction (once, however often it is delivered)."""
    return record_trades(store, [trade]) == 1


def record_trades(store: SettlementStore, trades: list[dict[str, Any]]) -> int:
    """Many executed trades at once (a consumer's fetch): one lookup, one bulk write."""
    known = store.existing_instructions([t["trade_id"] for t in trades])
    created: dict[str, Instruction] = {}
    for trade in trades:
        if trade["trade_id"] in known or trade["trade_id"] in created:
            continue
        created[trade["trade_id"]] = Instruction.create(
            trade["trade_id"],
            seller=trade["seller"],
            buyer=trade["buyer"],
            quantity_wh=int(trade["quantity_wh"]),
            value_ecoin=int(trade["value_ecoin"]),
            fee_ecoin=int(trade["fee_ecoin"]),
            market_id=trade["market_id"],
            delivery_start=trade["delivery_start"],
        )
    store.save_instructions(list(created.values()))
    return len(created)


def open_batch(
    store: SettlementStore, policy: BatchPolicy, fee_watch: FeeAccountWatch | None = None
) -> str | None:
    """Send the next batch when it is full or its oldest trade has waited the window.

    With ``fee_watch``, first look at the fee account's status: a warning when it is not
    active (the batch is sent all the same)."""
    if store.open_batches() >= policy.max_in_flight:
        return None
    age = store.oldest_pending_age_s()
    if age is None:
        return None
    pending = store.pending_instructions(policy.max_trades)
    if len(pending) < policy.max_trades and age < policy.window_s:
        return None
    if fee_watch is not None:
        fee_watch.observe(
            store.participant_status(policy.fee_account),
            f"building a batch of {len(pending)} trades",
        )
    batch_id = uuid.uuid4().hex
    for instruction in pending:
        instruction.batch(batch_id)
    command = _settle_command(batch_id, pending, policy.fee_account)
    store.save_instructions(pending)
    store.record_batch(batch_id, [instruction.id for instruction in pending], command)
    store.publish("ledger.settle_trades", BATCH_KEY, command)
    return batch_id


def _settle_command(
    batch_id: str, instructions: Sequence[Instruction], fee_account: str
) -> dict[str, Any]:
    return {
        "command_id": SETTLE_PREFIX + batch_id,
        "fee_account": fee_account,
        "trades": [
            {
                "trade_id": instruction.id,
                "seller": instruction.seller,
                "buyer": instruction.buyer,
                "energy_wh": instruction.quantity_wh,
                "ecoin": instruction.value_ecoin,
                "fee_ecoin": instruction.fee_ecoin,
            }
            for instruction in instructions
        ],
    }


def resend_overdue(store: SettlementStore, policy: BatchPolicy) -> list[str]:
    """Send again, unchanged, every batch whose outcome has not come back within
    ``policy.resend_after_s``; returns their ids.

    The outbox delivers a command at least once, but a command the ledger could not take (dead
    lettered, or lost with a restored database) or an outcome settlement could not take would
    leave the batch's trades waiting for ever, and after ``max_in_flight`` such batches no batch
    would be sent at all. A repeat is safe: the ledger executes a command id once, ignores a
    repeat of a command still running, and answers a repeat of an ended one with its outcome.
    """
    resent = []
    for overdue in store.overdue_batches(policy.resend_after_s):
        command = overdue.command
        if command is None:  # recorded before commands were kept: rebuilt from its trades
            trades = store.instructions_by_id(store.batch_trade_ids(overdue.batch_id))
            command = _settle_command(overdue.batch_id, trades, policy.fee_account)
        log.warning(
            "settlement: batch %s (%d trades) has had no outcome from the ledger since %s; "
            "sending it again (%d times so far)",
            overdue.batch_id,
            len(command["trades"]),
            overdue.sent_at.isoformat(),
            overdue.resends + 1,
        )
        store.batch_resent(overdue.batch_id, command)
        store.publish("ledger.settle_trades", BATCH_KEY, command)
        resent.append(overdue.batch_id)
    return resent


def _trade_data(instruction: Instruction, batch_id: str) -> dict[str, Any]:
    return {
        "trade_id": instruction.id,
        "batch_id": batch_id,
        "seller": instruction.seller,
        "buyer": instruction.buyer,
        "quantity_wh": instruction.quantity_wh,
        "value_ecoin": instruction.value_ecoin,
        "fee_ecoin": instruction.fee_ecoin,
    }


def apply_batch_outcome(
    store: SettlementStore, event_type: str, data: dict[str, Any], policy: BatchPolicy
) -> None:
    batch_id = data["command_id"].removeprefix(SETTLE_PREFIX)
    if store.batch_status(batch_id) != "submitted":
        # Unknown, or its outcome was applied already: the ledger answers a batch sent again
        # after it ended with the same outcome once more.
        log.info("settlement: outcome of batch %s not awaited; ignored", batch_id)
        return
    batch = store.instructions_by_id(store.batch_trade_ids(batch_id))
    changed: list[Instruction] = []
    events: list[tuple[str, str, dict[str, Any]]] = []
    if event_type == "ledger.command_confirmed":
        for instruction in batch:
            if instruction.settle(batch_id, data["tx_id"], data["block"]):
                changed.append(instruction)
                events.append(
                    (
                        "settlement.trade_settled",
                        instruction.id,
                        {
                            **_trade_data(instruction, batch_id),
                            "tx_id": data["tx_id"],
                            "block": data["block"],
                        },
                    )
                )
        store.save_instructions(changed)
        store.publish_many(events)
        store.close_batch(batch_id, "confirmed", tx_id=data["tx_id"], block=data["block"])
        return
    named = data.get("trade_id")
    # A trade the chain names that is not in this batch cannot be what failed it: the batch
    # counts as failing without a culprit, so its trades still give up after max_attempts
    # instead of being sent again for ever.
    culprit = named if any(i.id == named for i in batch) else None
    for instruction in batch:
        # A trade fails when the chain names it, or when batches keep failing without naming
        # anyone (max_attempts such batches). A trade that was merely in the batch of a named
        # culprit is sent again, and that batch does not count against it: each such round
        # removes one culprit, so it cannot go on forever.
        give_up = instruction.id == culprit or (
            culprit is None and instruction.last_try_without_culprit(policy.max_attempts)
        )
        if give_up:
            if instruction.fail(batch_id, data["reason"], data["chain_message"], culprit):
                changed.append(instruction)
                events.append(
                    (
                        "settlement.trade_failed",
                        instruction.id,
                        {
                            **_trade_data(instruction, batch_id),
                            "reason": data["reason"],
                            "chain_message": data["chain_message"][:4000],
                            "failed_trade_id": culprit,
                        },
                    )
                )
        elif instruction.requeue(
            batch_id, f"batch failed: {data['reason']}", without_culprit=culprit is None
        ):
            changed.append(instruction)
    store.save_instructions(changed)
    store.publish_many(events)
    store.close_batch(batch_id, "failed", reason=data["reason"], failed_trade_id=named)


def request_funds(
    store: SettlementStore, kind: str, participant_id: str, amount: int, reference: str
) -> tuple[FundsRequest, bool]:
    """A top-up or payout request; the same reference again returns the first request."""
    existing = store.funds_by_reference(kind, participant_id, reference)
    if existing is not None:
        if not existing.same_request(kind, participant_id, amount, reference):
            raise DomainRuleViolation(
                "reference_reused", f"reference {reference!r} was used for another request"
            )
        return existing, False
    if kind == "payout":
        _check_payout_headroom(store, participant_id, amount)
    funds = FundsRequest.request(uuid.uuid4().hex, kind, participant_id, amount, reference)
    store.save_funds(funds)
    store.publish(
        f"settlement.{kind}_requested",
        funds.id,
        {
            "request_id": funds.id,
            "participant_id": participant_id,
            "amount": amount,
            "reference": reference,
        },
    )
    return funds, True


def _check_payout_headroom(
    store: SettlementStore, participant_id: str, amount: int, excluding: str | None = None
) -> None:
    """Refuse a payout the participant's ecoin does not cover once its other payouts (asked
    for, approved, or burned but not yet in the balance held) are counted. The balance row
    is locked, so two payouts cannot both be counted against the same ecoin."""
    balance = store.locked_balance(participant_id)
    if balance is None:
        raise DomainRuleViolation("insufficient_ecoin", "no ecoin balance is known for it yet")
    outstanding = store.payouts_outstanding(participant_id, balance.block, excluding)
    headroom = balance.ecoin - outstanding
    if headroom < amount:
        raise DomainRuleViolation(
            "insufficient_ecoin",
            f"the balance of {balance.ecoin} ecoin, less {outstanding} in other payouts not "
            f"yet burned, does not cover {amount}",
        )


def decide_funds(
    store: SettlementStore, request_id: str, by: str, *, approve: bool, reason: str = ""
) -> FundsRequest:
    funds = store.funds(request_id)
    if funds is None:
        raise LookupError(request_id)
    if approve:
        if funds.kind == "payout" and funds.status is RequestStatus.REQUESTED:
            # Trades and other payouts may have used the balance since the request.
            _check_payout_headroom(store, funds.participant_id, funds.amount, excluding=funds.id)
        funds.approve(by)
        if funds.kind == "topup":
            _send_funds_command(store, funds)
        # A payout is burned once the order book holds its ecoin (``payout_cover_held``):
        # open bids and unsettled purchases may have it promised.
    else:
        funds.reject(by, reason)
    store.save_funds(funds)
    store.publish(
        f"settlement.{funds.kind}_{'approved' if approve else 'rejected'}",
        funds.id,
        _decision_data(funds, by, None if approve else reason),
    )
    return funds


def _decision_data(funds: FundsRequest, by: str, rejected_for: str | None) -> dict[str, Any]:
    return {
        "request_id": funds.id,
        "participant_id": funds.participant_id,
        "amount": funds.amount,
        "by": by,
        **({} if rejected_for is None else {"reason": rejected_for}),
    }


def resend_overdue_funds(store: SettlementStore, policy: BatchPolicy) -> list[str]:
    """Ask again for what an approved top-up or payout waits for, once it has waited
    ``policy.resend_after_s``: the mint command again (the ledger executes it once and answers
    a repeat of an ended one with its outcome), or, for a payout, the order book's hold (it
    answers a repeat with the decision it made). Returns the requests asked for again."""
    asked = []
    for funds in store.funds_awaiting(policy.resend_after_s):
        log.warning(
            "settlement: %s %s approved but not ended after %.0f s; asking again",
            funds.kind,
            funds.id,
            policy.resend_after_s,
        )
        if funds.kind == "topup":
            _send_funds_command(store, funds)
        else:
            store.publish(
                "settlement.payout_approved", funds.id, _decision_data(funds, "settlement", None)
            )
        store.funds_resent(funds.id)
        asked.append(funds.id)
    return asked


def _send_funds_command(store: SettlementStore, funds: FundsRequest) -> None:
    assert funds.command_id is not None
    store.publish(
        "ledger.mint_ecoin" if funds.kind == "topup" else "ledger.burn_ecoin",
        funds.participant_id,
        {
            "command_id": funds.command_id,
            "participant_id": funds.participant_id,
            "amount": funds.amount,
            "reference": funds.reference[:256],
        },
    )


def payout_cover_held(store: SettlementStore, data: dict[str, Any]) -> None:
    """The order book holds the payout's ecoin: burn it (the ledger executes the command id
    once, however often it is sent)."""
    funds = store.funds(data["request_id"])
    if funds is None or funds.kind != "payout" or funds.status is not RequestStatus.APPROVED:
        return
    _send_funds_command(store, funds)


def payout_cover_refused(store: SettlementStore, data: dict[str, Any]) -> None:
    """The order book has that much ecoin promised to open bids or unsettled purchases: the
    payout fails without a burn."""
    funds = store.funds(data["request_id"])
    if funds is None or funds.kind != "payout":
        return
    message = (
        f"{data['free_ecoin']} ecoin free in the order book (the rest is held for open bids "
        f"and unsettled purchases), {data['amount']} asked for"
    )
    if funds.failed(data["reason"], message):
        store.save_funds(funds)
        store.publish(
            "settlement.payout_failed",
            funds.id,
            {
                "request_id": funds.id,
                "participant_id": funds.participant_id,
                "amount": funds.amount,
                "reason": data["reason"],
                "chain_message": message,
            },
        )


def apply_funds_outcome(store: SettlementStore, event_type: str, data: dict[str, Any]) -> None:
    kind, _, request_id = data["command_id"].partition("-")
    funds = store.funds(request_id)
    if funds is None or funds.kind != kind:
        return
    base = {"request_id": funds.id, "participant_id": funds.participant_id, "amount": funds.amount}
    if event_type == "ledger.command_confirmed":
        if funds.moved(data["tx_id"], data["block"]):
            store.save_funds(funds)
            store.publish(
                f"settlement.{kind}_completed",
                funds.id,
                {**base, "tx_id": data["tx_id"], "block": data["block"]},
            )
    elif funds.failed(data["reason"], data["chain_message"]):
        store.save_funds(funds)
        store.publish(
            f"settlement.{kind}_failed",
            funds.id,
            {**base, "reason": data["reason"], "chain_message": data["chain_message"][:4000]},
        )


def mark_paid(
    store: SettlementStore, request_id: str, by: str, bank_reference: str
) -> FundsRequest:
    funds = store.funds(request_id)
    if funds is None:
        raise LookupError(request_id)
    funds.paid(by, bank_reference)
    store.save_funds(funds)
    store.publish(
        "settlement.payout_paid",
        funds.id,
        {
            "request_id": funds.id,
            "participant_id": funds.participant_id,
            "amount": funds.amount,
            "bank_reference": bank_reference,
        },
    )
    return funds


def start_reconciliation(store: SettlementStore) -> str | None:
    participants = sorted(store.balances())
    if not participants:
        return None
    run_id = uuid.uuid4().hex
    store.start_reconciliation(run_id, participants)
    store.publish(
        "ledger.report_balances",
        f"reconcile-{run_id}",
        {"command_id": f"reconcile-{run_id}", "participant_ids": participants},
    )
    return run_id


def finish_reconciliation(store: SettlementStore, data: dict[str, Any]) -> None:
    run_id = data["command_id"].removeprefix("reconcile-")
    if not store.reconciliation_open(run_id):
        return
    projected = store.balances()
    differences = []
    for row in data["balances"]:
        mine = projected.get(row["participant_id"])
        seen = (mine.energy_wh, mine.ecoin) if mine else (0, 0)
        # A projection newer than the report (a balance changed after the reported block)
        # cannot be compared with it; an older one is still the current balance. Events in
        # flight while a run is taken can still show a difference that is not real; the next
        # run settles it.
        if mine is not None and mine.block > data["block"]:
            continue
        if seen != (row["energy_wh"], row["ecoin"]):
            differences.append(
                {
                    "participant_id": row["participant_id"],
                    "projected_energy_wh": seen[0],
                    "projected_ecoin": seen[1],
                    "chain_energy_wh": row["energy_wh"],
                    "chain_ecoin": row["ecoin"],
                }
            )
    store.complete_reconciliation(run_id, data["block"], len(data["balances"]), differences)
    store.publish(
        "settlement.reconciliation_completed",
        run_id,
        {
            "run_id": run_id,
            "block": data["block"],
            "checked": len(data["balances"]),
            "differences": differences,
        },
    )
    if differences:
        log.warning(
            "reconciliation %s: %d participants differ from the chain", run_id, len(differences)
        )


def record_balances(store: SettlementStore, reports: Sequence[dict[str, Any]]) -> None:
    """Many balance reports at once (a consumer's fetch): per participant the latest block
    wins, and one never goes back to an older block than the one held."""
    latest: dict[str, dict[str, Any]] = {}
    for data in reports:
        seen = latest.get(data["participant_id"])
        if seen is None or data["block"] >= seen["block"]:
            latest[data["participant_id"]] = data
    held = store.balances_of(list(latest))
    store.set_balances(
        [
            BalanceView(pid, data["energy_wh"], data["ecoin"], data["block"])
            for pid, data in latest.items()
            if pid not in held or held[pid].block <= data["block"]
        ]
    )


def record_balance(store: SettlementStore, data: dict[str, Any]) -> None:
    record_balances(store, [data])


__all__ = [
    "BatchPolicy",
    "FeeAccountWatch",
    "RequestStatus",
    "apply_batch_outcome",
    "apply_funds_outcome",
    "decide_funds",
    "fee_account_report",
    "finish_reconciliation",
    "mark_paid",
    "open_batch",
    "record_balance",
    "record_balances",
    "record_trade",
    "request_funds",
    "start_reconciliation",
]
