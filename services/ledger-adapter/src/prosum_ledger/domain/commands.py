"""A ledger command's life: received, submitted to the chain, then confirmed or failed.

The aggregate is what makes execution exactly-once: a command id is executed at most once; a
command that was submitted but whose outcome was not recorded (a crash, a timeout) is
reconciled from the chain before anything is submitted again; and it ends in exactly one
outcome.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from prosum_platform.domain import Aggregate, DomainEvent, DomainRuleViolation


class CommandKind(StrEnum):
    SETUP_ASSETS = "ledger.setup_assets"
    GRANT_PERMISSIONS = "ledger.grant_permissions"
    REVOKE_PERMISSIONS = "ledger.revoke_permissions"
    MINT_ENERGY = "ledger.mint_energy"
    MINT_ECOIN = "ledger.mint_ecoin"
    BURN_ECOIN = "ledger.burn_ecoin"
    SETTLE_TRADES = "ledger.settle_trades"
    ANCHOR_HASH = "ledger.anchor_hash"
    REPORT_BALANCES = "ledger.report_balances"


class CommandStatus(StrEnum):
    RECEIVED = "received"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"


def payload_digest(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class CommandReceived(DomainEvent):
    event_type: ClassVar[str] = "CommandReceived"
    kind: str
    payload: dict[str, Any]
    digest: str
    requested_by: str


@dataclass(frozen=True, kw_only=True)
class SubmissionStarted(DomainEvent):
    event_type: ClassVar[str] = "SubmissionStarted"
    attempt: int
    reconcile_first: bool


@dataclass(frozen=True, kw_only=True)
class CommandConfirmed(DomainEvent):
    event_type: ClassVar[str] = "CommandConfirmed"
    tx_id: str
    block: int
    fee: int
    settled: tuple[str, ...] = ()
    already_settled: tuple[str, ...] = ()
    reconciled: bool = False


@dataclass(frozen=True, kw_only=True)
class CommandFailed(DomainEvent):
    event_type: ClassVar[str] = "CommandFailed"
    reason: str
    chain_message: str
    trade_id: str | None = None


class LedgerCommand(Aggregate):
    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.kind: CommandKind | None = None
        self.payload: dict[str, Any] = {}
        self.digest = ""
        self.requested_by = ""
        self.status = CommandStatus.RECEIVED
        self.attempts = 0
        self.outcome: CommandConfirmed | CommandFailed | None = None

    @classmethod
    def receive(
        cls, command_id: str, kind: CommandKind, payload: dict[str, Any], requested_by: str
    ) -> LedgerCommand:
        command = cls(command_id)
        command._trigger(
            CommandReceived(
                kind=kind.value,
                payload=payload,
                digest=payload_digest(payload),
                requested_by=requested_by,
            )
        )
        return command

    def is_same_request(self, payload: dict[str, Any]) -> bool:
        return self.digest == payload_digest(payload)

    @property
    def finished(self) -> bool:
        return self.status in (CommandStatus.CONFIRMED, CommandStatus.FAILED)

    @property
    def needs_reconciliation(self) -> bool:
        """Submitted before, outcome unknown: ask the chain before submitting again."""
        return self.status is CommandStatus.SUBMITTED

    def start_submission(self) -> None:
        if self.finished:
            raise DomainRuleViolation("command_finished", f"command {self.id} already ended")
        self._trigger(
            SubmissionStarted(attempt=self.attempts + 1, reconcile_first=self.needs_reconciliation)
        )

    def confirm(
        self,
        tx_id: str,
        block: int,
        fee: int,
        settled: tuple[str, ...] = (),
        already_settled: tuple[str, ...] = (),
        *,
        reconciled: bool = False,
    ) -> None:
        self._require_open()
        self._trigger(
            CommandConfirmed(
                tx_id=tx_id,
                block=block,
                fee=fee,
                settled=settled,
                already_settled=already_settled,
                reconciled=reconciled,
            )
        )

    def fail(self, reason: str, chain_message: str, trade_id: str | None = None) -> None:
        self._require_open()
        self._trigger(CommandFailed(reason=reason, chain_message=chain_message, trade_id=trade_id))

    def _require_open(self) -> None:
        if self.finished:
            raise DomainRuleViolation("command_finished", f"command {self.id} already ended")

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, CommandReceived):
            self.kind = CommandKind(event.kind)
            self.payload = event.payload
            self.digest = event.digest
            self.requested_by = event.requested_by
            self.status = CommandStatus.RECEIVED
        elif isinstance(event, SubmissionStarted):
            self.attempts = event.attempt
            self.status = CommandStatus.SUBMITTED
        elif isinstance(event, CommandConfirmed):
            self.status = CommandStatus.CONFIRMED
            self.outcome = event
        elif isinstance(event, CommandFailed):
            self.status = CommandStatus.FAILED
            self.outcome = event
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)


LEDGER_EVENTS = (CommandReceived, SubmissionStarted, CommandConfirmed, CommandFailed)
