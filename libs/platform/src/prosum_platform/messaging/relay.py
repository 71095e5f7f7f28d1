"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once.

Rows are read in id order and sent with the event's subject as the key, so the events of one
aggregate land on one partition in the order they were committed. A row is marked sent only
after the broker acknowledged it (``acks=all``); a crash between the two publishes it again on
restart, and consumers drop the duplicate by event id. One relay per database holds a lease, so
replicas of a service do not publish the same rows side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import anyio.to_thread
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from prosum_platform.eventstore.store import EventStore, OutboxRow
from prosum_platform.faults import crash_point
from prosum_platform.messaging.kafka import KafkaConfig
from prosum_platform.telemetry import Telemetry

log = logging.getLogger(__name__)

LEASE_NAME = "outbox-relay"

Partitioner = Callable[[str, int], int]
"""(key, number of partitions) -> partition. Must depend on nothing else, so that a key's
events share a partition whoever publishes them."""


class OutboxRelay:
    def __init__(
        self,
        store: EventStore,
        kafka: KafkaConfig,
        telemetry: Telemetry | None = None,
        *,
        batch_size: int = 500,
        idle_poll: float = 0.25,
        lease_ttl: timedelta = timedelta(seconds=10),
        partitioners: Mapping[str, Partitioner] | None = None,
    ) -> None:
        self._store = store
        self._partitioners = dict(partitioners or {})
        self._kafka = kafka
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._lease_ttl = lease_ttl
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[tuple[str, int, str], int] = {}
        self._stopping = False
        self.published = 0
        self._published_counter: Any = None
        if telemetry is not None:
            self._published_counter = telemetry.meter.create_counter(
                "prosum.outbox.published", unit="{event}", description="events relayed to Kafka"
            )
            telemetry.observe(
                "prosum.outbox.pending",
                "outbox rows not yet acknowledged by the broker",
                "{event}",
                lambda: [(float(self._store.pending_outbox()), {})],
            )
        store.on_outbox_commit(self.notify)

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    def notify(self) -> None:
        """Wake the relay; safe to call from any thread (the store calls it after commit)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wakeup.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        producer = self._kafka.producer()
        self._producer = producer
        await producer.start()

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        await anyio.to_thread.run_sync(self._store.release_lease, LEASE_NAME, self._holder)

    async def run(self) -> None:
        """Publish until stopped. Broker outages and database errors (a lost connection, a
        write lock held too long) are waited out and retried, never fatal: a relay that
        stopped would leave every later event in the outbox."""
        if self._producer is None:
            await self.start()
        lease_checked = 0.0
        has_lease = False
        while not self._stopping:
            sent = 0
            try:
                now = time.monotonic()
                if now - lease_checked > self._lease_ttl.total_seconds() / 3:
                    has_lease = await anyio.to_thread.run_sync(
                        self._store.acquire_lease, LEASE_NAME, self._holder, self._lease_ttl
                    )
                    lease_checked = now
                if has_lease:
                    sent = await self.publish_once()
            except KafkaError as exc:
                log.warning("relay: broker unavailable (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                log.exception("relay: round failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if sent == 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._idle_poll)

    async def publish_once(self) -> int:
        """Publish one batch of unsent rows; returns how many were acknowledged."""
        producer = self._producer
        if producer is None or self._stopping:
            return 0
        rows: list[OutboxRow] = await anyio.to_thread.run_sync(self._store.unsent, self._batch_size)
        if not rows:
            return 0
        sent = await self._send(producer, rows)
        acknowledged: list[int] = []
        failure: BaseException | None = None
        for row, future in zip(rows, sent, strict=True):
            try:
                await future
            except KafkaError as exc:
                # Rows after the first failure are sent again later, so no key's events
                # are marked sent past one that was not.
                failure = exc
                break
            acknowledged.append(row.id)
        crash_point("relay.after_publish")
        await anyio.to_thread.run_sync(self._store.mark_sent, acknowledged)
        self.published += len(acknowledged)
        if self._published_counter is not None and acknowledged:
            self._published_counter.add(len(acknowledged))
        if failure is not None:
            raise failure
        return len(acknowledged)

    async def _send(
        self, producer: AIOKafkaProducer, rows: list[OutboxRow]
    ) -> list[asyncio.Future[Any]]:
        """Hand ``rows`` to the producer as record batches, one run per partition (the
        partition the producer's own partitioner picks for the key, or the topic's own rule
        from ``partitioners``, so a key's events share a partition whoever publishes them);
        the future of each row is its batch's."""
        partitions: dict[str, list[int]] = {}
        runs: dict[tuple[str, int], list[int]] = {}
        chosen = self._partition_of
        if len(chosen) > 100_000:
            chosen.clear()
        for index, row in enumerate(rows):
            known = partitions.get(row.topic)
            if known is None:
                known = partitions[row.topic] = sorted(await producer.partitions_for(row.topic))
            # Keys repeat (participants, markets): murmur2 in Python is worth remembering.
            memo = (row.topic, len(known), row.key)
            partition = chosen.get(memo)
            if partition is None:
                rule = self._partitioners.get(row.topic)
                if rule is not None:
                    partition = chosen[memo] = known[rule(row.key, len(known)) % len(known)]
                else:
                    partition = chosen[memo] = self._partitioner(row.key.encode(), known, known)
            runs.setdefault((row.topic, partition), []).append(index)
        futures: list[asyncio.Future[Any] | None] = [None] * len(rows)
        for (topic, partition), indexes in runs.items():
            batch = producer.create_batch()
            members: list[int] = []
            for index in indexes:
                row = rows[index]
                key = row.key.encode()
                if batch.append(key=key, value=row.payload, timestamp=None, headers=row.headers):
                    members.append(index)
                    continue
                # Full: send it and start the next one with this row (a batch always takes
                # its first record, however large).
                future = await producer.send_batch(batch, topic, partition=partition)
                for member in members:
                    futures[member] = future
                batch = producer.create_batch()
                batch.append(key=key, value=row.payload, timestamp=None, headers=row.headers)
                members = [index]
            future = await producer.send_batch(batch, topic, partition=partition)
            for member in members:
                futures[member] = future
        return [f for f in futures if f is not None]
