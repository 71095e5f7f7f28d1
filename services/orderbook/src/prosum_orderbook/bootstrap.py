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
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread

from prosum_auth.tokens import TokenVerifier
from prosum_auth.trust import SqlTrustStore, apply_identity_event, trust_handlers
from prosum_contracts import Envelope
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_EVENTS, SETTLEMENT_EVENTS
from prosum_orderbook.adapters.config import OrderbookSettings
from prosum_orderbook.adapters.http_api import build_router
from prosum_orderbook.adapters.queries import ReadModels
from prosum_orderbook.adapters.store import BookCache, SqlOrderbookStore, unit_of_work
from prosum_orderbook.adapters.tables import tables
from prosum_orderbook.application import outcomes
from prosum_orderbook.application.entry import OrderEntry
from prosum_orderbook.application.matching import Matcher
from prosum_orderbook.application.messages import (
    BALANCE_CHANGED,
    BOOK_COMMANDS,
    COMMANDS_TOPIC,
    TRADE_FAILED,
    TRADE_SETTLED,
)
from prosum_orderbook.application.scheduler import MarketScheduler
from prosum_platform.eventstore import Transaction
from prosum_platform.messaging import EventConsumer, EventHandler, Subscription, ensure_topics
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
    trust = SqlTrustStore(platform.engine)
    verifier = TokenVerifier(trust.keys, trust)
    entry = OrderEntry(uow, schedule, defaults, _clock, lambda: str(uuid.uuid4()))
    matcher = Matcher(schedule, _clock)
    scheduler = MarketScheduler(uow, schedule, defaults, _clock)

    def store(tx: Transaction) -> SqlOrderbookStore:
        return SqlOrderbookStore(tx, books)

    def identity(envelope: Envelope, tx: Transaction) -> None:
        apply_identity_event(envelope, tx)
        if envelope.type == "identity.signing_keys_changed":
            trust.invalidate()
        if envelope.type in INACTIVE:
            outcomes.participant_inactive(store(tx), envelope.data["participant_id"], _clock)

    handlers: dict[str, EventHandler] = dict.fromkeys(trust_handlers(), identity)
    handlers[BALANCE_CHANGED] = lambda e, tx: outcomes.balance_changed(store(tx), e.data)
    handlers[TRADE_SETTLED] = lambda e, tx: outcomes.trade_settled(store(tx), e.data)
    handlers[TRADE_FAILED] = lambda e, tx: outcomes.trade_failed(store(tx), e.data)

    def book_command(envelope: Envelope, tx: Transaction) -> None:
        matcher.handle(store(tx), envelope.type, envelope.data)

    books_consumer = EventConsumer(
        MATCHER,
        platform.store,
        platform.registry,
        platform.kafka,
        Subscription((COMMANDS_TOPIC,), dict.fromkeys(BOOK_COMMANDS, book_command)),
        platform.telemetry,
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
        return True, {
            "assigned": books_consumer.assigned.is_set(),
            "applied": books_consumer.stats.applied,
            "lag": sum(books_consumer.stats.lag().values()),
            "books_loaded": books.loads,
        }

    return ServiceParts(
        routers=[build_router(entry, ReadModels(platform.store), verifier)],
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
        on_stop=[books_consumer.stop],
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
