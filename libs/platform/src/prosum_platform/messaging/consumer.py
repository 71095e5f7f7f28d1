"""The idempotent event consumer: validate, apply exactly once, dead-letter what cannot be read.

For every message the consumer checks the envelope and the event's schema. What does not parse,
is of an unknown type or breaks its schema goes to the dead-letter topic with the reason, and
the consumer moves on. A valid event whose type has a handler is applied inside one store
transaction that also records the event id for this consumer; a redelivered event finds its id
and changes nothing. Offsets are committed only after the effects are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import anyio.to_thread
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from prosum_contracts import ContractError, Envelope, SchemaRegistry
from prosum_contracts.envelope import utc_now
from prosum_contracts.topics import DEAD_LETTER
from prosum_platform.domain import ConcurrencyConflict
from prosum_platform.eventstore.engine import WriteLockTimeout
from prosum_platform.eventstore.store import EventStore, Transaction
from prosum_platform.messaging.kafka import KafkaConfig
from prosum_platform.telemetry import Telemetry, span_in_event_context

log = logging.getLogger(__name__)

EventHandler = Callable[[Envelope, Transaction], None]
BatchHandler = Callable[[Sequence[Envelope], Transaction], None]


class HandlerOutcome(Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Subscription:
    """What a consumer group reads and which handler applies each event type."""

    topics: Sequence[str]
    handlers: Mapping[str, EventHandler]
    # Optional bulk forms: when a fetched batch holds a run of events of one of these types,
    # they are applied with one call (and still recorded one by one as processed).
    batch_handlers: Mapping[str, BatchHandler] = field(default_factory=dict)


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    last_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    highwater: dict[TopicPartition, int] = field(default_factory=dict)

    def lag(self) -> dict[TopicPartition, int]:
        return {
            tp: max(0, high - (self.last_offsets.get(tp, -1) + 1))
            for tp, high in self.highwater.items()
        }


class EventConsumer:
    def __init__(
        self,
        name: str,
        store: EventStore,
        registry: SchemaRegistry,
        kafka: KafkaConfig,
        subscription: Subscription,
        telemetry: Telemetry | None = None,
        *,
        dead_letter_topic: str = DEAD_LETTER,
        handler_attempts: int = 5,
        max_batch: int = 500,
    ) -> None:
        self.name = name
        self._store = store
        self._registry = registry
        self._kafka = kafka
        self._subscription = subscription
        self._telemetry = telemetry
        self._dead_letter_topic = dead_letter_topic
        self._handler_attempts = handler_attempts
        self._max_batch = max_batch
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self.stats = ConsumerStats()
        self.assigned = asyncio.Event()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed_at = time.monotonic()
        self._commit_interval_s = 1.0
        self._counters: dict[str, Any] = {}
        self._latency: Any = None
        if telemetry is not None:
            meter = telemetry.meter
            for outcome in HandlerOutcome:
                self._counters[outcome.value] = meter.create_counter(
                    f"prosum.consumer.{outcome.value}",
                    unit="{event}",
                    description=f"events {outcome.value.replace('_', ' ')} by consumers",
                )
            self._latency = meter.create_histogram(
                "prosum.event.latency",
                unit="ms",
                description="from the event's occurrence to its application by a consumer",
            )
            telemetry.observe(
                "prosum.consumer.lag",
                "messages behind the partition's high watermark",
                "{message}",
                lambda: [
                    (
                        float(lag),
                        {"consumer": self.name, "topic": tp.topic, "partition": str(tp.partition)},
                    )
                    for tp, lag in self.stats.lag().items()
                ],
            )

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._subscription.topics,
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
        # Recorded before starting, so stop() closes it even if start() is cancelled midway.
        self._consumer = consumer
        self._dlq = self._kafka.producer()
        await consumer.start()
        await self._dlq.start()

    async def _commit_offsets(self) -> None:
        consumer = self._consumer
        if consumer is None or not self._uncommitted:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance or a broker hiccup: the events are replayed and found processed.
            log.info("consumer %s: offset commit failed (%s)", self.name, exc)
        self._committed_at = time.monotonic()

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit_offsets()
            await self._consumer.stop()
            self._consumer = None
        if self._dlq is not None:
            await self._dlq.stop()
            self._dlq = None

    async def run(self) -> None:
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=250, max_records=self._max_batch)
            except KafkaError as exc:
                log.warning("consumer %s: broker error %s; retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            if consumer.assignment():
                self.assigned.set()
            if batches:
                # One transaction for the whole fetch; order within each partition is kept.
                await self._process_batch([r for records in batches.values() for r in records])
                for tp, records in batches.items():
                    self.stats.last_offsets[tp] = records[-1].offset
                    self._uncommitted[tp] = records[-1].offset + 1
            # Offsets only say where to resume: the tracking rows make a replay harmless, so
            # they are committed every so often rather than after every fetch.
            if self._uncommitted and (
                not batches or time.monotonic() - self._committed_at > self._commit_interval_s
            ):
                await self._commit_offsets()
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    self.stats.highwater[tp] = high

    async def _process_batch(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Apply a fetched batch in one transaction; on any failure, one by one.

        One transaction per batch is what lets a consumer keep up with thousands of events a
        second on SQLite; the per-event path keeps retries and dead-lettering precise.
        """
        if len(records) == 1:
            await self.process(records[0])
            return
        decoded: list[tuple[ConsumerRecord[Any, Any], Envelope, EventHandler]] = []
        ignored = 0
        for record in records:
            try:
                envelope = self._registry.decode(record.value)
            except ContractError:
                break
            handler = self._subscription.handlers.get(envelope.type)
            if handler is None:
                # A type this consumer does not apply (a shared topic carries many): skipped,
                # as ``process`` skips it, without breaking the batch.
                ignored += 1
                continue
            decoded.append((record, envelope, handler))
        if len(decoded) + ignored != len(records):
            for record in records:
                await self.process(record)
            return
        for _ in range(ignored):
            self._count(HandlerOutcome.IGNORED)
        if not decoded:
            return
        try:
            outcomes = await anyio.to_thread.run_sync(self._apply_batch, decoded)
        except Exception:
            log.info("consumer %s: batch failed, applying one by one", self.name)
            for record, _envelope, _handler in decoded:
                await self.process(record)
            return
        for (_record, envelope, _handler), applied in zip(decoded, outcomes, strict=True):
            outcome = HandlerOutcome.APPLIED if applied else HandlerOutcome.DUPLICATE
            if applied and self._latency is not None:
                elapsed = (utc_now() - envelope.occurred_at).total_seconds() * 1000
                self._latency.record(max(elapsed, 0.0), {"event_type": envelope.type})
            self._count(outcome)

    def _apply_batch(
        self, batch: Sequence[tuple[ConsumerRecord[Any, Any], Envelope, EventHandler]]
    ) -> list[bool]:
        tracer = self._telemetry.tracer if self._telemetry is not None else None
        bulk = self._subscription.batch_handlers
        with self._store.transaction() as tx:
            fresh = tx.record_processed_many(self.name, [e.event_id for _r, e, _h in batch])
            # A repeated event id inside one fetch counts once.
            seen: set[str] = set()
            outcomes: list[bool] = []
            for _record, envelope, _handler in batch:
                first = envelope.event_id in fresh and envelope.event_id not in seen
                seen.add(envelope.event_id)
                outcomes.append(first)
            index = 0
            while index < len(batch):
                record, envelope, handler = batch[index]
                if not outcomes[index]:
                    index += 1
                    continue
                if envelope.type in bulk:
                    run = [envelope]
                    end = index + 1
                    while end < len(batch) and batch[end][1].type == envelope.type:
                        if outcomes[end]:
                            run.append(batch[end][1])
                        end += 1
                    bulk[envelope.type](run, tx)
                    index = end
                    continue
                if tracer is None:
                    handler(envelope, tx)
                else:
                    with span_in_event_context(
                        tracer,
                        f"process {envelope.type}",
                        envelope.trace,
                        self._span_attributes(record, envelope),
                    ):
                        handler(envelope, tx)
                index += 1
        return outcomes

    def _span_attributes(
        self, record: ConsumerRecord[Any, Any], envelope: Envelope
    ) -> dict[str, Any]:
        return {
            "messaging.system": "kafka",
            "messaging.destination.name": record.topic,
            "messaging.consumer.group.name": self.name,
            "messaging.message.id": envelope.event_id,
            "prosum.event.type": envelope.type,
        }

    async def process(self, record: ConsumerRecord[Any, Any]) -> HandlerOutcome:
        """Apply one message; public so tests can deliver the same record twice."""
        try:
            envelope = self._registry.decode(record.value)
        except ContractError as exc:
            await self._dead_letter(record, exc.reason, exc.detail)
            return self._count(HandlerOutcome.DEAD_LETTERED)
        handler = self._subscription.handlers.get(envelope.type)
        if handler is None:
            return self._count(HandlerOutcome.IGNORED)
        tracer = self._telemetry.tracer if self._telemetry is not None else None
        attributes = self._span_attributes(record, envelope)
        if tracer is None:
            outcome = await self._apply_with_retries(record, envelope, handler)
        else:
            with span_in_event_context(
                tracer, f"process {envelope.type}", envelope.trace, attributes
            ) as span:
                outcome = await self._apply_with_retries(record, envelope, handler)
                span.set_attribute("prosum.outcome", outcome.value)
        if outcome is HandlerOutcome.APPLIED and self._latency is not None:
            elapsed = (utc_now() - envelope.occurred_at).total_seconds() * 1000
            self._latency.record(max(elapsed, 0.0), {"event_type": envelope.type})
        return self._count(outcome)

    async def _apply_with_retries(
        self, record: ConsumerRecord[Any, Any], envelope: Envelope, handler: EventHandler
    ) -> HandlerOutcome:
        last_error: BaseException | None = None
        attempt = 0
        while attempt < self._handler_attempts:
            attempt += 1
            try:
                applied = await anyio.to_thread.run_sync(self._apply, envelope, handler)
            except WriteLockTimeout as exc:
                # Another writer of this process held the database for long: nothing is wrong
                # with the event, so it is tried again (not counted) rather than dead-lettered.
                if self._stopping.is_set():
                    raise
                log.warning("consumer %s: %s; trying %s again", self.name, exc, envelope.event_id)
                attempt -= 1
                await asyncio.sleep(0.1)
                continue
            except ConcurrencyConflict as exc:
                last_error = exc
                continue
            except Exception as exc:
                last_error = exc
                log.exception("consumer %s: handler failed on %s", self.name, envelope.event_id)
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            return HandlerOutcome.APPLIED if applied else HandlerOutcome.DUPLICATE
        await self._dead_letter(
            record, "handler_failed", f"{type(last_error).__name__}: {last_error}"
        )
        return HandlerOutcome.DEAD_LETTERED

    def _apply(self, envelope: Envelope, handler: EventHandler) -> bool:
        with self._store.transaction() as tx:
            if not tx.record_processed(self.name, envelope.event_id):
                return False
            handler(envelope, tx)
            return True

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], reason: str, detail: str
    ) -> None:
        log.warning(
            "consumer %s: dead-lettering %s[%s]@%s: %s: %s",
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
        producer = self._dlq
        assert producer is not None, "consumer not started"
        await producer.send_and_wait(
            self._dead_letter_topic, record.value or b"", key=record.key, headers=headers
        )

    def _count(self, outcome: HandlerOutcome) -> HandlerOutcome:
        if outcome is HandlerOutcome.APPLIED:
            self.stats.applied += 1
        elif outcome is HandlerOutcome.DUPLICATE:
            self.stats.duplicates += 1
        elif outcome is HandlerOutcome.IGNORED:
            self.stats.ignored += 1
        else:
            self.stats.dead_lettered += 1
        counter = self._counters.get(outcome.value)
        if counter is not None:
            counter.add(1, {"consumer": self.name})
        return outcome
