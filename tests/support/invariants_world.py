"""The trade, end to end, in one process: the order book, settlement and the ledger adapter's
executor composed from their real application layers, with this module playing Kafka between
them, and the checks of the architecture's invariants on what they do.

- **Order book**: ``OrderEntry``, ``Matcher``, ``MarketScheduler`` and the outcome handlers on its
  real SQL store (``SqlOrderbookStore``, SQLite), wired as ``prosum_orderbook.bootstrap`` wires
  them: the books' consumer applies a fetched batch of commands in one transaction, the other
  consumer one event per transaction, each recording what it processed.
- **Settlement**: ``record_trade``, ``open_batch``, ``apply_batch_outcome``, the top-up and payout
  use cases and ``record_balance`` on its real SQL store, wired as its bootstrap does.
- **Ledger adapter**: ``accept_command`` and ``CommandExecutor`` on ``FakeCommandLog`` and the
  in-memory chain (which passes the backend contract of the EVM and MultiChain backends), behind
  a proxy that can make the chain unavailable for one call (before or after it acted, or when
  the balances are read after a confirmed command).
- **Identity and metering** are stood in for: participants activated, suspended, reinstated; chain
  permissions granted and revoked; energy minted.

The order book can be restarted (nothing kept in memory); before it is, every book it holds is
compared with the one its events rebuild, from the latest snapshot and from the first event
(books snapshot every ``SNAPSHOT_EVERY`` events here, so that snapshots are taken and used).

**The broker** (``Broker``) keeps a log per topic and partition (partition = crc32(key) mod 3, so
one key's messages stay in order, as in Kafka) and an offset per consumer group and partition.
The relays move each service's outbox (``EventStore.unsent`` / ``mark_sent``; the ledger's
``FakeCommandLog.published``) into the logs; a relay that "crashes" after publishing leaves the
rows unsent and publishes them again (duplicates with the same event id). A consumer may be
rewound (it crashed before committing its offsets) and redelivered what it already applied.
Every message is decoded through the schema registry, as a consumer does; what would be
dead-lettered fails the test.
"""

from __future__ import annotations

import shutil
import sqlite3
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from prosum_auth.trust import apply_identity_event
from prosum_contracts import Envelope, SchemaRegistry
from prosum_contracts.topics import (
    IDENTITY_EVENTS,
    LEDGER_COMMANDS,
    LEDGER_EVENTS,
    ORDERBOOK_EVENTS,
    SETTLEMENT_EVENTS,
)
from prosum_ledger.adapters.memory import InMemoryChain
from prosum_ledger.application.commands import (
    BALANCE_CHANGED,
    CONFIRMED,
    FAILED,
    CommandExecutor,
    accept_command,
)
from prosum_ledger.domain.commands import CommandKind
from prosum_ledger.domain.model import LedgerError, ReasonCode
from prosum_orderbook.adapters.store import CODEC as BOOK_CODEC
from prosum_orderbook.adapters.store import BookCache, SqlOrderbookStore
from prosum_orderbook.adapters.store import reading_unit as orderbook_reading_unit
from prosum_orderbook.adapters.store import unit_of_work as orderbook_unit_of_work
from prosum_orderbook.adapters.tables import (
    accounts,
    markets,
    orders,
    payout_holds,
    threshold_usage,
    trades,
)
from prosum_orderbook.application import outcomes
from prosum_orderbook.application.entry import (
    Authority,
    MarketDefaults,
    NewOrder,
    OrderEntry,
    OrderRefused,
)
from prosum_orderbook.application.matching import Matcher
from prosum_orderbook.application.messages import BALANCE_CHANGED as OB_BALANCE_CHANGED
from prosum_orderbook.application.messages import (
    BOOK_COMMANDS,
    COMMANDS_TOPIC,
    TRADE_EXECUTED,
    TRADE_FAILED,
    TRADE_SETTLED,
)
from prosum_orderbook.application.ports import OrderRecord
from prosum_orderbook.application.scheduler import MarketScheduler
from prosum_orderbook.domain.book import OrderBook
from prosum_orderbook.domain.cover import order_reservation
from prosum_orderbook.domain.markets import Fees, Mechanism, Schedule, market_id_for
from prosum_orderbook.domain.units import parse_price
from prosum_platform.domain import DomainRuleViolation
from prosum_platform.eventstore import EventStore, Transaction, create_store_engine
from prosum_platform.eventstore.schema import outbox
from prosum_platform.service.migrations import upgrade
from prosum_settlement.adapters.store import SqlSettlementStore, instructions
from prosum_settlement.adapters.store import balances as settlement_balances
from prosum_settlement.adapters.store import funds as settlement_funds
from prosum_settlement.adapters.store import unit_of_work as settlement_unit_of_work
from prosum_settlement.application import services
from tests.support.fakes import FakeCommandLog

PARTICIPANTS = ("p0", "p1", "p2", "p3")
OPERATOR = "operator"
ACCOUNTS = (*PARTICIPANTS, OPERATOR)
ALL_PERMISSIONS = ["connect", "send", "receive", "energy.issue"]
SCHEDULE = Schedule(open_ahead=timedelta(hours=1), gate_closure=timedelta(minutes=5))
START = datetime(2026, 11, 21, 12, 0, 7, tzinfo=UTC)
CALL_AUCTION_MARKETS = (
    market_id_for(datetime(2026, 11, 21, 12, 30, tzinfo=UTC)),
    market_id_for(datetime(2026, 11, 21, 13, 15, tzinfo=UTC)),
)
"""Call auctions chosen by ops: the first opens as one at the start (it is open by the calendar
and nobody opened it yet); the second is scheduled as one and opens by the calendar at 12:15."""
AUCTION = -1
CLOSED = -2
"""Market slots: the call-auction market, and the market whose gate has just closed."""
FEES = Fees(operator_fee=2, grid_fee_per_kwh=10_000)
POLICY = services.BatchPolicy(
    max_trades=3, window_s=0.0, max_in_flight=2, max_attempts=3, fee_account=OPERATOR
)
MAX_OPEN_WH = 8_000
"""Each participant's threshold: open orders of at most this many Wh (so some are exhausted)."""
PARTITIONS = 3

MATCHER = "orderbook-matcher"
ORDERBOOK = "orderbook"
SETTLEMENT_TRADES = "settlement-trades"
SETTLEMENT_LEDGER = "settlement-ledger"
LEDGER = "ledger-adapter"
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    MATCHER: (COMMANDS_TOPIC,),
    ORDERBOOK: (IDENTITY_EVENTS, LEDGER_EVENTS, SETTLEMENT_EVENTS),
    SETTLEMENT_TRADES: (ORDERBOOK_EVENTS,),
    SETTLEMENT_LEDGER: (LEDGER_EVENTS,),
    LEDGER: (LEDGER_COMMANDS,),
}
CONSUMERS = tuple(SUBSCRIPTIONS)
SOURCES = ("orderbook", "settlement", "ledger")

REFUSALS = frozenset(
    {
        "insufficient_energy",
        "insufficient_ecoin",
        "threshold_exhausted",
        "participant_not_active",
        "market_closed",
        "market_not_open",
        "ioc_not_in_call_auction",
    }
)
TERMINAL_ORDER = frozenset({"filled", "cancelled", "expired", "rejected"})


# -- databases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    """Migrated, empty SQLite databases of the two services, copied for each example."""

    orderbook: Path
    settlement: Path

    @classmethod
    def create(cls, folder: Path) -> Templates:
        made = {}
        for service in ("orderbook", "settlement"):
            path = folder / f"{service}.db"
            upgrade(f"prosum_{service}", f"sqlite:///{path}")
            with closing(sqlite3.connect(path)) as conn:  # fold the WAL into the file
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            made[service] = path
        return cls(made["orderbook"], made["settlement"])


# -- the broker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    payload: bytes


class Broker:
    """Topic logs by partition and consumer-group offsets, all in memory."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], list[Message]] = defaultdict(list)
        self.offsets: dict[tuple[str, str, int], int] = defaultdict(int)

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        partition = zlib.crc32(key.encode()) % PARTITIONS
        self.logs[(topic, partition)].append(Message(topic, key, payload))

    def backlog(self, consumer: str) -> list[tuple[str, int]]:
        """The consumer's partitions with messages it has not read, in a stable order."""
        return [
            (topic, partition)
            for topic in SUBSCRIPTIONS[consumer]
            for partition in range(PARTITIONS)
            if self.offsets[(consumer, topic, partition)] < len(self.logs[(topic, partition)])
        ]

    def poll(self, consumer: str, topic: str, partition: int, limit: int) -> list[Message]:
        offset = self.offsets[(consumer, topic, partition)]
        batch = self.logs[(topic, partition)][offset : offset + limit]
        self.offsets[(consumer, topic, partition)] = offset + len(batch)
        return batch

    def rewind(self, consumer: str, pick: int, by: int) -> None:
        """The consumer crashed before committing its last ``by`` offsets on one partition."""
        read = [
            (topic, partition)
            for topic in SUBSCRIPTIONS[consumer]
            for partition in range(PARTITIONS)
            if self.offsets[(consumer, topic, partition)] > 0
        ]
        if not read:
            return
        topic, partition = read[pick % len(read)]
        key = (consumer, topic, partition)
        self.offsets[key] = max(0, self.offsets[key] - by)

    def idle(self) -> bool:
        return not any(self.backlog(consumer) for consumer in CONSUMERS)


# -- the chain --------------------------------------------------------------------------------


class FlakyChain:
    """The in-memory chain, except that one armed call finds the chain unavailable: ``before``
    it acts (nothing happened), ``after`` it acted (the adapter does not know it did), or when
    balances are read after a confirmed command."""

    SUBMITTING = frozenset(
        {"grant", "revoke", "mint_energy", "mint_ecoin", "burn_ecoin", "settle_batch"}
    )

    def __init__(self, chain: InMemoryChain) -> None:
        self.chain = chain
        self.armed: str | None = None
        self.name = chain.name

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.chain, name)
        if name in self.SUBMITTING:
            return self._submitting(target)
        if name == "balances_many":
            return self._reading(target)
        return target

    def _unavailable(self) -> LedgerError:
        return LedgerError(ReasonCode.CHAIN_UNAVAILABLE, "connection reset by peer")

    def _submitting(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def submit(*args: Any, **kwargs: Any) -> Any:
            if self.armed == "before":
                self.armed = None
                raise self._unavailable()
            result = call(*args, **kwargs)
            if self.armed == "after":
                self.armed = None
                raise self._unavailable()
            return result

        return submit

    def _reading(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def read(*args: Any, **kwargs: Any) -> Any:
            if self.armed == "balances":
                self.armed = None
                raise self._unavailable()
            return call(*args, **kwargs)

        return read


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


# -- the world --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """A mint or burn the test asked for: its asset, participant and signed amount."""

    asset: str
    participant: str
    amount: int


class World:
    def __init__(self, folder: Path, templates: Templates) -> None:
        self.folder = folder
        self.registry = SchemaRegistry.load()
        self.clock = Clock()
        self.broker = Broker()
        self._engines: list[sa.Engine] = []
        # order book
        self.ob = self._store(templates.orderbook, folder / "orderbook.db")
        self._order_ids = (f"o{n}" for n in range(1, 10**9))
        self._start_orderbook()
        # settlement
        self.st = self._store(templates.settlement, folder / "settlement.db")
        self.st_uow = settlement_unit_of_work(self.st)
        # ledger adapter
        self.ledger_log = FakeCommandLog()
        self.chain = InMemoryChain()
        self.backend = FlakyChain(self.chain)
        self.executor = CommandExecutor(self.ledger_log.unit, self.backend)  # type: ignore[arg-type]
        self._ledger_outbox: list[Envelope] = []
        self._ledger_sent = 0
        # what the test knows independently of the chain's balances
        self.moves: dict[str, Move] = {}
        """Every mint and burn sent, by command id."""
        self.outcomes: dict[str, str] = {}
        """command id -> the ledger's outcome event type, for the moves."""
        self.revoked_ever: set[str] = set()
        self.order_ids: list[str] = []
        self.owners: dict[str, str] = {}
        self.stats: dict[str, int] = defaultdict(int)
        self._commands = 0

    def _start_orderbook(self) -> None:
        """The order book's process (re)starts: nothing in memory but what its store holds."""
        self.books = BookCache()
        self.ob_uow = orderbook_unit_of_work(self.ob, self.books)
        defaults = MarketDefaults(Mechanism.CONTINUOUS, FEES)
        self.entry = OrderEntry(
            self.ob_uow,
            SCHEDULE,
            defaults,
            self.clock,
            lambda: next(self._order_ids),
            reading=orderbook_reading_unit(self.ob, self.books),
        )
        self.matcher = Matcher(SCHEDULE, self.clock)
        self.scheduler = MarketScheduler(self.ob_uow, SCHEDULE, defaults, self.clock)

    def restart_orderbook(self) -> None:
        """Restart the order book; first check that every book it holds in memory is the one
        its events (from the latest snapshot, and from the first event) rebuild."""
        with self.ob.transaction() as tx:
            for market_id in list(self.books._books):
                held = self.books._books[market_id].book
                rebuilt = BookCache().get(tx, market_id)
                assert rebuilt.state() == held.state(), market_id
                replayed = OrderBook(market_id)
                for stored in tx.load(market_id):
                    event = BOOK_CODEC.decode(stored.event_type, stored.schema_version, stored.data)
                    replayed.replay(event, stored.version)
                assert replayed.state() == held.state(), market_id
        self._start_orderbook()

    def _store(self, template: Path, path: Path) -> EventStore:
        shutil.copyfile(template, path)
        engine = create_store_engine(f"sqlite:///{path}", pool_size=2)
        self._engines.append(engine)
        return EventStore(engine, self.registry)

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()

    # -- stand-ins for identity and metering ------------------------------------------------
    def _command_id(self, prefix: str) -> str:
        self._commands += 1
        return f"{prefix}-{self._commands}"

    def _send_ledger_command(
        self, kind: CommandKind, data: dict[str, Any], key: str, source: str = "ops"
    ) -> None:
        envelope = Envelope(
            type=kind.value, schema_version=1, source=source, subject=key, data=data
        )
        self.registry.validate(envelope)
        self.broker.publish(LEDGER_COMMANDS, key, envelope.to_bytes())

    def _identity(self, type_: str, participant_id: str) -> None:
        envelope = Envelope(
            type=type_,
            schema_version=1,
            source="identity",
            subject=participant_id,
            data={"participant_id": participant_id},
        )
        self.broker.publish(IDENTITY_EVENTS, participant_id, envelope.to_bytes())

    def setup(self) -> None:
        """The day begins: assets on chain, participants onboarded and granted, the operator's
        fee account able to receive, a call-auction market chosen ahead by ops."""
        self._send_ledger_command(
            CommandKind.SETUP_ASSETS, {"command_id": "setup-assets"}, "setup-assets"
        )
        for p in ACCOUNTS:
            self._grant(p)
        for p in PARTICIPANTS:
            self._identity("identity.participant_activated", p)
        for market_id in CALL_AUCTION_MARKETS:
            self.entry.choose_mechanism(market_id, Mechanism.CALL_AUCTION)
        self.scheduler.run_once()
        self.drain()

    def _grant(self, participant_id: str) -> None:
        self._send_ledger_command(
            CommandKind.GRANT_PERMISSIONS,
            {
                "command_id": self._command_id(f"grant-{participant_id}"),
                "participant_id": participant_id,
                "permissions": ALL_PERMISSIONS,
            },
            participant_id,
        )

    def grant(self, participant_id: str) -> None:
        self._grant(participant_id)

    def revoke(self, participant_id: str, permission: str) -> None:
        """Injected failure: ops revokes a chain permission (send, receive, energy.issue)."""
        self.revoked_ever.add(participant_id)
        self._send_ledger_command(
            CommandKind.REVOKE_PERMISSIONS,
            {
                "command_id": self._command_id(f"revoke-{participant_id}"),
                "participant_id": participant_id,
                "permissions": [permission],
            },
            participant_id,
        )

    def suspend(self, participant_id: str) -> None:
        self._identity("identity.participant_suspended", participant_id)

    def reinstate(self, participant_id: str) -> None:
        self._identity("identity.participant_reinstated", participant_id)

    def mint_energy(self, participant_id: str, amount_wh: int) -> None:
        """Metering's verified surplus; fails on chain if the participant lost energy.issue or
        receive (an injected mint failure)."""
        command_id = self._command_id(f"mint-{participant_id}")
        self.moves[command_id] = Move("energy", participant_id, amount_wh)
        self._send_ledger_command(
            CommandKind.MINT_ENERGY,
            {
                "command_id": command_id,
                "participant_id": participant_id,
                "amount_wh": amount_wh,
                "evidence_hash": f"{self._commands:064x}",
            },
            participant_id,
            "metering",
        )

    # -- settlement's top-ups and payouts (ops approves at once) ------------------------------
    def _funds(self, kind: str, participant_id: str, amount: int) -> None:
        reference = f"BANK-{self._command_id(kind)}"
        try:
            with self.st_uow() as store:
                request, created = services.request_funds(
                    store, kind, participant_id, amount, reference
                )
            assert created
            with self.st_uow() as store:
                services.decide_funds(store, request.id, "ops-1", approve=True)
        except DomainRuleViolation as refusal:
            if kind != "payout" or refusal.reason != "insufficient_ecoin":
                raise
            self.stats["payout_refused_by_settlement"] += 1
            return
        sign = 1 if kind == "topup" else -1
        self.moves[f"{kind}-{request.id}"] = Move("ecoin", participant_id, sign * amount)

    def topup(self, participant_id: str, amount: int) -> None:
        self._funds("topup", participant_id, amount)

    def payout(self, participant_id: str, amount: int) -> None:
        """A payout burns ecoin once the order book holds it: refused by settlement when the
        balance it holds (less other payouts) is short, by the book when open bids or
        unsettled purchases hold the ecoin."""
        self._funds("payout", participant_id, amount)

    # -- order entry ------------------------------------------------------------------------
    def authority(self, participant_id: str) -> Authority:
        return Authority(
            participant_id=participant_id,
            threshold_id=f"th-{participant_id}",
            device_id=f"dev-{participant_id}",
            max_open_wh=MAX_OPEN_WH,
            max_ecoin=10**12,
        )

    def market_for(self, slot: int) -> str:
        """The ``slot``-th market open by the calendar now, the call-auction market (open or
        not yet), or the market whose gate has just closed."""
        open_now = SCHEDULE.open_markets(self.clock.now)
        if slot == AUCTION:
            for market_id in CALL_AUCTION_MARKETS:
                if SCHEDULE.window(market_id).state_at(self.clock.now) != "closed":
                    return market_id
            return CALL_AUCTION_MARKETS[-1]
        if slot == CLOSED:
            first = SCHEDULE.window(open_now[0]).delivery_start
            return market_id_for(first - timedelta(minutes=15))
        return open_now[slot % len(open_now)]

    def place(self, requests: Sequence[tuple[str, int, str, int, str, str]]) -> None:
        """Orders placed together (one group commit); each is checked against the free balance
        the book held just before it: accepted only if covered, refused for cover only if not."""
        news = [
            (
                self.authority(p),
                NewOrder(self.market_for(slot), side, parse_price(price), quantity, tif),
            )
            for p, slot, side, quantity, price, tif in requests
        ]
        free = {p: self._free(p) for p, *_ in requests}
        results = self.entry.place_many(news)
        assert len(results) == len(news)
        # place_many takes the orders in participant order, each participant's as they came
        for i in sorted(range(len(news)), key=lambda i: news[i][0].participant_id):
            authority, new = news[i]
            p = authority.participant_id
            fees = self._fees(new.market_id)
            cover = order_reservation(new.side, new.quantity_wh, new.price, False, fees)
            outcome = results[i]
            if isinstance(outcome, OrderRecord):
                self.stats["accepted"] += 1
                energy, ecoin = free[p]
                # an ask needs free energy and a bid free ecoin; neither needs the other asset,
                # whose free balance may be below zero for a moment (a sale or purchase already
                # in the balance, its settlement not yet arrived) or after a payout
                assert _covered(cover.energy_wh, energy) and _covered(cover.ecoin, ecoin), (
                    f"{outcome.order_id} of {p} accepted with cover {cover} but only "
                    f"{energy} Wh / {ecoin} ecoin free"
                )
                free[p] = (energy - cover.energy_wh, ecoin - cover.ecoin)
                self.order_ids.append(outcome.order_id)
                self.owners[outcome.order_id] = p
            else:
                assert isinstance(outcome, OrderRefused), outcome
                assert outcome.reason in REFUSALS, (outcome.reason, outcome.message)
                self.stats[f"refused:{outcome.reason}"] += 1
                energy, ecoin = free[p]
                if outcome.reason == "insufficient_energy":
                    assert not _covered(cover.energy_wh, energy), (new, free[p])
                if outcome.reason == "insufficient_ecoin":
                    assert not _covered(cover.ecoin, ecoin), (new, free[p])

    def _fees(self, market_id: str) -> Fees:
        row = self._one(self.ob, markets, market_id=market_id)
        return FEES if row is None else Fees(row.operator_fee, row.grid_fee_per_kwh)

    def _free(self, participant_id: str) -> tuple[int, int]:
        row = self._one(self.ob, accounts, participant_id=participant_id)
        if row is None:
            return (0, 0)
        return (row.energy_wh - row.reserved_wh, row.ecoin - row.reserved_ecoin)

    def cancel(self, pick: int) -> None:
        if not self.order_ids:
            return
        order_id = self.order_ids[pick % len(self.order_ids)]
        reason = None
        try:
            self.entry.cancel(self.owners[order_id], order_id)
        except OrderRefused as refusal:
            reason = refusal.reason
        assert reason in (None, "order_not_open"), reason

    def reduce(self, pick: int, by_wh: int) -> None:
        if not self.order_ids:
            return
        order_id = self.order_ids[pick % len(self.order_ids)]
        reason = None
        try:
            self.entry.reduce(self.owners[order_id], order_id, by_wh)
        except OrderRefused as refusal:
            reason = refusal.reason
        assert reason in (None, "order_not_open", "reduce_exceeds_remaining"), reason

    def advance(self, minutes: int) -> None:
        """Time passes; the market calendar opens markets and closes those past gate closure."""
        self.clock.now += timedelta(minutes=minutes)
        self.scheduler.run_once()

    # -- the relays -------------------------------------------------------------------------
    def relay(self, source: str, crash: bool = False) -> None:
        """Publish a service's outbox; a relay that crashes after publishing leaves its rows
        unsent, so they are published again (same event ids) by the next run."""
        if source == "ledger":
            self._collect_ledger_events()
            pending = self._ledger_outbox[self._ledger_sent :]
            for envelope in pending:
                self.broker.publish(
                    self.registry.topic_for(envelope.type, 1), envelope.subject, envelope.to_bytes()
                )
            if not crash:
                self._ledger_sent = len(self._ledger_outbox)
            return
        store = self.ob if source == "orderbook" else self.st
        rows = store.unsent(10_000)
        for row in rows:
            self.broker.publish(row.topic, row.key, row.payload)
        if not crash:
            store.mark_sent([row.id for row in rows])

    def _collect_ledger_events(self) -> None:
        """The ledger's outbox: what the executor published, wrapped as its outbox would."""
        published, self.ledger_log.published = self.ledger_log.published, []
        for event_type, subject, data in published:
            envelope = Envelope(
                type=event_type,
                schema_version=1,
                source="ledger-adapter",
                subject=subject,
                data=data,
            )
            self.registry.validate(envelope)
            self._ledger_outbox.append(envelope)
            self._account_for(event_type, data)

    def _account_for(self, event_type: str, data: dict[str, Any]) -> None:
        command_id = data.get("command_id", "")
        if event_type not in (CONFIRMED, FAILED):
            return
        if command_id in self.moves:
            if command_id in self.outcomes:
                # the ledger answering a repeat of the command: the same outcome again
                assert self.outcomes[command_id] == event_type, f"two outcomes for {command_id}"
                self.stats["outcomes_published_again"] += 1
                return
            self.outcomes[command_id] = event_type
            move = self.moves[command_id]
            verdict = "confirmed" if event_type == CONFIRMED else f"failed:{data['reason']}"
            self.stats[f"{move.asset}_{'mint' if move.amount > 0 else 'burn'}_{verdict}"] += 1
        elif data["command_type"] == CommandKind.SETTLE_TRADES.value:
            verdict = "confirmed" if event_type == CONFIRMED else f"failed:{data['reason']}"
            self.stats[f"batch_{verdict}"] += 1

    def moved_on_chain(self) -> list[Move]:
        """The mints and burns the chain has carried out (whether or not the adapter knows
        their outcome yet: it may have lost the answer and not have reconciled yet)."""
        return [m for cid, m in self.moves.items() if self.chain.find_command(cid) is not None]

    # -- the consumers ----------------------------------------------------------------------
    def deliver(self, consumer: str, pick: int = 0, limit: int = 1_000) -> int:
        """The consumer fetches up to ``limit`` messages from one of its partitions that has
        some (``pick`` chooses which) and applies them."""
        backlog = self.broker.backlog(consumer)
        if not backlog:
            return 0
        topic, partition = backlog[pick % len(backlog)]
        messages = self.broker.poll(consumer, topic, partition, limit)
        envelopes = [self.registry.decode(m.payload) for m in messages]  # or dead-lettered
        if consumer == MATCHER:
            self._books(envelopes)
        else:
            for envelope in envelopes:
                self._consume(consumer, envelope)
        return len(envelopes)

    def redeliver(self, consumer: str, pick: int, by: int) -> None:
        self.broker.rewind(consumer, pick, by)

    def _books(self, envelopes: Sequence[Envelope]) -> None:
        """``bootstrap.book_commands`` on ``BatchConsumer._apply``: one transaction per batch,
        the processed messages recorded in it."""
        with self.ob.transaction() as tx:
            fresh = [e for e in envelopes if tx.record_processed(MATCHER, e.event_id)]
            self.stats["duplicates"] += len(envelopes) - len(fresh)
            unit = SqlOrderbookStore(tx, self.books)
            unit.preload_orders(e.data["order_id"] for e in fresh if "order_id" in e.data)
            for envelope in fresh:
                if envelope.type in BOOK_COMMANDS:
                    self.matcher.handle(unit, envelope.type, envelope.data)
            unit.flush()

    def _consume(self, consumer: str, envelope: Envelope) -> None:
        if consumer == LEDGER:
            # The adapter's command log is the fake: no processed-message tracking, so a
            # redelivered command reaches accept_command, which is idempotent by command id.
            with self.ledger_log.unit() as log_:
                accept_command(log_, CommandKind(envelope.type), envelope.data, envelope.source)
            return
        store = self.ob if consumer == ORDERBOOK else self.st
        with store.transaction() as tx:
            if not tx.record_processed(consumer, envelope.event_id):
                self.stats["duplicates"] += 1
                return
            if consumer == ORDERBOOK:
                self._orderbook_event(tx, envelope)
            elif consumer == SETTLEMENT_TRADES:
                if envelope.type == TRADE_EXECUTED:
                    services.record_trade(SqlSettlementStore(tx), envelope.data)
                elif envelope.type == "orderbook.payout_cover_held":
                    services.payout_cover_held(SqlSettlementStore(tx), envelope.data)
                elif envelope.type == "orderbook.payout_cover_refused":
                    services.payout_cover_refused(SqlSettlementStore(tx), envelope.data)
            else:
                self._settlement_ledger_event(tx, envelope)

    def _orderbook_event(self, tx: Transaction, envelope: Envelope) -> None:
        """The ``orderbook`` consumer's handlers, as ``prosum_orderbook.bootstrap`` wires them."""
        unit = SqlOrderbookStore(tx, self.books)
        if envelope.type.startswith("identity."):
            apply_identity_event(envelope, tx)
            if envelope.type in ("identity.participant_suspended", "identity.participant_closed"):
                outcomes.participant_inactive(unit, envelope.data["participant_id"], self.clock)
        elif envelope.type == OB_BALANCE_CHANGED:
            outcomes.balance_changed(unit, envelope.data)
        elif envelope.type == TRADE_SETTLED:
            outcomes.trade_settled(unit, envelope.data)
        elif envelope.type == TRADE_FAILED:
            outcomes.trade_failed(unit, envelope.data)
        elif envelope.type == "settlement.payout_approved":
            outcomes.payout_approved(unit, envelope.data)
        elif envelope.type == "settlement.payout_completed":
            outcomes.payout_completed(unit, envelope.data)
        elif envelope.type == "settlement.payout_failed":
            outcomes.payout_failed(unit, envelope.data)
        unit.flush()

    def _settlement_ledger_event(self, tx: Transaction, envelope: Envelope) -> None:
        """``prosum_settlement.bootstrap.on_ledger``."""
        store = SqlSettlementStore(tx)
        data = envelope.data
        if envelope.type == BALANCE_CHANGED:
            services.record_balance(store, data)
        elif envelope.type == "ledger.balances_reported":
            services.finish_reconciliation(store, data)
        elif envelope.type in (CONFIRMED, FAILED):
            if data["command_id"].startswith(services.SETTLE_PREFIX):
                services.apply_batch_outcome(store, envelope.type, data, POLICY)
            elif data["command_id"].startswith(("topup-", "payout-")):
                services.apply_funds_outcome(store, envelope.type, data)

    # -- settlement's batcher and the ledger's executor ---------------------------------------
    def batch(self) -> None:
        """The batcher's round: send batches while there are pending trades and room."""
        while True:
            with self.st_uow() as store:
                if services.open_batch(store, POLICY) is None:
                    return
            self.stats["batches_sent"] += 1

    def run_ledger(self, hiccup: str | None = None) -> None:
        """The executor's round, the chain unavailable for one call if ``hiccup`` says so."""
        self.backend.armed = hiccup
        self.executor.run_open()
        self.backend.armed = None
        self._collect_ledger_events()

    def pump(self) -> None:
        """One round of everything, in a fixed order."""
        for source in SOURCES:
            self.relay(source)
        for consumer in CONSUMERS:
            while self.deliver(consumer):
                pass
        self.batch()
        self.run_ledger()

    def quiet(self) -> bool:
        self._collect_ledger_events()
        if self.ob.pending_outbox() or self.st.pending_outbox():
            return False
        if self._ledger_sent < len(self._ledger_outbox) or not self.broker.idle():
            return False
        if self.ledger_log.open_commands(1):
            return False
        with self.st_uow() as store:
            return not store.pending_trade_ids(1) and store.open_batches() == 0

    def drain(self, rounds: int = 200) -> None:
        """Deliver everything until nothing moves any more (no failures injected)."""
        for _ in range(rounds):
            if self.quiet():
                return
            self.pump()
        raise AssertionError("the services never came to rest")

    # -- reading the stores -----------------------------------------------------------------
    def rows(self, store: EventStore, table: sa.Table, **where: Any) -> list[Any]:
        query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
        with store.reading() as conn:
            return list(conn.execute(query).all())

    def _one(self, store: EventStore, table: sa.Table, **where: Any) -> Any:
        found = self.rows(store, table, **where)
        return found[0] if found else None

    # -- invariants after every step --------------------------------------------------------
    def check_step(self) -> None:
        self.check_chain()
        self.check_reservations_add_up()
        self.check_no_overcommitment()
        self.check_outcomes_agree_with_chain()

    def check_chain(self) -> None:
        """Energy and ecoin change only by mint and burn; no balance is ever negative; a move
        confirmed by the ledger happened on chain, a failed one did not."""
        held = self.chain.balances_many(list(ACCOUNTS))
        for p, b in held.items():
            assert b.energy_wh >= 0 and b.ecoin >= 0, (p, b)
        moved = self.moved_on_chain()
        minted_energy = sum(m.amount for m in moved if m.asset == "energy")
        net_ecoin = sum(m.amount for m in moved if m.asset == "ecoin")
        supply = self.chain.total_supply()
        assert sum(b.energy_wh for b in held.values()) == supply.energy_wh == minted_energy
        assert sum(b.ecoin for b in held.values()) == supply.ecoin == net_ecoin
        for command_id, outcome in self.outcomes.items():
            done = self.chain.find_command(command_id) is not None
            assert done == (outcome == CONFIRMED), (command_id, outcome)

    def check_reservations_add_up(self) -> None:
        """Each account's reservations are exactly its open orders', unsettled trades' and the
        payouts the book holds ecoin for;
        threshold use is its open orders'; no order is reserved once it is done and no trade
        once it failed."""
        all_orders = self.rows(self.ob, orders)
        all_trades = self.rows(self.ob, trades)
        holds = [h for h in self.rows(self.ob, payout_holds) if h.status == "held"]
        for account in self.rows(self.ob, accounts):
            p = account.participant_id
            assert account.reserved_wh >= 0 and account.reserved_ecoin >= 0, account
            mine = [o for o in all_orders if o.participant_id == p]
            assert account.reserved_wh == sum(o.reserved_wh for o in mine) + sum(
                t.seller_reserved_wh for t in all_trades if t.seller == p
            ), p
            assert account.reserved_ecoin == sum(o.reserved_ecoin for o in mine) + sum(
                t.buyer_reserved_ecoin for t in all_trades if t.buyer == p
            ) + sum(h.amount for h in holds if h.participant_id == p), p
        for usage in self.rows(self.ob, threshold_usage):
            mine = [o for o in all_orders if o.threshold_id == usage.threshold_id]
            assert usage.open_wh == sum(o.remaining_wh for o in mine), usage
            assert usage.open_value_ecoin == sum(
                o.remaining_wh * o.price // 1_000_000 for o in mine if o.side == "buy"
            ), usage
        for o in all_orders:
            assert o.quantity_wh == o.filled_wh + o.remaining_wh + o.cancelled_wh + o.expired_wh
            if o.status in TERMINAL_ORDER:
                assert (o.remaining_wh, o.reserved_wh, o.reserved_ecoin) == (0, 0, 0), o
        for t in all_trades:
            if t.status == "failed":
                assert (t.seller_reserved_wh, t.buyer_reserved_ecoin) == (0, 0), t
            assert t.seller_reserved_wh in (0, t.quantity_wh), t
            assert t.buyer_reserved_ecoin in (0, t.value_ecoin + t.fee_ecoin), t

    def committed(self) -> dict[str, tuple[int, int]]:
        """What each participant is committed to and the chain has not yet moved: its open
        orders' cover and its trades not settled on chain (failed ones hold nothing)."""
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for o in self.rows(self.ob, orders):
            out[o.participant_id][0] += o.reserved_wh
            out[o.participant_id][1] += o.reserved_ecoin
        for t in self.rows(self.ob, trades):
            if not self.chain.is_settled(t.trade_id):
                out[t.seller][0] += t.seller_reserved_wh
                out[t.buyer][1] += t.buyer_reserved_ecoin
        for h in self.rows(self.ob, payout_holds):
            if h.status == "held" and self.chain.find_command(f"payout-{h.request_id}") is None:
                out[h.participant_id][1] += h.amount
        return {p: (wh, ecoin) for p, (wh, ecoin) in out.items()}

    def check_no_overcommitment(self) -> None:
        """No participant is committed beyond what it holds on chain: not by orders, not by
        trades, and not by payouts, which the book holds ecoin for before they are burned."""
        held = self.chain.balances_many(list(ACCOUNTS))
        for p, (wh, ecoin) in self.committed().items():
            assert wh <= held[p].energy_wh, (
                f"{p} is committed to {wh} Wh but holds {held[p].energy_wh} on chain"
            )
            assert ecoin <= held[p].ecoin, (
                f"{p} is committed to {ecoin} ecoin but holds {held[p].ecoin} on chain"
            )

    def check_outcomes_agree_with_chain(self) -> None:
        """A trade settled for the order book or settlement is settled on chain; a failed one
        is not; a trade fails as the culprit only for a cause the test injected."""
        settlement = {row.trade_id: row for row in self.rows(self.st, instructions)}
        for t in self.rows(self.ob, trades):
            on_chain = self.chain.is_settled(t.trade_id)
            if t.status == "settled":
                assert on_chain, t
                assert settlement[t.trade_id].status == "settled", t
            elif t.status == "failed":
                assert not on_chain, t
                assert settlement[t.trade_id].status == "failed", t
        failures = self._trade_failures()
        for row in settlement.values():
            on_chain = self.chain.is_settled(row.trade_id)
            if row.status in ("settled", "failed", "pending"):
                # pending: new, or back from a batch that failed (so changed nothing on chain)
                assert on_chain == (row.status == "settled"), row
            if row.status == "failed":
                self._check_cause(row, failures[row.trade_id])

    def _trade_failures(self) -> dict[str, dict[str, Any]]:
        """``settlement.trade_failed`` by trade, from settlement's outbox (sent or not)."""
        query = sa.select(outbox.c.payload).where(
            outbox.c.headers.contains('"settlement.trade_failed"')
        )
        with self.st.reading() as conn:
            failed = [orjson.loads(payload)["data"] for payload in conn.execute(query).scalars()]
        return {data["trade_id"]: data for data in failed}

    def _check_cause(self, row: Any, failure: dict[str, Any]) -> None:
        """A trade fails only for a cause the test injected: a permission revoked from one of
        its parties; never for energy the book sold or ecoin it promised that was not there
        (payouts ask the book first), nor for another trade's failure in its batch. A batch the
        chain failed without naming a trade (the fee account lost its receive permission)
        fails its trades once ``max_attempts`` batches they were in failed so."""
        culprit, reason = failure["failed_trade_id"], failure["reason"]
        assert reason == row.reason, (row, failure)
        if culprit == row.trade_id:
            if reason == "permission_denied":
                assert self.revoked_ever & {row.seller, row.buyer}, row
            else:
                raise AssertionError(f"{row.trade_id} failed for {reason}: {row.detail}")
        elif culprit is None:
            assert reason == "permission_denied" and OPERATOR in self.revoked_ever, row
            assert row.failures_without_culprit == POLICY.max_attempts, row
            assert row.attempts >= POLICY.max_attempts, row
        else:
            raise AssertionError(f"{row.trade_id} failed because {culprit} did: {failure}")

    # -- at the end of the day --------------------------------------------------------------
    def finish(self) -> None:
        """Gate closure for every market, everything delivered: every order done, every trade
        settled or failed (the same for the book, settlement and the chain), every reservation
        released, every top-up and payout ended, and the projections equal to the chain."""
        self.drain()
        self.advance(24 * 60)
        self.drain()
        self.check_step()
        assert all(o.status in TERMINAL_ORDER for o in self.rows(self.ob, orders))
        ob_trades = {t.trade_id: t for t in self.rows(self.ob, trades)}
        settlement = {row.trade_id: row for row in self.rows(self.st, instructions)}
        assert set(ob_trades) == set(settlement), "every trade became one instruction"
        for trade_id, t in ob_trades.items():
            assert t.status in ("settled", "failed"), t
            assert self.chain.is_settled(trade_id) == (t.status == "settled"), t
            assert settlement[trade_id].status == t.status, (t, settlement[trade_id])
            self.stats[f"trades_{t.status}"] += 1
            self.stats[f"trades_{t.mechanism}"] += 1
            if t.status == "failed":
                self.stats[f"trades_failed:{t.failure_reason}"] += 1
        for account in self.rows(self.ob, accounts):
            assert (account.reserved_wh, account.reserved_ecoin) == (0, 0), account
        for usage in self.rows(self.ob, threshold_usage):
            assert (usage.open_wh, usage.open_value_ecoin) == (0, 0), usage
        sent = {cid for cid in self.moves if cid in self.ledger_log.commands}
        for request in self.rows(self.st, settlement_funds):
            assert request.status in ("completed", "failed"), request
            if f"{request.kind}-{request.request_id}" not in sent:
                # a payout the book could not hold ecoin for: failed without a burn
                assert (request.kind, request.status) == ("payout", "failed"), request
                assert request.reason == "insufficient_ecoin", request
                self.stats["payout_refused_by_book"] += 1
        assert set(self.outcomes) == sent, "every mint and burn sent has its outcome"
        for o in self.rows(self.ob, orders):
            self.stats[f"orders_{o.status}"] += 1
        held = self.chain.balances_many(list(ACCOUNTS))
        for account in self.rows(self.ob, accounts):
            b = held[account.participant_id]
            assert (account.energy_wh, account.ecoin) == (b.energy_wh, b.ecoin), account
        for row in self.rows(self.st, settlement_balances):
            b = held[row.participant_id]
            assert (row.energy_wh, row.ecoin) == (b.energy_wh, b.ecoin), row


SNAPSHOT_EVERY = 8
"""Books snapshot every 1000 events in production; here every 8, so that restarts rebuild
books from snapshots too."""


def _covered(needed: int, free: int) -> bool:
    """An order needs only the asset it reserves; what it does not need is covered whatever
    is free of it."""
    return needed == 0 or needed <= free


@contextmanager
def world(folder: Path, templates: Templates) -> Iterator[World]:
    every = OrderBook.snapshot_every
    OrderBook.snapshot_every = SNAPSHOT_EVERY
    w = World(folder, templates)
    try:
        w.setup()
        yield w
    finally:
        w.close()
        OrderBook.snapshot_every = every
