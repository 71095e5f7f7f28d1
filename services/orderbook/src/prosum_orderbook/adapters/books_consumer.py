"""The books' Kafka consumer: commands in, one transaction per fetched batch.

Like the platform's ``EventConsumer`` (validation, dead-lettering, processed-message tracking in
the same transaction as the effects, offsets committed after), with two differences the books
need: the whole batch is handed to one unit of work, so a book is checked once, its events are
appended once and the read models are written many rows per statement; and partition
assignments are tracked, so readiness can tell which partitions (so which markets) this instance
owns. A batch that fails is applied again one command at a time, each in its own transaction,
retried a few times (a concurrent writer of a book means reloading it) and dead-lettered only
if it keeps failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio.to_thread
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError

from prosum_contracts import ContractError, Envelope, SchemaRegistry
from prosum_contracts.topics import DEAD_LETTER
from prosum_orderbook.adapters.store import is_contention
from prosum_platform.domain import ConcurrencyConflict
from prosum_platform.eventstore import EventStore, Transaction
from prosum_platform.eventstore.schema import processed_messages
from prosum_platform.messaging import KafkaConfig
from prosum_platform.telemetry import Telemetry, batch_span

log = logging.getLogger(__name__)

BatchHandler = Callable[[Transaction, Sequence[Envelope]], None]


class Prepared(Protocol):
    """A batch's effects worked out before the write transaction (see ``BatchConsumer``)."""

    def current(self, tx: Transaction) -> bool:
        """Whether what the batch read is still so, in the write transaction."""
        ...

    def write(self, tx: Transaction) -> None: ...

    def discard(self) -> None:
        """Not written: drop what was kept in memory for it."""
        ...


Prepare = Callable[[Sequence[Envelope]], Prepared | None]


@dataclass
class ConsumerState:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    prepared: int = 0  # transactions that wrote a batch prepared ahead
    partitions: set[int] = field(default_factory=set)
    last_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    highwater: dict[TopicPartition, int] = field(default_factory=dict)

    def lag(self) -> int:
        return sum(
            max(0, high - (self.last_offsets.get(tp, -1) + 1))
            for tp, high in self.highwater.items()
            if tp.partition in self.partitions
        )


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no types
    def __init__(self, state: ConsumerState, on_revoked: Callable[[set[int]], None]) -> None:
        self._state = state
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in revoked}
        self._state.partitions -= gone
        self._on_revoked(gone)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._state.partitions |= {tp.partition for tp in assigned}


class BatchConsumer:
    def __init__(
        self,
        name: str,
        topic: str,
        store: EventStore,
        registry: SchemaRegistry,
        kafka: KafkaConfig,
        handle: BatchHandler,
        telemetry: Telemetry | None = None,
        *,
        on_revoked: Callable[[set[int]], None] = lambda _partitions: None,
        prepare: Prepare | None = None,
        max_batch: int = 1000,
        attempts: int = 5,
    ) -> None:
        self.name = name
        self.topic = topic
        self._store = store
        self._registry = registry
        self._kafka = kafka
        self._handle = handle
        self._telemetry = telemetry
        self._on_revoked = on_revoked
        self._prepare = prepare
        self._max_batch = max_batch
        self._attempts = attempts
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self.state = ConsumerState()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            client_id=f"{self._kafka.client_id}-{self.name}",
            group_id=f"{self._kafka.group_prefix}{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._kafka.session_timeout_ms,
            heartbeat_interval_ms=self._kafka.heartbeat_interval_ms,
            request_timeout_ms=max(self._kafka.request_timeout_ms, 20000),
            max_poll_records=self._max_batch,
            fetch_max_wait_ms=self._kafka.fetch_max_wait_ms,
        )
        self._consumer = consumer
        self._dlq = self._kafka.producer()
        consumer.subscribe([self.topic], listener=_Ownership(self.state, self._on_revoked))
        await consumer.start()
        await self._dlq.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._dlq is not None:
            await self._dlq.stop()
            self._dlq = None

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=250, max_records=self._max_batch)
            except KafkaError as exc:
                log.warning("%s: broker error %s; retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            if batches:
                records = [r for rs in batches.values() for r in rs]
                await self._process(records)
                for tp, rs in batches.items():
                    self.state.last_offsets[tp] = rs[-1].offset
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    self.state.highwater[tp] = high

    async def _process(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        envelopes: list[tuple[ConsumerRecord[Any, Any], Envelope]] = []
        for record in records:
            try:
                envelopes.append((record, self._registry.decode(record.value)))
            except ContractError as exc:
                await self._dead_letter(record, exc.reason, exc.detail)
        if not envelopes:
            return
        # A batch that lost to a concurrent transaction (a deadlock, a book another instance
        # wrote) is tried again whole; applying it a command at a time is for the batch one
        # of whose commands keeps failing.
        for attempt in range(_BATCH_ATTEMPTS):
            try:
                await anyio.to_thread.run_sync(self._apply, [e for _, e in envelopes])
                self.state.batches += 1
                return
            except Exception as exc:
                if _transient(exc) and attempt < _BATCH_ATTEMPTS - 1:
                    await asyncio.sleep(0.01 * 2**attempt)
                    continue
                if len(envelopes) > 1:
                    log.info(
                        "%s: batch of %d failed (%s); applying one by one",
                        self.name,
                        len(envelopes),
                        exc,
                    )
                break
        for record, envelope in envelopes:
            await self._one(record, envelope)

    async def _one(self, record: ConsumerRecord[Any, Any], envelope: Envelope) -> None:
        """Apply one event alone, retrying. Losing to a concurrent transaction (a deadlock, a
        partition moving) is retried until it passes: dead-lettering a command would leave its
        order pending with its cover reserved. Any other failure is dead-lettered after
        ``attempts`` tries, for ops to look at."""
        failures = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                await anyio.to_thread.run_sync(self._apply, [envelope])
                return
            except Exception as exc:
                if not _transient(exc):
                    failures += 1
                log.warning(
                    "%s: %s failed (%s), attempt %d", self.name, envelope.event_id, exc, attempt
                )
                if failures >= self._attempts:
                    await self._dead_letter(
                        record, "handler_failed", f"{type(exc).__name__}: {exc}"
                    )
                    return
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(min(0.02 * 2 ** min(attempt, 6), 1.0))

    def _apply(self, envelopes: Sequence[Envelope]) -> None:
        """One transaction for the batch. With ``prepare``, a batch's effects are first worked
        out outside the write transaction (on SQLite, without holding the database's only write
        lock, so another process writes meanwhile), and the transaction only checks that what
        they were worked out from still holds (no event of the batch applied already, the
        prepared reads still current) and writes them. If not, the handler runs in the
        transaction as without ``prepare``."""
        prepared = self._prepare(envelopes) if self._prepare is not None else None
        try:
            with self._store.transaction() as tx:
                if len(envelopes) == 1:
                    fresh = [e for e in envelopes if tx.record_processed(self.name, e.event_id)]
                else:
                    fresh = self._record_processed(tx, envelopes)
                if prepared is not None and len(fresh) == len(envelopes) and prepared.current(tx):
                    prepared.write(tx)
                    self.state.prepared += 1
                else:
                    if prepared is not None:
                        prepared.discard()
                        prepared = None
                    if fresh:
                        self._handle(tx, fresh)
        except BaseException:
            if prepared is not None:
                prepared.discard()
            raise
        self.state.applied += len(fresh)
        self.state.duplicates += len(envelopes) - len(fresh)

    def _record_processed(self, tx: Transaction, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """``Transaction.record_processed`` for a whole batch in two statements. A concurrent
        consumer of the same events (a partition moving) makes the insert fail, and the batch
        is then applied one event at a time, with ``record_processed``."""
        ids = [e.event_id for e in envelopes]
        done = {
            row[0]
            for row in tx.conn.execute(
                sa.select(processed_messages.c.event_id).where(
                    processed_messages.c.consumer == self.name,
                    processed_messages.c.event_id.in_(ids),
                )
            )
        }
        fresh: list[Envelope] = []
        for envelope in envelopes:
            if envelope.event_id not in done:
                done.add(envelope.event_id)
                fresh.append(envelope)
        if fresh:
            now = datetime.now(UTC)
            tx.conn.execute(
                sa.insert(processed_messages),
                [
                    {"consumer": self.name, "event_id": e.event_id, "processed_at": now}
                    for e in fresh
                ],
            )
        return fresh

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], reason: str, detail: str
    ) -> None:
        log.warning(
            "%s: dead-lettering %s[%s]@%s: %s: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            reason,
            detail,
        )
        headers = [
            *list(record.headers or ()),
            ("dlq.reason", reason.encode()),
            ("dlq.detail", detail[:2000].encode()),
            ("dlq.consumer", self.name.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
        ]
        assert self._dlq is not None
        await self._dlq.send_and_wait(
            DEAD_LETTER, record.value or b"", key=record.key, headers=headers
        )
        self.state.dead_lettered += 1

    def traced(self, envelopes: Sequence[Envelope]) -> Any:
        """One span for a batch of commands, linked to the requests that sent them. A span per
        command cost about 80 µs (a third of a command's work); the events a command causes
        still carry the trace of the request that sent it (``SqlOrderbookStore.trace``)."""
        if self._telemetry is None:
            return _NoSpan()
        return batch_span(
            self._telemetry.tracer,
            f"process {self.topic}",
            (envelope.trace for envelope in envelopes),
            {
                "messaging.system": "kafka",
                "messaging.destination.name": self.topic,
                "messaging.consumer.group.name": self.name,
                "messaging.batch.message_count": len(envelopes),
            },
        )


_BATCH_ATTEMPTS = 3


def _transient(exc: Exception) -> bool:
    """Lost to a concurrent transaction: the same work may pass when tried again."""
    return isinstance(exc, ConcurrencyConflict) or (
        isinstance(exc, DBAPIError) and is_contention(exc)
    )


class _NoSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        return None
