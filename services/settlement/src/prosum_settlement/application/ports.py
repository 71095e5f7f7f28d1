"""What settlement's application code needs from its store (one transaction at a time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prosum_settlement.domain.model import FundsRequest, Instruction


@dataclass(frozen=True)
class BalanceView:
    participant_id: str
    energy_wh: int
    ecoin: int
    block: int


@dataclass(frozen=True)
class OverdueBatch:
    """A batch sent to the ledger whose outcome has not come back."""

    batch_id: str
    command: dict[str, Any] | None  # None: recorded before commands were kept
    resends: int
    sent_at: datetime
    created_at: datetime


class SettlementStore(Protocol):
    def instruction(self, trade_id: str) -> Instruction | None: ...

    def existing_instructions(self, trade_ids: Sequence[str]) -> set[str]: ...

    def instructions_by_id(self, trade_ids: Sequence[str]) -> list[Instruction]: ...

    def pending_instructions(self, limit: int) -> list[Instruction]: ...

    def save_instructions(self, changed: Sequence[Instruction]) -> None: ...

    def pending_trade_ids(self, limit: int) -> list[str]: ...

    def oldest_pending_age_s(self) -> float | None: ...

    def batch_trade_ids(self, batch_id: str) -> list[str]: ...

    def record_batch(
        self, batch_id: str, trade_ids: Sequence[str], command: dict[str, Any]
    ) -> None: ...

    def batch_status(self, batch_id: str) -> str | None:
        """``submitted``, ``confirmed`` or ``failed``; None for an unknown batch."""
        ...

    def overdue_batches(self, older_than_s: float) -> list[OverdueBatch]:
        """Batches still submitted, last sent more than ``older_than_s`` ago, oldest first."""
        ...

    def batch_resent(self, batch_id: str, command: dict[str, Any]) -> None: ...

    def close_batch(
        self,
        batch_id: str,
        status: str,
        *,
        tx_id: str | None = None,
        block: int | None = None,
        reason: str | None = None,
        failed_trade_id: str | None = None,
    ) -> None: ...

    def open_batches(self) -> int: ...

    def participant_status(self, participant_id: str) -> str | None:
        """Status in the projection of identity's events; None when never announced."""
        ...

    def funds(self, request_id: str) -> FundsRequest | None: ...

    def funds_by_reference(
        self, kind: str, participant_id: str, reference: str
    ) -> FundsRequest | None: ...

    def save_funds(self, funds: FundsRequest) -> None: ...

    def funds_awaiting(self, older_than_s: float) -> list[FundsRequest]:
        """Approved top-ups and payouts last changed (or sent again) longer ago than that."""
        ...

    def funds_resent(self, request_id: str) -> None: ...

    def balances(self) -> dict[str, BalanceView]: ...

    def balances_of(self, participant_ids: Sequence[str]) -> dict[str, BalanceView]: ...

    def locked_balance(self, participant_id: str) -> BalanceView | None:
        """The participant's balance, its row locked until the transaction ends."""
        ...

    def payouts_outstanding(
        self, participant_id: str, reflected_block: int, excluding: str | None = None
    ) -> int:
        """What the participant's payouts will still burn: those requested or approved, and
        those burned after ``reflected_block``."""
        ...

    def set_balances(self, changed: Sequence[BalanceView]) -> None:
        """Store many balances at once (each participant at most once)."""
        ...

    def start_reconciliation(self, run_id: str, participants: Sequence[str]) -> None: ...

    def reconciliation_open(self, run_id: str) -> bool: ...

    def complete_reconciliation(
        self, run_id: str, block: int, checked: int, differences: list[dict[str, Any]]
    ) -> None: ...

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None: ...

    def publish_many(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None: ...


UnitOfWork = Callable[[], AbstractContextManager[SettlementStore]]
