"""Settlement's aggregates: a trade's settlement instruction, a batch of them sent to the chain,
ecoin top-ups and payouts. Standard library only.

An instruction is created for every executed trade and ends settled or failed, never silently
pending. A batch is all-or-none on chain; when the chain names one trade as the cause of a
failed batch, that trade fails and the others go back to pending for the next batch. Only
batches failing without naming a trade count towards giving up on one: ``attempts`` counts
every batch a trade was sent in, ``failures_without_culprit`` the batches that failed without
the chain naming anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Self

from prosum_platform.domain import Aggregate, DomainEvent, DomainRuleViolation


class InstructionStatus(StrEnum):
    PENDING = "pending"
    BATCHED = "batched"
    SETTLED = "settled"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class InstructionCreated(DomainEvent):
    event_type: ClassVar[str] = "InstructionCreated"
    seller: str
    buyer: str
    quantity_wh: int
    value_ecoin: int
    fee_ecoin: int
    market_id: str
    delivery_start: str


@dataclass(frozen=True, kw_only=True)
class InstructionBatched(DomainEvent):
    event_type: ClassVar[str] = "InstructionBatched"
    batch_id: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class InstructionRequeued(DomainEvent):
    event_type: ClassVar[str] = "InstructionRequeued"
    batch_id: str
    reason: str
    # True when the batch failed without the chain naming a trade: it counts towards giving
    # up. Events stored before the field existed read as False (not counted).
    without_culprit: bool = False


@dataclass(frozen=True, kw_only=True)
class InstructionSettled(DomainEvent):
    event_type: ClassVar[str] = "InstructionSettled"
    batch_id: str
    tx_id: str
    block: int


@dataclass(frozen=True, kw_only=True)
class InstructionFailed(DomainEvent):
    event_type: ClassVar[str] = "InstructionFailed"
    batch_id: str
    reason: str
    chain_message: str
    failed_trade_id: str | None = None


class Instruction(Aggregate):
    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = InstructionStatus.PENDING
        self.seller = self.buyer = self.market_id = self.delivery_start = ""
        self.quantity_wh = self.value_ecoin = self.fee_ecoin = 0
        self.batch_id: str | None = None
        self.attempts = 0  # batches it was sent in
        self.failures_without_culprit = 0  # of those, failed without the chain naming a trade

    @classmethod
    def create(
        cls,
        trade_id: str,
        *,
        seller: str,
        buyer: str,
        quantity_wh: int,
        value_ecoin: int,
        fee_ecoin: int,
        market_id: str,
        delivery_start: str,
    ) -> Instruction:
        if quantity_wh <= 0 or value_ecoin < 0 or fee_ecoin < 0:
            raise DomainRuleViolation("invalid_trade", f"trade {trade_id} has impossible amounts")
        if seller == buyer:
            raise DomainRuleViolation("invalid_trade", f"trade {trade_id} is a self-trade")
        instruction = cls(trade_id)
        instruction._trigger(
            InstructionCreated(
                seller=seller,
                buyer=buyer,
                quantity_wh=quantity_wh,
                value_ecoin=value_ecoin,
                fee_ecoin=fee_ecoin,
                market_id=market_id,
                delivery_start=delivery_start,
            )
        )
        return instruction

    @property
    def finished(self) -> bool:
        return self.status in (InstructionStatus.SETTLED, InstructionStatus.FAILED)

    # The read model row, written in the same transaction as the events, is the instruction's
    # snapshot: bulk commands over hundreds of trades load them from it in one query.
    def snapshot_state(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "seller": self.seller,
            "buyer": self.buyer,
            "market_id": self.market_id,
            "delivery_start": self.delivery_start,
            "quantity_wh": self.quantity_wh,
            "value_ecoin": self.value_ecoin,
            "fee_ecoin": self.fee_ecoin,
            "batch_id": self.batch_id,
            "attempts": self.attempts,
            "failures_without_culprit": self.failures_without_culprit,
        }

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: dict[str, Any]) -> Self:
        instruction = cls(aggregate_id)
        instruction.version = version
        instruction.status = InstructionStatus(state["status"])
        instruction.seller, instruction.buyer = state["seller"], state["buyer"]
        instruction.market_id, instruction.delivery_start = (
            state["market_id"],
            state["delivery_start"],
        )
        instruction.quantity_wh = int(state["quantity_wh"])
        instruction.value_ecoin = int(state["value_ecoin"])
        instruction.fee_ecoin = int(state["fee_ecoin"])
        instruction.batch_id, instruction.attempts = state["batch_id"], int(state["attempts"])
        instruction.failures_without_culprit = int(state.get("failures_without_culprit") or 0)
        return instruction

    def batch(self, batch_id: str) -> None:
        if self.status is not InstructionStatus.PENDING:
            raise DomainRuleViolation("not_pending", f"trade {self.id} is {self.status}")
        self._trigger(InstructionBatched(batch_id=batch_id, attempt=self.attempts + 1))

    def _in_batch(self, batch_id: str) -> bool:
        return self.status is InstructionStatus.BATCHED and self.batch_id == batch_id

    def settle(self, batch_id: str, tx_id: str, block: int) -> bool:
        """Record the settlement; False when this batch's outcome was already applied."""
        if not self._in_batch(batch_id):
            return False
        self._trigger(InstructionSettled(batch_id=batch_id, tx_id=tx_id, block=block))
        return True

    def fail(
        self, batch_id: str, reason: str, chain_message: str, failed_trade_id: str | None
    ) -> bool:
        if not self._in_batch(batch_id):
            return False
        self._trigger(
            InstructionFailed(
                batch_id=batch_id,
                reason=reason,
                chain_message=chain_message,
                failed_trade_id=failed_trade_id,
            )
        )
        return True

    def requeue(self, batch_id: str, reason: str, *, without_culprit: bool = False) -> bool:
        if not self._in_batch(batch_id):
            return False
        self._trigger(
            InstructionRequeued(batch_id=batch_id, reason=reason, without_culprit=without_culprit)
        )
        return True

    def last_try_without_culprit(self, max_attempts: int) -> bool:
        """Whether one more batch failing without a culprit uses up its ``max_attempts``.
        Batches that failed naming another trade do not count: each of those removed a
        culprit, so requeueing after them cannot go on forever."""
        return self.failures_without_culprit + 1 >= max_attempts

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, InstructionCreated):
            self.seller, self.buyer = event.seller, event.buyer
            self.quantity_wh, self.value_ecoin, self.fee_ecoin = (
                event.quantity_wh,
                event.value_ecoin,
                event.fee_ecoin,
            )
            self.market_id, self.delivery_start = event.market_id, event.delivery_start
            self.status = InstructionStatus.PENDING
        elif isinstance(event, InstructionBatched):
            self.status, self.batch_id, self.attempts = (
                InstructionStatus.BATCHED,
                event.batch_id,
                event.attempt,
            )
        elif isinstance(event, InstructionRequeued):
            self.status, self.batch_id = InstructionStatus.PENDING, None
            if event.without_culprit:
                self.failures_without_culprit += 1
        elif isinstance(event, InstructionSettled):
            self.status = InstructionStatus.SETTLED
        elif isinstance(event, InstructionFailed):
            self.status = InstructionStatus.FAILED
            if event.failed_trade_id is None:
                self.failures_without_culprit += 1
        else:  # pragma: no cover
            super().apply(event)


class RequestStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    COMPLETED = "completed"
    FAILED = "failed"
    PAID = "paid"


@dataclass(frozen=True, kw_only=True)
class FundsRequested(DomainEvent):
    event_type: ClassVar[str] = "FundsRequested"
    kind: str  # topup | payout
    participant_id: str
    amount: int
    reference: str


@dataclass(frozen=True, kw_only=True)
class FundsApproved(DomainEvent):
    event_type: ClassVar[str] = "FundsApproved"
    by: str
    command_id: str


@dataclass(frozen=True, kw_only=True)
class FundsRejected(DomainEvent):
    event_type: ClassVar[str] = "FundsRejected"
    by: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class FundsMoved(DomainEvent):
    event_type: ClassVar[str] = "FundsMoved"
    tx_id: str
    block: int


@dataclass(frozen=True, kw_only=True)
class FundsFailed(DomainEvent):
    event_type: ClassVar[str] = "FundsFailed"
    reason: str
    chain_message: str


@dataclass(frozen=True, kw_only=True)
class PayoutPaid(DomainEvent):
    event_type: ClassVar[str] = "PayoutPaid"
    by: str
    bank_reference: str


class FundsRequest(Aggregate):
    """A top-up (ecoin minted after a bank deposit, the paper's request/schedule/issue_ecoin)
    or a payout (ecoin burned, then paid out by ops)."""

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.kind = ""
        self.participant_id = ""
        self.amount = 0
        self.reference = ""
        self.status = RequestStatus.REQUESTED
        self.command_id: str | None = None
        self.reason: str | None = None
        self.tx_id: str | None = None
        self.block: int | None = None

    @classmethod
    def request(
        cls, request_id: str, kind: str, participant_id: str, amount: int, reference: str
    ) -> FundsRequest:
        if kind not in ("topup", "payout"):
            raise DomainRuleViolation("invalid_kind", kind)
        if amount <= 0:
            raise DomainRuleViolation("invalid_amount", "the amount must be positive")
        if not reference.strip():
            raise DomainRuleViolation("invalid_reference", "a payment reference is required")
        funds = cls(request_id)
        funds._trigger(
            FundsRequested(
                kind=kind, participant_id=participant_id, amount=amount, reference=reference
            )
        )
        return funds

    def same_request(self, kind: str, participant_id: str, amount: int, reference: str) -> bool:
        return (self.kind, self.participant_id, self.amount, self.reference) == (
            kind,
            participant_id,
            amount,
            reference,
        )

    def approve(self, by: str) -> str:
        if self.status is not RequestStatus.REQUESTED:
            raise DomainRuleViolation("not_open", f"{self.kind} {self.id} is {self.status}")
        command_id = f"{self.kind}-{self.id}"
        self._trigger(FundsApproved(by=by, command_id=command_id))
        return command_id

    def reject(self, by: str, reason: str) -> None:
        if self.status is not RequestStatus.REQUESTED:
            raise DomainRuleViolation("not_open", f"{self.kind} {self.id} is {self.status}")
        if not reason.strip():
            raise DomainRuleViolation("invalid_reason", "say why it is rejected")
        self._trigger(FundsRejected(by=by, reason=reason))

    def moved(self, tx_id: str, block: int) -> bool:
        if self.status is not RequestStatus.APPROVED:
            return False
        self._trigger(FundsMoved(tx_id=tx_id, block=block))
        return True

    def failed(self, reason: str, chain_message: str) -> bool:
        if self.status is not RequestStatus.APPROVED:
            return False
        self._trigger(FundsFailed(reason=reason, chain_message=chain_message))
        return True

    def paid(self, by: str, bank_reference: str) -> None:
        if self.kind != "payout" or self.status is not RequestStatus.COMPLETED:
            raise DomainRuleViolation(
                "not_payable", f"{self.kind} {self.id} is {self.status}, not a burned payout"
            )
        self._trigger(PayoutPaid(by=by, bank_reference=bank_reference))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, FundsRequested):
            self.kind, self.participant_id = event.kind, event.participant_id
            self.amount, self.reference = event.amount, event.reference
            self.status = RequestStatus.REQUESTED
        elif isinstance(event, FundsApproved):
            self.status, self.command_id = RequestStatus.APPROVED, event.command_id
        elif isinstance(event, FundsRejected):
            self.status, self.reason = RequestStatus.REJECTED, event.reason
        elif isinstance(event, FundsMoved):
            self.status, self.tx_id = RequestStatus.COMPLETED, event.tx_id
            self.block = event.block
        elif isinstance(event, FundsFailed):
            self.status, self.reason = RequestStatus.FAILED, event.reason
        elif isinstance(event, PayoutPaid):
            self.status = RequestStatus.PAID
        else:  # pragma: no cover
            super().apply(event)


SETTLEMENT_EVENTS: tuple[type[DomainEvent], ...] = (
    InstructionCreated,
    InstructionBatched,
    InstructionRequeued,
    InstructionSettled,
    InstructionFailed,
    FundsRequested,
    FundsApproved,
    FundsRejected,
    FundsMoved,
    FundsFailed,
    PayoutPaid,
)
