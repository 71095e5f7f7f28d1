"""Accepting ledger commands and executing them on the chain, exactly once.

Accepting happens in the Kafka consumer's transaction: the command is recorded (or recognised
as a repeat) together with the consumer's tracking row. Executing happens afterwards, in the
executor: it records the submission before touching the chain, so after a crash it knows to
ask the chain what became of the command (``find_command``) before it submits anything again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from prosum_ledger.application.ports import ChainBackend
from prosum_ledger.domain.commands import (
    CommandConfirmed,
    CommandFailed,
    CommandKind,
    LedgerCommand,
)
from prosum_ledger.domain.model import (
    LedgerError,
    Permission,
    ReasonCode,
    Receipt,
    SettlementTrade,
)

log = logging.getLogger(__name__)

CONFIRMED = "ledger.command_confirmed"
FAILED = "ledger.command_failed"
BALANCE_CHANGED = "ledger.balance_changed"
BALANCES_REPORTED = "ledger.balances_reported"


class CommandLog(Protocol):
    """Persistence of ledger commands within one transaction (the adapter is SQLAlchemy)."""

    def get(self, command_id: str) -> LedgerCommand | None: ...

    def save(self, command: LedgerCommand) -> None: ...

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        """Put an integration event in the outbox of this transaction."""
        ...

    def open_commands(self, limit: int) -> list[str]:
        """Ids of commands received or submitted but not ended, oldest first."""
        ...


UnitOfWork = Callable[[], AbstractContextManager[CommandLog]]


# Settlement's commands: it asks again when an outcome does not come back.
_ANSWERED_AGAIN = frozenset(
    {CommandKind.SETTLE_TRADES, CommandKind.MINT_ECOIN, CommandKind.BURN_ECOIN}
)


@dataclass(frozen=True)
class Acceptance:
    accepted: bool
    reason: str


def accept_command(
    log_: CommandLog,
    kind: CommandKind,
    payload: dict[str, Any],
    requested_by: str,
    backend: str = "none",
) -> Acceptance:
    """Record a command for execution. A repeat of a known command id is not executed again; a
    different request reusing a known command id is refused.

    A repeat of a settle, ecoin mint or ecoin burn command that has ended gets its outcome
    published again: settlement sends these again when no outcome came back (one it could not
    take, say), applies outcomes once, and this is its answer. The other commands' senders
    never repeat one, and get nothing."""
    command_id = payload["command_id"]
    existing = log_.get(command_id)
    if existing is not None:
        if existing.is_same_request(payload):
            if existing.finished and existing.kind in _ANSWERED_AGAIN:
                log_.publish(*outcome_event(existing, backend))
                return Acceptance(False, "duplicate_outcome_published_again")
            return Acceptance(False, "duplicate")
        log.warning("ledger: command id %s reused for a different request", command_id)
        return Acceptance(False, "conflicting_duplicate")
    command = LedgerCommand.receive(command_id, kind, payload, requested_by)
    try:
        _validate(kind, payload)
    except ValueError as exc:
        command.fail(ReasonCode.INVALID_COMMAND.value, str(exc))
        log_.save(command)
        log_.publish(FAILED, command_id, _failed_data(command, "none"))
        return Acceptance(False, "invalid")
    log_.save(command)
    return Acceptance(True, "accepted")


def _validate(kind: CommandKind, payload: dict[str, Any]) -> None:
    if kind is CommandKind.SETTLE_TRADES:
        ids = [t["trade_id"] for t in payload["trades"]]
        if len(set(ids)) != len(ids):
            raise ValueError("a trade id appears twice in the batch")
        _trades(payload)  # SettlementTrade refuses self-trades and non-positive energy


def _trades(payload: dict[str, Any]) -> list[SettlementTrade]:
    return [
        SettlementTrade(
            trade_id=t["trade_id"],
            seller=t["seller"],
            buyer=t["buyer"],
            energy_wh=int(t["energy_wh"]),
            ecoin=int(t["ecoin"]),
            fee_ecoin=int(t["fee_ecoin"]),
        )
        for t in payload["trades"]
    ]


def outcome_event(command: LedgerCommand, backend: str) -> tuple[str, str, dict[str, Any]]:
    """The outcome event of an ended command: (type, subject, data)."""
    if isinstance(command.outcome, CommandFailed):
        return FAILED, command.id, _failed_data(command, backend)
    return CONFIRMED, command.id, _confirmed_data(command, backend)


def _confirmed_data(command: LedgerCommand, backend: str) -> dict[str, Any]:
    outcome = command.outcome
    assert isinstance(outcome, CommandConfirmed)
    data: dict[str, Any] = {
        "command_id": command.id,
        "command_type": command.kind.value if command.kind else "",
        "backend": backend,
        "tx_id": outcome.tx_id,
        "block": outcome.block,
        "fee": outcome.fee,
    }
    if command.kind is CommandKind.SETTLE_TRADES:
        data["settled_trades"] = list(outcome.settled)
        data["already_settled"] = list(outcome.already_settled)
    if "participant_id" in command.payload:
        data["participant_id"] = command.payload["participant_id"]
    return data


def _failed_data(command: LedgerCommand, backend: str) -> dict[str, Any]:
    outcome = command.outcome
    assert isinstance(outcome, CommandFailed)
    data: dict[str, Any] = {
        "command_id": command.id,
        "command_type": command.kind.value if command.kind else "",
        "backend": backend,
        "reason": outcome.reason,
        "chain_message": outcome.chain_message[:4000],
        "trade_id": outcome.trade_id,
    }
    if "participant_id" in command.payload:
        data["participant_id"] = command.payload["participant_id"]
    return data


@dataclass(frozen=True)
class Execution:
    receipt: Receipt | None
    settled: tuple[str, ...] = ()
    already_settled: tuple[str, ...] = ()


class CommandExecutor:
    """Runs recorded commands against the chain backend, one at a time."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        backend: ChainBackend,
        *,
        after_submit: Callable[[], None] = lambda: None,
    ) -> None:
        self._uow = unit_of_work
        self._backend = backend
        self._after_submit = after_submit

    def run_open(self, limit: int = 100) -> int:
        """Execute the open commands; returns how many ended (confirmed or failed)."""
        with self._uow() as log_:
            ids = log_.open_commands(limit)
        ended = 0
        for command_id in ids:
            if self.execute(command_id):
                ended += 1
        return ended

    def execute(self, command_id: str) -> bool:
        with self._uow() as log_:
            command = log_.get(command_id)
            if command is None or command.finished:
                return False
            reconcile = command.needs_reconciliation
            command.start_submission()
            log_.save(command)

        if command.kind is CommandKind.REPORT_BALANCES:
            # A query, not a transaction: nothing to reconcile, the answer is the report.
            return self._report_balances(command)
        execution: Execution | None = None
        if reconcile:
            execution = self._reconcile(command)
        try:
            if execution is None:
                execution = self._submit(command)
        except LedgerError as error:
            if error.reason is ReasonCode.CHAIN_UNAVAILABLE:
                # The outcome is unknown: leave it submitted; the next round reconciles.
                log.warning("ledger: chain unavailable for %s: %s", command_id, error)
                return False
            self._record_failure(command_id, error)
            return True
        self._after_submit()
        try:
            self._record_confirmation(command_id, execution, reconciled=reconcile)
        except LedgerError as error:
            log.warning(
                "ledger: %s confirmed, balances unreadable (%s); reconciling", command_id, error
            )
            return False
        return True

    def _reconcile(self, command: LedgerCommand) -> Execution | None:
        receipt = self._backend.find_command(command.id)
        if receipt is None:
            return None
        log.info("ledger: command %s found on chain in block %s", command.id, receipt.block)
        if command.kind is CommandKind.SETTLE_TRADES:
            ids = tuple(t["trade_id"] for t in command.payload["trades"])
            return Execution(receipt, settled=ids)
        return Execution(receipt)

    def _submit(self, command: LedgerCommand) -> Execution:
        backend, p, kind = self._backend, command.payload, command.kind
        cid = command.id
        if kind is CommandKind.SETUP_ASSETS:
            receipt = backend.setup_assets()
            if receipt is None:
                height = backend.height()
                receipt = Receipt(tx_id="existing", block=height, fee=0)
            return Execution(receipt)
        if kind in (CommandKind.GRANT_PERMISSIONS, CommandKind.REVOKE_PERMISSIONS):
            permissions = frozenset(Permission(x) for x in p["permissions"])
            if kind is CommandKind.GRANT_PERMISSIONS:
                backend.register_participant(p["participant_id"])
                return Execution(backend.grant(cid, p["participant_id"], permissions))
            return Execution(backend.revoke(cid, p["participant_id"], permissions))
        if kind is CommandKind.MINT_ENERGY:
            return Execution(
                backend.mint_energy(cid, p["participant_id"], p["amount_wh"], p["evidence_hash"])
            )
        if kind is CommandKind.MINT_ECOIN:
            return Execution(backend.mint_ecoin(cid, p["participant_id"], p["amount"]))
        if kind is CommandKind.BURN_ECOIN:
            return Execution(backend.burn_ecoin(cid, p["participant_id"], p["amount"]))
        if kind is CommandKind.SETTLE_TRADES:
            batch = backend.settle_batch(cid, _trades(p), p["fee_account"])
            return Execution(batch.receipt, batch.settled, batch.already_settled)
        if kind is CommandKind.ANCHOR_HASH:
            return Execution(backend.anchor(cid, p["root"], p.get("reference", "")))
        raise LedgerError(ReasonCode.INVALID_COMMAND, f"unknown command kind {kind}")

    def _report_balances(self, command: LedgerCommand) -> bool:
        try:
            height = self._backend.height()
            balances = self._backend.balances_many(command.payload["participant_ids"])
            supply = self._backend.total_supply()
        except LedgerError as error:
            if error.reason is ReasonCode.CHAIN_UNAVAILABLE:
                return False
            self._record_failure(command.id, error)
            return True
        with self._uow() as log_:
            current = log_.get(command.id)
            assert current is not None
            current.confirm("none", height, 0)
            log_.save(current)
            log_.publish(
                BALANCES_REPORTED,
                command.id,
                {
                    "command_id": command.id,
                    "block": height,
                    "balances": [
                        {"participant_id": p, "energy_wh": b.energy_wh, "ecoin": b.ecoin}
                        for p, b in balances.items()
                    ],
                    "total_supply": {"energy_wh": supply.energy_wh, "ecoin": supply.ecoin},
                },
            )
        return True

    def _record_failure(self, command_id: str, error: LedgerError) -> None:
        with self._uow() as log_:
            command = log_.get(command_id)
            assert command is not None
            command.fail(error.reason.value, error.chain_message, error.trade_id)
            log_.save(command)
            log_.publish(FAILED, command_id, _failed_data(command, self._backend.name))

    def _record_confirmation(
        self, command_id: str, execution: Execution, *, reconciled: bool
    ) -> None:
        receipt = execution.receipt
        assert receipt is not None
        with self._uow() as log_:
            found = log_.get(command_id)
        assert found is not None
        # Read the balances before recording anything: if the chain cannot answer now, the
        # command stays submitted and the next round reconciles it and reads them again, so
        # the parties' balance events are never silently skipped.
        balances = list(self._balances(found))
        with self._uow() as log_:
            command = log_.get(command_id)
            assert command is not None
            command.confirm(
                receipt.tx_id,
                receipt.block,
                receipt.fee,
                execution.settled,
                execution.already_settled,
                reconciled=reconciled,
            )
            log_.save(command)
            log_.publish(*outcome_event(command, self._backend.name))
            for participant, energy, ecoin in balances:
                log_.publish(
                    BALANCE_CHANGED,
                    participant,
                    {
                        "participant_id": participant,
                        "energy_wh": energy,
                        "ecoin": ecoin,
                        "block": receipt.block,
                        "command_id": command_id,
                    },
                )

    def _balances(self, command: LedgerCommand) -> Iterator[tuple[str, int, int]]:
        participants = affected_participants(command)
        if not participants:
            return
        balances = self._backend.balances_many(participants)
        for participant, held in balances.items():
            yield participant, held.energy_wh, held.ecoin


def affected_participants(command: LedgerCommand) -> Sequence[str]:
    p = command.payload
    if command.kind in (CommandKind.MINT_ENERGY, CommandKind.MINT_ECOIN, CommandKind.BURN_ECOIN):
        return [p["participant_id"]]
    if command.kind is CommandKind.SETTLE_TRADES:
        seen: dict[str, None] = {}
        for trade in p["trades"]:
            seen[trade["seller"]] = None
            seen[trade["buyer"]] = None
        seen[p["fee_account"]] = None
        return list(seen)
    return []
