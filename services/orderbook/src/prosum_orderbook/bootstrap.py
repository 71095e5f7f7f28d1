"""Wiring of the orderbook service: the one place where its parts meet the platform.

- HTTP: order entry and the read side (``adapters.http_api``).
- Consumer ``orderbook`` (identity, ledger and settlement events): the trust projection,
  balances, settlement outcomes; suspended participants' orders are cancelled.
- Consumer ``orderbook-matcher`` (``prosum.orderbook.commands``): the books. The topic is keyed
  by market, so Kafka's partition assignment decides which instance owns which markets; every
  instance shares the one database, and the market streams' optimistic concurrency keeps a
  market from being matched twice while a partition moves (see ``application.matching``).
- The market calendar (one instance at a time, by lease): markets open ahead, close at gate
  closure, also after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread

from prosum_auth.tokens import TokenVerifier
from prosum_auth.trust import apply_identity_event, trust_handlers
from prosum_contracts import Envelope
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_EVENTS, SETTLEMENT_EVENTS
from prosum_orderbook.adapters.books_consumer import BatchConsumer
from prosum_orderbook.adapters.config import OrderbookSettings
from prosum_orderbook.adapters.credentials import ThresholdChecks, TrustTables
from prosum_orderbook.adapters.group_commit import GroupCommit
from prosum_orderbook.adapters.http_api import build_router
from prosum_orderbook.adapters.queries import ReadModels
from prosum_orderbook.adapters.store import (
    BookCache,
    PreparedUnit,
    SqlOrderbookStore,
    reading_unit,
    unit_of_work,
)
from prosum_orderbook.adapters.tables import tables
from prosum_orderbook.application import outcomes
from prosum_orderbook.application.entry import OrderEntry
from prosum_orderbook.application.matching import Matcher
from prosum_orderbook.application.messages import (
    BALANCE_CHANGED,
    BALANCES_REPORTED,
    BOOK_COMMANDS,
    COMMANDS_TOPIC,
    PAYOUT_APPROVED,
    PAYOUT_COMPLETED,
    PAYOUT_FAILED,
    TRADE_FAILED,
    TRADE_SETTLED,
)
from prosum_orderbook.application.scheduler import MarketScheduler
from prosum_orderbook.domain.markets import partition_of
from prosum_platform.eventstore import Transaction
from prosum_platform.messaging import EventHandler, Subscription, ensure_topics
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts

log = logging.getLogger(__name__)

MATCHER = "orderbook-matcher"
SCHEDULER_LEASE = "orderbook-scheduler"
INACTIVE = ("identity.participant_suspended", "identity.participant_closed")


def _clock() -> datetime:
    return datetime.now(UTC)


def build(platform: Platform) -> ServiceParts:
    settings = OrderbookSettings()
    schedule, defaults = settings.schedule(), settings.defaults()
    books = BookCache()
    uow = unit_of_work(platform.store, books)
    trust = TrustTables(platform.store)
    verifier = TokenVerifier(trust.keys, trust)
    checks = ThresholdChecks(verifier, trust, trust.keys)
    reading = reading_unit(platform.store, books)
    entry = OrderEntry(uow, schedule, defaults, _clock, lambda: str(uuid.uuid4()), reading=reading)
    group = GroupCommit(entry.place_many)
    matcher = Matcher(schedule, _clock)
    scheduler = MarketScheduler(uow, schedule, defaults, _clock, reading=reading)

    def applying(
        apply: Callable[[SqlOrderbookStore, Envelope], None],
    ) -> EventHandler:
        def handler(envelope: Envelope, tx: Transaction) -> None:
            unit = SqlOrderbookStore(tx, books)
            apply(unit, envelope)
            unit.flush()

        return handler

    def identity(unit: SqlOrderbookStore, envelope: Envelope) -> None:
        apply_identity_event(envelope, unit.tx)
        if envelope.type == "identity.signing_keys_changed":
            trust.invalidate()
        if envelope.type in INACTIVE:
            outcomes.participant_inactive(unit, envelope.data["participant_id"], _clock)

    handlers: dict[str, EventHandler] = dict.fromkeys(trust_handlers(), applying(identity))
    handlers[BALANCE_CHANGED] = applying(lambda u, e: outcomes.balance_changed(u, e.data))
    handlers[BALANCES_REPORTED] = applying(
        lambda u, e: outcomes.balances_reported(u, e.data, _clock)
    )
    handlers[TRADE_SETTLED] = applying(lambda u, e: outcomes.trade_settled(u, e.data))
    handlers[TRADE_FAILED] = applying(lambda u, e: outcomes.trade_failed(u, e.data))
    handlers[PAYOUT_APPROVED] = applying(lambda u, e: outcomes.payout_approved(u, e.data))
    handlers[PAYOUT_COMPLETED] = applying(lambda u, e: outcomes.payout_completed(u, e.data))
    handlers[PAYOUT_FAILED] = applying(lambda u, e: outcomes.payout_failed(u, e.data))

    def apply_commands(unit: SqlOrderbookStore, envelopes: Sequence[Envelope]) -> None:
        """The batch's commands on their books; the events each causes carry the trace of the
        request that sent it."""
        unit.preload_orders(e.data["order_id"] for e in envelopes if "order_id" in e.data)
        with books_consumer.traced(envelopes):
            for envelope in envelopes:
                if envelope.type in BOOK_COMMANDS:
                    unit.trace = envelope.trace if envelope.trace.traceparent else None
                    matcher.handle(unit, envelope.type, envelope.data)
            unit.trace = None

    def book_commands(tx: Transaction, envelopes: Sequence[Envelope]) -> None:
        unit = SqlOrderbookStore(tx, books)
        apply_commands(unit, envelopes)
        unit.flush()

    def prepare_book_commands(envelopes: Sequence[Envelope]) -> PreparedUnit | None:
        """The books' work for a batch, done before the write transaction (see
        ``BatchConsumer``): matching, read models, events and outbox rows. A batch that must
        write as it goes (a market closing) raises ``NeedsWriteLock`` here and is left to
        ``book_commands``."""
        with platform.store.read_transaction() as rtx:
            unit = SqlOrderbookStore(rtx, books, read_only=True)
            try:
                apply_commands(unit, envelopes)
                return unit.prepare()
            except Exception as exc:
                unit.abandon()
                log.info(
                    "orderbook: batch not prepared ahead (%s); applied in the transaction", exc
                )
                return None

    books_consumer = BatchConsumer(
        MATCHER,
        COMMANDS_TOPIC,
        platform.store,
        platform.registry,
        platform.kafka,
        book_commands,
        platform.telemetry,
        prepare=prepare_book_commands,
    )

    async def run_books() -> None:
        """The books' consumer, once the command topic exists (the platform creates only the
        topics of the shared contract)."""
        delay = 0.2
        while True:
            try:
                if platform.settings.kafka.create_topics:
                    await ensure_topics(
                        platform.kafka, [COMMANDS_TOPIC], platform.settings.kafka.partitions
                    )
                await books_consumer.start()
                break
            except Exception as exc:  # the broker may come up after us
                log.warning("orderbook: books waiting for Kafka (%s)", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await books_consumer.run()

    async def run_calendar() -> None:
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        ttl = timedelta(seconds=max(10.0, settings.scheduler_interval_s * 5))
        while True:
            try:
                if await anyio.to_thread.run_sync(
                    platform.store.acquire_lease, SCHEDULER_LEASE, holder, ttl
                ):
                    done = await anyio.to_thread.run_sync(scheduler.run_once)
                    if done.opened or done.closing:
                        log.info("orderbook: opened %s, closing %s", done.opened, done.closing)
            except Exception as exc:
                log.warning("orderbook: market calendar round failed (%s)", exc)
            await asyncio.sleep(settings.scheduler_interval_s)

    async def books_status() -> tuple[bool, dict[str, Any]]:
        state = books_consumer.state
        return True, {
            "assigned": bool(state.partitions),
            "partitions": sorted(state.partitions),
            "applied": state.applied,
            "batches": state.batches,
            "prepared_batches": state.prepared,
            "dead_lettered": state.dead_lettered,
            "lag": state.lag(),
            "books_loaded": books.loads,
            "entry_groups": group.groups,
            "entry_orders": group.orders,
        }

    return ServiceParts(
        routers=[build_router(entry, group, ReadModels(platform.store), verifier, checks)],
        consumers=[
            ConsumerSpec(
                name="orderbook",
                subscription=Subscription(
                    topics=(IDENTITY_EVENTS, LEDGER_EVENTS, SETTLEMENT_EVENTS),
                    handlers=handlers,
                ),
            )
        ],
        readiness={"books": books_status},
        background=[run_books, run_calendar],
        # Markets spread over the command partitions by delivery interval, not by hash.
        partitioners={COMMANDS_TOPIC: partition_of},
        on_stop=[books_consumer.stop, group.stop],
        info={
            "markets": {
                "open_ahead_s": settings.open_ahead_s,
                "gate_closure_s": settings.gate_closure_s,
                "mechanism": settings.mechanism.value,
            }
        },
    )


DEFINITION = ServiceDefinition(
    name="orderbook",
    package="prosum_orderbook",
    title="prosum orderbook",
    description="Markets per delivery interval, orders, continuous matching and call auctions, trades and reservations.",
    default_port=8103,
    build=build,
    tables=tables,
)
