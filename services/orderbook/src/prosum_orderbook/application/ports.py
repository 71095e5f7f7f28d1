"""What the orderbook's application code needs from storage and messaging, as Protocols.

One ``OrderbookStore`` is one unit of work: everything done through it commits together (the
book's events, the read models, the reservations, the outbox) or not at all, and its reads see
its own writes. The SQLAlchemy adapter implements it on an event store transaction and may
hold writes back until the unit commits, to write many rows per statement.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prosum_orderbook.domain.book import OrderBook
from prosum_orderbook.domain.markets import Fees, Mechanism
from prosum_orderbook.domain.orders import OrderSubmitted

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class MarketRecord:
    market_id: str
    delivery_start: datetime
    delivery_end: datetime
    opens_at: datetime
    gate_closure: datetime
    mechanism: Mechanism
    fees: Fees
    status: str
    """``scheduled`` (set up by ops before it opened), ``open``, then ``closed`` once its book
    closed at gate closure."""
    close_requested_at: datetime | None = None


@dataclass(slots=True)
class OrderRecord:
    order_id: str
    client_order_id: str | None
    participant_id: str
    threshold_id: str
    market_id: str
    side: str
    price: int
    quantity_wh: int
    time_in_force: str
    status: str
    remaining_wh: int
    filled_wh: int = 0
    cancelled_wh: int = 0
    expired_wh: int = 0
    reserved_wh: int = 0
    reserved_ecoin: int = 0
    fee_charged: bool = False
    reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class TradeRecord:
    trade_id: str
    market_id: str
    seq: int
    buy_order_id: str
    sell_order_id: str
    buyer: str
    seller: str
    quantity_wh: int
    price: int
    value_ecoin: int
    fee_ecoin: int
    mechanism: str
    executed_at: datetime
    status: str = "executed"
    """``executed`` (awaiting settlement), ``settled`` or ``failed``."""
    seller_reserved_wh: int = 0
    buyer_reserved_ecoin: int = 0
    seller_release_block: int | None = None
    buyer_release_block: int | None = None
    settled_block: int | None = None
    tx_id: str | None = None
    failure_reason: str | None = None


@dataclass(slots=True)
class PayoutHold:
    """Ecoin the order book holds out of a participant's free balance for an approved payout:
    ``held`` until the burn is in the balance (``release_block``) or the payout fails, then
    ``released``; ``refused`` when that much was not free."""

    request_id: str
    participant_id: str
    amount: int
    status: str
    release_block: int | None = None


@dataclass(frozen=True, slots=True)
class Account:
    participant_id: str
    energy_wh: int
    ecoin: int
    block: int
    """The chain block the balances are from; -1 before any balance was seen."""
    reserved_wh: int
    reserved_ecoin: int

    @property
    def free_wh(self) -> int:
        return self.energy_wh - self.reserved_wh

    @property
    def free_ecoin(self) -> int:
        return self.ecoin - self.reserved_ecoin


@dataclass(frozen=True, slots=True)
class ThresholdClaim:
    """What an order adds to its threshold's use, and the threshold's limits."""

    open_wh: int
    open_value: int
    max_open_wh: int
    max_value: int


class NeedsWriteLock(Exception):
    """A unit of work opened for reading (to prepare work before the write transaction) was
    asked to write at once."""


class Contention(Exception):
    """The store gave up the unit of work for a concurrent one (a deadlock, a serialization
    failure, a lock wait that timed out); nothing of it was kept, and it may be tried again."""


class DuplicateClientOrderId(Exception):
    """Another order of the participant already uses this client order id."""


class OrderbookStore(Protocol):
    # -- markets ------------------------------------------------------------------------------
    def market(self, market_id: str) -> MarketRecord | None: ...

    def add_market(self, market: MarketRecord) -> MarketRecord:
        """Insert the market unless it exists; returns the stored one either way."""
        ...

    def schedule_market(self, market: MarketRecord) -> MarketRecord:
        """Store a market's record as given (a scheduled market's new set-up, or its opening);
        returns it."""
        ...

    def close_market(self, market_id: str, at: datetime) -> None: ...

    def record_market_trade(self, market_id: str, quantity_wh: int, price: int) -> None: ...

    def markets_to_close(self, now: datetime, retry_after_s: float) -> list[str]:
        """Markets not closed yet past gate closure whose close was not requested (or long
        ago)."""
        ...

    def mark_close_requested(self, market_id: str, at: datetime) -> None: ...

    # -- orders ---------------------------------------------------------------------------
    def order(self, order_id: str) -> OrderRecord | None: ...

    def order_by_client_id(
        self, participant_id: str, client_order_id: str
    ) -> OrderRecord | None: ...

    def draft_submission(
        self, event: OrderSubmitted, command: tuple[str, str, dict[str, Any]]
    ) -> Submission:
        """The submission event and the order's command to its book (type, subject, data),
        encoded, validated and serialized now, for ``submit_drafted`` to record in a later unit
        of work. Touches nothing."""
        ...

    def submit_drafted(self, order: OrderRecord, submission: Submission) -> None:
        """Record the submission event and the order's read model, and send its command. A
        client order id taken by another order of this unit raises DuplicateClientOrderId; one
        taken in the database (by an order not committed when it was drafted) when the unit
        commits."""
        ...

    def update_order(self, order: OrderRecord) -> None: ...

    def open_orders_of(self, participant_id: str) -> list[OrderRecord]: ...

    def pending_orders(self, market_id: str) -> list[OrderRecord]:
        """The market's orders entry accepted whose command its book has not processed."""
        ...

    # -- trades ---------------------------------------------------------------------------
    def add_trade(self, trade: TradeRecord) -> None: ...

    def trade(self, trade_id: str) -> TradeRecord | None: ...

    def update_trade(self, trade: TradeRecord) -> None: ...

    def trades_to_release(self, participant_id: str, block: int) -> list[TradeRecord]:
        """Settled trades of the participant whose reservation waits for a balance from
        ``block`` or later."""
        ...

    # -- credentials ----------------------------------------------------------------------------
    def credential_refusal(
        self, threshold_id: str, device_id: str, participant_id: str
    ) -> str | None:
        """None while the threshold stands; else why not (``threshold_revoked``,
        ``device_revoked``, ``participant_not_active``), from the trust projection."""
        ...

    def credential_refusals(
        self, credentials: Collection[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], str | None]:
        """``credential_refusal`` for many (threshold, device, participant) at once."""
        ...

    # -- balances and reservations ---------------------------------------------------------
    def account(self, participant_id: str) -> Account | None: ...

    def locked_accounts(self, participant_ids: Collection[str]) -> dict[str, Account]:
        """The accounts, their rows locked for the rest of the unit of work (in key order),
        with this unit's changes: a balance event applied concurrently is either seen here or
        waits for this unit and then sees what it wrote."""
        ...

    def record_balance(self, participant_id: str, energy_wh: int, ecoin: int, block: int) -> bool:
        """Store balances unless newer ones are stored already; True when stored."""
        ...

    def reserve_free_ecoin(self, participant_id: str, amount: int) -> int | None:
        """Reserve ``amount`` ecoin if that much is free (the account locked for the rest of
        the unit of work); returns the free ecoin seen before, None without an account."""
        ...

    def payout_hold(self, request_id: str) -> PayoutHold | None: ...

    def save_payout_hold(self, hold: PayoutHold) -> None: ...

    def payout_holds_to_release(self, participant_id: str, block: int) -> list[PayoutHold]:
        """Held payouts of the participant burned at ``block`` or before."""
        ...

    def balances_of(self, participant_ids: Collection[str]) -> dict[str, tuple[int, int, int]]:
        """(energy Wh, ecoin, block) as held, of those participants with an account."""
        ...

    def record_reconciliation(
        self,
        run_id: str,
        block: int,
        checked: int,
        skipped: int,
        differences: list[dict[str, Any]],
        at: datetime,
    ) -> bool:
        """Keep a reconciliation run's result; False when the run was recorded already."""
        ...

    def hold_cover(self, participants: Collection[tuple[str, str]]) -> None:
        """Lock and read the accounts and threshold use of these (participant, threshold)
        pairs for the rest of the unit of work, so that ``reserve_for_order`` decides their
        orders without a statement each."""
        ...

    def reserve_for_order(
        self,
        participant_id: str,
        threshold_id: str,
        claim: ThresholdClaim,
        energy_wh: int,
        ecoin: int,
    ) -> str | None:
        """Reserve an order's cover from the free balance and count it against its threshold's
        limits: both or neither, on the rows ``hold_cover`` locked (it is called here for a
        pair not held yet). None when done, else ``insufficient_cover`` or
        ``threshold_exhausted``."""
        ...

    def adjust_reserved(self, participant_id: str, energy_wh: int, ecoin: int) -> None: ...

    def adjust_threshold(
        self, participant_id: str, threshold_id: str, open_wh: int, open_value: int
    ) -> None: ...

    # -- books --------------------------------------------------------------------------------
    def book(self, market_id: str) -> OrderBook:
        """The market's book as of its last stored event (a new, empty book if none)."""
        ...

    def save_book(self, book: OrderBook) -> None:
        """Append the book's pending events (at the latest when the unit of work commits);
        ConcurrencyConflict if another writer appended first."""
        ...

    # -- messaging ----------------------------------------------------------------------------
    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        """Put an integration event (or a command to the books) in the outbox."""
        ...


UnitOfWork = Callable[[], AbstractContextManager[OrderbookStore]]


class Submission:
    """An order's submission made ready by ``OrderbookStore.draft_submission`` (opaque)."""
