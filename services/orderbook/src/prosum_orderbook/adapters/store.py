"""The orderbook's store port on SQLAlchemy: one ``SqlOrderbookStore`` per event store transaction.

Books are event-sourced aggregates (stream id = market id, snapshots every 1000 events) and are
kept in memory between commands by ``BookCache``: before a cached book is used, the head of its
stream (version and the writer token stored in the last event's meta) is compared with what the
cache last wrote. Any difference (another instance appended, or our own transaction rolled back
after the book had moved on) means the book is rebuilt from the store. Within one transaction a
book is checked once.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from prosum_contracts import Envelope, TraceContext
from prosum_orderbook.adapters.credentials import credential_refusal, credential_refusals
from prosum_orderbook.adapters.tables import (
    accounts,
    markets,
    orders,
    payout_holds,
    reconciliations,
    threshold_usage,
    trades,
)
from prosum_orderbook.application.messages import SOURCE
from prosum_orderbook.application.ports import (
    Account,
    Contention,
    DuplicateClientOrderId,
    MarketRecord,
    NeedsWriteLock,
    OrderRecord,
    PayoutHold,
    Submission,
    ThresholdClaim,
    TradeRecord,
    UnitOfWork,
)
from prosum_orderbook.domain.book import CLOSED, OrderBook
from prosum_orderbook.domain.events import BOOK_EVENTS
from prosum_orderbook.domain.markets import Fees, Mechanism
from prosum_orderbook.domain.orders import OPEN_STATUSES, OrderSubmitted
from prosum_platform.codec import EventCodec
from prosum_platform.domain import ConcurrencyConflict
from prosum_platform.eventstore import EventStore, NewEvent, Repository, Transaction, as_utc
from prosum_platform.eventstore.bulk import BulkStatement
from prosum_platform.eventstore.repository import PreparedSave
from prosum_platform.eventstore.schema import events
from prosum_platform.eventstore.store import event_rows
from prosum_platform.telemetry import current_trace_context

CODEC = EventCodec().register(*BOOK_EVENTS, OrderSubmitted)
_OPEN = tuple(s.value for s in OPEN_STATUSES)

_HEAD = (
    sa.select(events.c.version, events.c.meta)
    .where(events.c.stream_id == sa.bindparam("stream_id"))
    .order_by(events.c.version.desc())
    .limit(1)
)


def _payout_hold(row: Any) -> PayoutHold:
    return PayoutHold(row.request_id, row.participant_id, row.amount, row.status, row.release_block)


def _now() -> datetime:
    return datetime.now(UTC)


def order_stream(order_id: str) -> str:
    return f"order:{order_id}"


class _Drafted(Submission):
    __slots__ = ("event", "outbox_row")

    def __init__(self, event: NewEvent, outbox_row: tuple[Any, ...]) -> None:
        self.event = event
        self.outbox_row = outbox_row


class _Cached:
    __slots__ = ("book", "checked_in", "token")

    def __init__(self, book: OrderBook, token: str | None, tx: Transaction) -> None:
        self.book = book
        self.token = token
        self.checked_in: weakref.ref[Transaction] = weakref.ref(tx)


class BookCache:
    """Books in memory, each valid as long as its stream's head is the one it last saw."""

    def __init__(self, max_books: int = 2000) -> None:
        self._books: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_books
        self._repository = Repository(OrderBook, CODEC)
        self.loads = 0

    def get(self, tx: Transaction, market_id: str) -> OrderBook:
        return self.checked(tx, market_id)[0]

    def checked(self, tx: Transaction, market_id: str) -> tuple[OrderBook, str | None]:
        """The book and the writer token of its stream's head, as this transaction sees it."""
        with self._lock:
            cached = self._books.get(market_id)
        if cached is not None and cached.checked_in() is tx:
            return cached.book, cached.token
        head = tx.conn.execute(_HEAD, {"stream_id": market_id}).first()
        version, token = (head[0], orjson.loads(head[1]).get("w")) if head else (0, None)
        if (
            cached is not None
            and cached.book.version == version
            and cached.token == token
            and not cached.book.pending_events
        ):
            cached.checked_in = weakref.ref(tx)
            return cached.book, token
        book = self._repository.get(tx, market_id) or OrderBook(market_id)
        self.loads += 1
        self._keep(market_id, _Cached(book, token, tx))
        return book, token

    def prepare(
        self, books: Collection[OrderBook]
    ) -> tuple[PreparedSave[OrderBook], dict[str, str]]:
        """The books' pending events as rows, each book's with a new writer token, which
        ``checked`` compares with the stream's head."""
        tokens = {book.market_id: uuid.uuid4().hex for book in books}
        save = self._repository.prepare_save(list(books), lambda b: {"w": tokens[b.market_id]})
        return save, tokens

    def saved(self, tx: Transaction, books: Collection[OrderBook], tokens: dict[str, str]) -> None:
        for book in books:
            if book.status == CLOSED:
                self.forget(book.market_id)
            else:
                self._keep(book.market_id, _Cached(book, tokens[book.market_id], tx))

    def still_current(self, tx: Transaction, heads: dict[str, tuple[int, str | None]]) -> bool:
        """Whether each book's stream still ends at the version and writer token seen."""
        for market_id, (version, token) in heads.items():
            head = tx.conn.execute(_HEAD, {"stream_id": market_id}).first()
            now = (head[0], orjson.loads(head[1]).get("w")) if head else (0, None)
            if now != (version, token):
                return False
        return True

    def forget(self, market_id: str) -> None:
        with self._lock:
            self._books.pop(market_id, None)

    def _keep(self, market_id: str, cached: _Cached) -> None:
        with self._lock:
            self._books[market_id] = cached
            self._books.move_to_end(market_id)
            while len(self._books) > self._max:
                self._books.popitem(last=False)


def _insert_ignoring_conflict(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    key = next(iter(table.primary_key.columns))
    return conn.execute(stmt.returning(key)).first() is not None


def _market(row: Any) -> MarketRecord:
    return MarketRecord(
        market_id=row.market_id,
        delivery_start=as_utc(row.delivery_start),
        delivery_end=as_utc(row.delivery_end),
        opens_at=as_utc(row.opens_at),
        gate_closure=as_utc(row.gate_closure),
        mechanism=Mechanism(row.mechanism),
        fees=Fees(row.operator_fee, row.grid_fee_per_kwh),
        status=row.status,
        close_requested_at=as_utc(row.close_requested_at),
    )


_ORDER_FIELDS = (
    "order_id",
    "client_order_id",
    "participant_id",
    "threshold_id",
    "market_id",
    "side",
    "price",
    "quantity_wh",
    "time_in_force",
    "status",
    "remaining_wh",
    "filled_wh",
    "cancelled_wh",
    "expired_wh",
    "reserved_wh",
    "reserved_ecoin",
    "fee_charged",
    "reason",
)
_ORDER_MUTABLE = (
    "status",
    "remaining_wh",
    "filled_wh",
    "cancelled_wh",
    "expired_wh",
    "reserved_wh",
    "reserved_ecoin",
    "fee_charged",
    "reason",
)
_TRADE_FIELDS = (
    "trade_id",
    "market_id",
    "seq",
    "buy_order_id",
    "sell_order_id",
    "buyer",
    "seller",
    "quantity_wh",
    "price",
    "value_ecoin",
    "fee_ecoin",
    "mechanism",
    "executed_at",
    "status",
    "seller_reserved_wh",
    "buyer_reserved_ecoin",
    "seller_release_block",
    "buyer_release_block",
    "settled_block",
    "tx_id",
    "failure_reason",
)
_TRADE_MUTABLE = (
    "status",
    "seller_reserved_wh",
    "buyer_reserved_ecoin",
    "seller_release_block",
    "buyer_release_block",
    "settled_block",
    "tx_id",
    "failure_reason",
)


def order_record(row: Any) -> OrderRecord:
    record = OrderRecord(*_order_values(row))
    record.fee_charged = bool(record.fee_charged)
    record.created_at = as_utc(row.created_at)
    record.updated_at = as_utc(row.updated_at)
    return record


def trade_record(row: Any) -> TradeRecord:
    record = TradeRecord(**{name: getattr(row, name) for name in _TRADE_FIELDS})
    record.executed_at = as_utc(record.executed_at)
    return record


_ORDER_BY_ID = sa.select(orders).where(orders.c.order_id == sa.bindparam("order_id"))
_ORDER_BY_CLIENT_ID = sa.select(orders).where(
    orders.c.participant_id == sa.bindparam("p"),
    orders.c.client_order_id == sa.bindparam("c"),
)
_MARKET_BY_ID = sa.select(markets).where(markets.c.market_id == sa.bindparam("m"))
_order_values = attrgetter(*_ORDER_FIELDS)
_order_changes = attrgetter(*_ORDER_MUTABLE)
_trade_values = attrgetter(*_TRADE_FIELDS)
_trade_changes = attrgetter(*_TRADE_MUTABLE)
_ORDER_ROW = (*_ORDER_FIELDS, "created_at", "updated_at")
_INSERT_ORDER = BulkStatement.insert(orders, _ORDER_ROW)
_UPDATE_ORDERS = BulkStatement.update(orders, ["order_id"], [*_ORDER_MUTABLE, "updated_at"])
_INSERT_TRADE = BulkStatement.insert(trades, (*_TRADE_FIELDS, "updated_at"))
_UPDATE_TRADES = BulkStatement.update(trades, ["trade_id"], [*_TRADE_MUTABLE, "updated_at"])
_ADJUST_RESERVED = (
    sa.update(accounts)
    .where(accounts.c.participant_id == sa.bindparam("p"))
    .values(
        reserved_wh=accounts.c.reserved_wh + sa.bindparam("e"),
        reserved_ecoin=accounts.c.reserved_ecoin + sa.bindparam("c"),
        updated_at=sa.bindparam("now"),
    )
)
_ADJUST_THRESHOLD = (
    sa.update(threshold_usage)
    .where(threshold_usage.c.threshold_id == sa.bindparam("t"))
    .values(
        open_wh=threshold_usage.c.open_wh + sa.bindparam("wh"),
        open_value_ecoin=threshold_usage.c.open_value_ecoin + sa.bindparam("v"),
        updated_at=sa.bindparam("now"),
    )
)
_HELD_ACCOUNTS = sa.select(  # in ``Account``'s field order
    accounts.c.participant_id,
    accounts.c.energy_wh,
    accounts.c.ecoin,
    accounts.c.block,
    accounts.c.reserved_wh,
    accounts.c.reserved_ecoin,
)
_HELD_USE = sa.select(
    threshold_usage.c.threshold_id,
    threshold_usage.c.open_wh,
    threshold_usage.c.open_value_ecoin,
)
# PostgreSQL locks the rows in the order it returns them: by key, compared as Python compares
# strings (code points; the "C" collation), the order ``_write_counters`` writes them in.
# The database's own collation (en_US, say) would sort "Zed" after "alice".
_LOCK_ACCOUNTS = _HELD_ACCOUNTS.order_by(accounts.c.participant_id.collate("C")).with_for_update()
_LOCK_USE = _HELD_USE.order_by(threshold_usage.c.threshold_id.collate("C")).with_for_update()


_INSERT_USE = sa.insert(threshold_usage)
_MARKET_TRADE = (
    sa.update(markets)
    .where(markets.c.market_id == sa.bindparam("m"))
    .values(
        trades=markets.c.trades + sa.bindparam("n"),
        traded_wh=markets.c.traded_wh + sa.bindparam("q"),
        last_price=sa.bindparam("price"),
    )
)


class SqlOrderbookStore:
    """The store port on one transaction.

    Orders are held in an identity map, so repeated reads in one unit of work cost one query
    and see the unit's own changes. Inserts and updates of orders and trades and the changes
    to the counters (reservations, threshold use, market statistics) are held back and written
    by ``flush``, many rows per statement, when the unit of work ends; so are books' events.
    The checks that must be atomic with their effect (cover, threshold limits, balances) run
    at once as conditional ``UPDATE``s.
    """

    def __init__(self, tx: Transaction, books: BookCache, *, read_only: bool = False) -> None:
        self.tx = tx
        self._conn = tx.conn
        self._books = books
        self._read_only = read_only
        self._heads: dict[str, tuple[int, str | None]] = {}
        self.trace: TraceContext | None = None
        """The trace the events published now belong to; None: the current span's."""
        self._orders: dict[str, OrderRecord] = {}
        self._by_client_id: dict[tuple[str, str], OrderRecord] = {}
        self._new_orders: dict[str, OrderRecord] = {}
        self._changed_orders: dict[str, OrderRecord] = {}
        self._new_trades: list[TradeRecord] = []
        self._changed_trades: dict[str, TradeRecord] = {}
        self._reserved: dict[str, list[int]] = {}
        self._threshold_use: dict[tuple[str, str], list[int]] = {}
        self._market_trades: dict[str, list[int]] = {}
        self._books_to_save: dict[str, OrderBook] = {}
        # Read by ``hold_cover`` (as stored; this unit's changes are in ``_reserved`` and
        # ``_threshold_use``): the account per participant, None without one, and
        # (open_wh, open_value) per threshold.
        self._cover: dict[str, Account | None] = {}
        self._use: dict[str, tuple[int, int]] = {}
        self._new_use: dict[str, str] = {}  # thresholds without a row yet -> participant
        self._journal: list[NewEvent] = []
        # Envelopes, and outbox rows drafted ahead (``submit_drafted``), in publish order.
        self._outbox: list[Envelope | tuple[Any, ...]] = []

    def _writes_now(self) -> None:
        if self._read_only:
            raise NeedsWriteLock("this unit of work writes at once; run it in a write transaction")

    # -- markets ------------------------------------------------------------------------------
    def market(self, market_id: str) -> MarketRecord | None:
        row = self._conn.execute(_MARKET_BY_ID, {"m": market_id}).first()
        return _market(row) if row else None

    def add_market(self, market: MarketRecord) -> MarketRecord:
        self._writes_now()
        _insert_ignoring_conflict(
            self._conn,
            markets,
            {
                "market_id": market.market_id,
                "delivery_start": market.delivery_start,
                "delivery_end": market.delivery_end,
                "opens_at": market.opens_at,
                "gate_closure": market.gate_closure,
                "mechanism": market.mechanism.value,
                "operator_fee": market.fees.operator_fee,
                "grid_fee_per_kwh": market.fees.grid_fee_per_kwh,
                "status": market.status,
                "trades": 0,
                "traded_wh": 0,
            },
        )
        stored = self.market(market.market_id)
        assert stored is not None
        return stored

    def schedule_market(self, market: MarketRecord) -> MarketRecord:
        self._writes_now()
        if self.market(market.market_id) is None:
            return self.add_market(market)
        self._conn.execute(
            sa.update(markets)
            .where(markets.c.market_id == market.market_id)
            .values(
                mechanism=market.mechanism.value,
                operator_fee=market.fees.operator_fee,
                grid_fee_per_kwh=market.fees.grid_fee_per_kwh,
                status=market.status,
            )
        )
        return market

    def close_market(self, market_id: str, at: datetime) -> None:
        self._writes_now()
        self._conn.execute(
            sa.update(markets)
            .where(markets.c.market_id == market_id)
            .values(status="closed", closed_at=at)
        )

    def record_market_trade(self, market_id: str, quantity_wh: int, price: int) -> None:
        stats = self._market_trades.setdefault(market_id, [0, 0, 0])
        stats[0] += 1
        stats[1] += quantity_wh
        stats[2] = price

    def markets_to_close(self, now: datetime, retry_after_s: float) -> list[str]:
        retry_before = now - timedelta(seconds=retry_after_s)
        rows = self._conn.execute(
            sa.select(markets.c.market_id)
            .where(
                markets.c.status != "closed",
                markets.c.gate_closure <= now,
                sa.or_(
                    markets.c.close_requested_at.is_(None),
                    markets.c.close_requested_at < retry_before,
                ),
            )
            .order_by(markets.c.gate_closure)
        )
        return [row[0] for row in rows]

    def mark_close_requested(self, market_id: str, at: datetime) -> None:
        self._writes_now()
        self._conn.execute(
            sa.update(markets).where(markets.c.market_id == market_id).values(close_requested_at=at)
        )

    # -- orders ---------------------------------------------------------------------------
    def order(self, order_id: str) -> OrderRecord | None:
        known = self._orders.get(order_id)
        if known is not None:
            return known
        row = self._conn.execute(_ORDER_BY_ID, {"order_id": order_id}).first()
        return self._remember(order_record(row)) if row else None

    def preload_orders(self, order_ids: Iterable[str]) -> None:
        """Read many orders in one query (the books' consumer knows a batch's orders)."""
        missing = [o for o in set(order_ids) if o not in self._orders]
        for start in range(0, len(missing), 500):
            rows = self._conn.execute(
                sa.select(orders).where(orders.c.order_id.in_(missing[start : start + 500]))
            )
            for row in rows:
                self._remember(order_record(row))

    def _remember(self, order: OrderRecord) -> OrderRecord:
        self._orders[order.order_id] = order
        if order.client_order_id is not None:
            self._by_client_id[(order.participant_id, order.client_order_id)] = order
        return order

    def order_by_client_id(self, participant_id: str, client_order_id: str) -> OrderRecord | None:
        known = self._by_client_id.get((participant_id, client_order_id))
        if known is not None:
            return known
        row = self._conn.execute(
            _ORDER_BY_CLIENT_ID, {"p": participant_id, "c": client_order_id}
        ).first()
        return self._remember(order_record(row)) if row else None

    def draft_submission(
        self, event: OrderSubmitted, command: tuple[str, str, dict[str, Any]]
    ) -> Submission:
        event_type, version, data = CODEC.encode(event)
        command_type, subject, body = command
        envelope = Envelope(
            type=command_type,
            schema_version=1,
            source=SOURCE,
            subject=subject,
            data=body,
            trace=self.trace if self.trace is not None else current_trace_context(),
        )
        [row] = self.tx.outbox_rows([envelope])
        return _Drafted(NewEvent(event_type, version, data), row)

    def submit_drafted(self, order: OrderRecord, submission: Submission) -> None:
        assert isinstance(submission, _Drafted)
        if order.client_order_id is not None and (
            (order.participant_id, order.client_order_id) in self._by_client_id
        ):
            raise DuplicateClientOrderId(order.client_order_id)
        self._journal.append(submission.event)
        self._remember(order)
        self._new_orders[order.order_id] = order
        self._outbox.append(submission.outbox_row)

    def update_order(self, order: OrderRecord) -> None:
        self._remember(order)
        if order.order_id not in self._new_orders:
            self._changed_orders[order.order_id] = order

    def open_orders_of(self, participant_id: str) -> list[OrderRecord]:
        rows = self._conn.execute(
            sa.select(orders)
            .where(orders.c.participant_id == participant_id, orders.c.status.in_(_OPEN))
            .order_by(orders.c.created_at)
        )
        return [self._orders.get(row.order_id) or self._remember(order_record(row)) for row in rows]

    def pending_orders(self, market_id: str) -> list[OrderRecord]:
        rows = self._conn.execute(
            sa.select(orders)
            .where(orders.c.market_id == market_id, orders.c.status == "pending")
            .order_by(orders.c.created_at)
        )
        found = [
            self._orders.get(row.order_id) or self._remember(order_record(row)) for row in rows
        ]
        return [o for o in found if o.status == "pending"]

    # -- trades ---------------------------------------------------------------------------
    def add_trade(self, trade: TradeRecord) -> None:
        self._new_trades.append(trade)

    def trade(self, trade_id: str) -> TradeRecord | None:
        known = self._changed_trades.get(trade_id)
        if known is not None:
            return known
        row = self._conn.execute(sa.select(trades).where(trades.c.trade_id == trade_id)).first()
        return trade_record(row) if row else None

    def update_trade(self, trade: TradeRecord) -> None:
        self._changed_trades[trade.trade_id] = trade

    def trades_to_release(self, participant_id: str, block: int) -> list[TradeRecord]:
        rows = self._conn.execute(
            sa.select(trades).where(
                sa.or_(
                    sa.and_(
                        trades.c.seller == participant_id,
                        trades.c.seller_release_block <= block,
                    ),
                    sa.and_(
                        trades.c.buyer == participant_id,
                        trades.c.buyer_release_block <= block,
                    ),
                )
            )
        )
        return [self._changed_trades.get(row.trade_id) or trade_record(row) for row in rows]

    # -- credentials ----------------------------------------------------------------------------
    def credential_refusal(
        self, threshold_id: str, device_id: str, participant_id: str
    ) -> str | None:
        return credential_refusal(self._conn, threshold_id, device_id, participant_id)

    def credential_refusals(
        self, credentials: Collection[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], str | None]:
        return credential_refusals(self._conn, credentials)

    # -- balances and reservations ---------------------------------------------------------
    def account(self, participant_id: str) -> Account | None:
        row = self._conn.execute(
            _HELD_ACCOUNTS.where(accounts.c.participant_id == participant_id)
        ).first()
        return None if row is None else self._with_pending(Account(*row))

    def balances_of(self, participant_ids: Collection[str]) -> dict[str, tuple[int, int, int]]:
        wanted = sorted(set(participant_ids))
        out: dict[str, tuple[int, int, int]] = {}
        for start in range(0, len(wanted), 500):  # bind parameters stay within every limit
            rows = self._conn.execute(
                sa.select(
                    accounts.c.participant_id,
                    accounts.c.energy_wh,
                    accounts.c.ecoin,
                    accounts.c.block,
                ).where(accounts.c.participant_id.in_(wanted[start : start + 500]))
            )
            out.update({p: (energy, ecoin, block) for p, energy, ecoin, block in rows})
        return out

    def record_reconciliation(
        self,
        run_id: str,
        block: int,
        checked: int,
        skipped: int,
        differences: list[dict[str, Any]],
        at: datetime,
    ) -> bool:
        self._writes_now()
        return _insert_ignoring_conflict(
            self._conn,
            reconciliations,
            {
                "run_id": run_id,
                "block": block,
                "checked": checked,
                "skipped": skipped,
                "differences": orjson.dumps(differences).decode(),
                "completed_at": at,
            },
        )

    def record_balance(self, participant_id: str, energy_wh: int, ecoin: int, block: int) -> bool:
        self._writes_now()
        now = _now()
        updated = self._conn.execute(
            sa.update(accounts)
            .where(accounts.c.participant_id == participant_id, accounts.c.block <= block)
            .values(energy_wh=energy_wh, ecoin=ecoin, block=block, updated_at=now)
        )
        if updated.rowcount:
            return True
        return _insert_ignoring_conflict(
            self._conn,
            accounts,
            {
                "participant_id": participant_id,
                "energy_wh": energy_wh,
                "ecoin": ecoin,
                "block": block,
                "reserved_wh": 0,
                "reserved_ecoin": 0,
                "updated_at": now,
            },
        )

    def hold_cover(self, participants: Collection[tuple[str, str]]) -> None:
        """Read the accounts and threshold use of many (participant, threshold) pairs at once,
        locked until the unit of work ends (SQLite: the transaction holds the write lock;
        PostgreSQL: ``FOR UPDATE``, accounts before thresholds, each in key order, as
        ``_write_counters`` writes them). ``reserve_for_order`` decides orders on them in
        memory; the changes are written with the other counters, a statement per table."""
        self._writes_now()
        thresholds = {t: p for p, t in participants if t not in self._use}
        self._hold_accounts({p for p, _ in participants})
        lock = self._conn.dialect.name == "postgresql"
        keys = sorted(thresholds)
        for start in range(0, len(keys), 500):
            query = (_LOCK_USE if lock else _HELD_USE).where(
                threshold_usage.c.threshold_id.in_(keys[start : start + 500])
            )
            for row in self._conn.execute(query):
                self._use[row[0]] = (row[1], row[2])
        for threshold, participant in thresholds.items():
            if threshold not in self._use:  # no row yet: written by flush if it is used
                self._use[threshold] = (0, 0)
                self._new_use[threshold] = participant

    def _hold_accounts(self, participants: Collection[str]) -> None:
        """Read (and on PostgreSQL lock) the accounts not held yet, in key order."""
        wanted = sorted(set(participants) - self._cover.keys())
        lock = self._conn.dialect.name == "postgresql"
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            query = (_LOCK_ACCOUNTS if lock else _HELD_ACCOUNTS).where(
                accounts.c.participant_id.in_(chunk)
            )
            found = {row[0]: Account(*row) for row in self._conn.execute(query)}
            for participant in chunk:
                self._cover[participant] = found.get(participant)

    def _with_pending(self, account: Account) -> Account:
        """The held account with this unit's reservations added."""
        pending = self._reserved.get(account.participant_id)
        if not pending:
            return account
        return replace(
            account,
            reserved_wh=account.reserved_wh + pending[0],
            reserved_ecoin=account.reserved_ecoin + pending[1],
        )

    def locked_accounts(self, participant_ids: Collection[str]) -> dict[str, Account]:
        self._writes_now()
        self._hold_accounts(participant_ids)
        held = (self._cover[p] for p in participant_ids)
        return {a.participant_id: self._with_pending(a) for a in held if a is not None}

    def reserve_free_ecoin(self, participant_id: str, amount: int) -> int | None:
        account = self.locked_accounts([participant_id]).get(participant_id)
        if account is None:
            return None
        if account.free_ecoin >= amount:
            self.adjust_reserved(participant_id, 0, amount)
        return account.free_ecoin

    def payout_hold(self, request_id: str) -> PayoutHold | None:
        row = self._conn.execute(
            sa.select(payout_holds).where(payout_holds.c.request_id == request_id)
        ).first()
        return None if row is None else _payout_hold(row)

    def save_payout_hold(self, hold: PayoutHold) -> None:
        self._writes_now()
        values = {
            "status": hold.status,
            "release_block": hold.release_block,
            "updated_at": _now(),
        }
        updated = self._conn.execute(
            sa.update(payout_holds)
            .where(payout_holds.c.request_id == hold.request_id)
            .values(**values)
        )
        if not updated.rowcount:
            self._conn.execute(
                sa.insert(payout_holds).values(
                    request_id=hold.request_id,
                    participant_id=hold.participant_id,
                    amount=hold.amount,
                    **values,
                )
            )

    def payout_holds_to_release(self, participant_id: str, block: int) -> list[PayoutHold]:
        rows = self._conn.execute(
            sa.select(payout_holds).where(
                payout_holds.c.participant_id == participant_id,
                payout_holds.c.status == "held",
                payout_holds.c.release_block <= block,
            )
        )
        return [_payout_hold(row) for row in rows]

    def reserve_for_order(
        self,
        participant_id: str,
        threshold_id: str,
        claim: ThresholdClaim,
        energy_wh: int,
        ecoin: int,
    ) -> str | None:
        """Decided in memory on the rows ``hold_cover`` read and locked (held now if they are
        not yet), with this unit's changes; the reservation is written at the end."""
        if participant_id not in self._cover or threshold_id not in self._use:
            self.hold_cover([(participant_id, threshold_id)])
        cover = self._cover[participant_id]
        if cover is None:
            return "insufficient_cover"
        account = self._with_pending(cover)
        # Only the asset an order reserves has to be free: a seller whose sale is already in
        # its balance (free energy briefly below zero until the settlement arrives) may bid.
        if (energy_wh and account.free_wh < energy_wh) or (ecoin and account.free_ecoin < ecoin):
            return "insufficient_cover"
        open_wh, open_value = self._use[threshold_id]
        used = self._threshold_use.get((participant_id, threshold_id), (0, 0))
        if (
            open_wh + used[0] + claim.open_wh > claim.max_open_wh
            or open_value + used[1] + claim.open_value > claim.max_value
        ):
            return "threshold_exhausted"
        self.adjust_reserved(participant_id, energy_wh, ecoin)
        self.adjust_threshold(participant_id, threshold_id, claim.open_wh, claim.open_value)
        return None

    def adjust_reserved(self, participant_id: str, energy_wh: int, ecoin: int) -> None:
        pending = self._reserved.setdefault(participant_id, [0, 0])
        pending[0] += energy_wh
        pending[1] += ecoin

    def adjust_threshold(
        self, participant_id: str, threshold_id: str, open_wh: int, open_value: int
    ) -> None:
        pending = self._threshold_use.setdefault((participant_id, threshold_id), [0, 0])
        pending[0] += open_wh
        pending[1] += open_value

    # -- books --------------------------------------------------------------------------------
    def book(self, market_id: str) -> OrderBook:
        book, token = self._books.checked(self.tx, market_id)
        self._heads.setdefault(market_id, (book.version, token))
        return book

    def save_book(self, book: OrderBook) -> None:
        self._books_to_save[book.market_id] = book

    # -- messaging ----------------------------------------------------------------------------
    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        # The trace is taken now, inside the span of the command that caused the event; the
        # outbox rows are written by ``flush``, all in one statement.
        self._outbox.append(
            Envelope(
                type=event_type,
                schema_version=1,
                source=SOURCE,
                subject=subject,
                data=data,
                trace=self.trace if self.trace is not None else current_trace_context(),
            )
        )

    # -- the end of the unit of work ----------------------------------------------------------
    def flush(self) -> None:
        """Write what was held back. Books first: a concurrent writer of a book fails the unit
        before anything else is written."""
        self.prepare().write(self.tx)

    def abandon(self) -> None:
        """The unit is given up: forget the books it used (they may hold unstored events)."""
        for market_id in self._heads:
            self._books.forget(market_id)

    def prepare(self) -> PreparedUnit:
        """What was held back, as rows ready to write (encoded, validated, serialized); the
        unit starts afresh. On a read-only unit this is the work done before the write lock,
        and ``PreparedUnit.write`` happens in a write transaction after."""
        now = _now()
        books = list(self._books_to_save.values())
        self._books_to_save.clear()
        save, tokens = self._books.prepare(books)
        journal = (
            event_rows([(f"entry:{uuid.uuid4().hex}", 0, self._journal)]) if self._journal else []
        )
        self._journal = []
        unit = PreparedUnit(
            self._books,
            dict(self._heads),  # every book read, also those a command left unchanged
            books,
            save,
            tokens,
            journal,
            new_orders=[
                (*_order_values(o), o.created_at, o.updated_at) for o in self._new_orders.values()
            ],
            changed_orders=[
                (*_order_changes(o), now, o.order_id) for o in self._changed_orders.values()
            ],
            new_trades=[(*_trade_values(t), now) for t in self._new_trades],
            changed_trades=[
                (*_trade_changes(t), now, t.trade_id) for t in self._changed_trades.values()
            ],
            new_use=[
                {"threshold_id": t, "participant_id": p, "open_wh": 0, "open_value_ecoin": 0}
                | {"updated_at": now}
                for t, p in sorted(self._new_use.items())
                if any(self._threshold_use.get((p, t), ()))
            ],
            reserved={p: (d[0], d[1]) for p, d in self._reserved.items() if d[0] or d[1]},
            used={k: (d[0], d[1]) for k, d in self._threshold_use.items() if d[0] or d[1]},
            market_trades=[
                {"m": m, "n": n, "q": q, "price": price}
                for m, (n, q, price) in sorted(self._market_trades.items())
            ],
            outbox=self._outbox_rows(),
            now=now,
        )
        self._new_orders.clear()
        self._changed_orders.clear()
        self._new_trades.clear()
        self._changed_trades.clear()
        self._new_use.clear()
        self._reserved.clear()
        self._threshold_use.clear()
        self._market_trades.clear()
        self._outbox = []
        return unit

    def _outbox_rows(self) -> list[tuple[Any, ...]]:
        envelopes = [e for e in self._outbox if isinstance(e, Envelope)]
        made = iter(self.tx.outbox_rows(envelopes))
        return [next(made) if isinstance(e, Envelope) else e for e in self._outbox]


class PreparedUnit:
    """A unit of work's writes, made ready before they are written (``SqlOrderbookStore
    .prepare``). ``write`` runs them in a write transaction; for a unit prepared outside one,
    ``current`` first tells whether the books it worked on are still as it read them."""

    def __init__(
        self,
        books: BookCache,
        heads: dict[str, tuple[int, str | None]],
        saved_books: list[OrderBook],
        save: PreparedSave[OrderBook],
        tokens: dict[str, str],
        journal: list[tuple[Any, ...]],
        *,
        new_orders: list[tuple[Any, ...]],
        changed_orders: list[tuple[Any, ...]],
        new_trades: list[tuple[Any, ...]],
        changed_trades: list[tuple[Any, ...]],
        new_use: list[dict[str, Any]],
        reserved: dict[str, tuple[int, int]],
        used: dict[tuple[str, str], tuple[int, int]],
        market_trades: list[dict[str, Any]],
        outbox: list[tuple[Any, ...]],
        now: datetime,
    ) -> None:
        self._books = books
        self._heads = heads
        self._saved_books = saved_books
        self._save = save
        self._tokens = tokens
        self._journal = journal
        self._new_orders = new_orders
        self._changed_orders = changed_orders
        self._new_trades = new_trades
        self._changed_trades = changed_trades
        self._new_use = new_use
        self._reserved = reserved
        self._used = used
        self._market_trades = market_trades
        self._outbox = outbox
        self._now = now

    def current(self, tx: Transaction) -> bool:
        return self._books.still_current(tx, self._heads)

    def discard(self) -> None:
        """Not written: the books it worked on hold events that were not stored."""
        for book in self._saved_books:
            self._books.forget(book.market_id)

    def write(self, tx: Transaction) -> None:
        conn = tx.conn
        if self._saved_books:
            try:
                self._save.write(tx)
            except ConcurrencyConflict:
                self.discard()
                raise
            self._books.saved(tx, self._saved_books, self._tokens)
        tx.insert_event_rows(self._journal)
        if self._new_orders:
            try:
                _INSERT_ORDER.execute(conn, self._new_orders)
            except IntegrityError as exc:
                raise DuplicateClientOrderId(str(exc.orig)) from None
        _UPDATE_ORDERS.execute(conn, self._changed_orders)
        _INSERT_TRADE.execute(conn, self._new_trades)
        _UPDATE_TRADES.execute(conn, self._changed_trades)
        if self._new_use:
            try:
                conn.execute(_INSERT_USE, self._new_use)
            except IntegrityError as exc:
                raise Contention(f"threshold use added concurrently: {exc.orig}") from None
        _write_counters(conn, self._reserved, self._used, self._now)
        if self._market_trades:
            conn.execute(_MARKET_TRADE, self._market_trades)
        tx.insert_outbox_rows(self._outbox)


def _write_counters(
    conn: sa.Connection,
    reserved: dict[str, tuple[int, int]],
    used: dict[tuple[str, str], tuple[int, int]],
    now: datetime,
) -> None:
    """Reservations and threshold use. Every unit of work locks these rows in one order: the
    accounts by participant id, then the thresholds by threshold id (as ``hold_cover`` reads
    them), so that two transactions never wait for each other in a circle (PostgreSQL; SQLite
    locks the whole database). A unit that changes a threshold and not its account (a sale:
    its reservation moves from the ask to the trade) skips the account, not the order."""
    if reserved:
        conn.execute(
            _ADJUST_RESERVED,
            [{"p": p, "e": e, "c": c, "now": now} for p, (e, c) in sorted(reserved.items())],
        )
    if used:
        conn.execute(
            _ADJUST_THRESHOLD,
            [
                {"t": t, "wh": wh, "v": v, "now": now}
                for (_, t), (wh, v) in sorted(used.items(), key=lambda item: item[0][1])
            ],
        )


# PostgreSQL: deadlock detected, serialization failure, lock timeout; SQLite: busy/locked.
_CONTENTION_CODES = frozenset({"40P01", "40001", "55P03"})


def is_contention(error: DBAPIError) -> bool:
    code = getattr(error.orig, "sqlstate", None)
    if code in _CONTENTION_CODES:
        return True
    message = str(error.orig).lower()
    return "database is locked" in message or "database is busy" in message


def reading_unit(store: EventStore, books: BookCache) -> UnitOfWork:
    """Units of work on a read-only connection, to prepare work before the write transaction;
    one that writes at once raises ``NeedsWriteLock``."""

    @contextmanager
    def open_unit() -> Iterator[SqlOrderbookStore]:
        with store.read_transaction() as rtx:
            yield SqlOrderbookStore(rtx, books, read_only=True)

    return open_unit


def unit_of_work(store: EventStore, books: BookCache) -> UnitOfWork:
    @contextmanager
    def open_unit() -> Iterator[SqlOrderbookStore]:
        try:
            with store.transaction() as tx:
                unit = SqlOrderbookStore(tx, books)
                yield unit
                unit.flush()
        except DBAPIError as error:
            if is_contention(error):
                raise Contention(str(error.orig)) from error
            raise

    return open_unit
