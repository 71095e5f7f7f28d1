"""Events cross processes through the real broker exactly once: an outbox in one process, a
consumer in another, with the relay killed between publish and mark-as-sent, with duplicated
deliveries, and with messages that do not honour the contract."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from prosum_contracts import Envelope, SchemaRegistry
from prosum_platform.eventstore import (
    EventStore,
    NewEvent,
    Transaction,
    create_store_engine,
    metadata,
)
from prosum_platform.eventstore.engine import WriteLockTimeout
from prosum_platform.messaging import (
    EventConsumer,
    HandlerOutcome,
    KafkaConfig,
    OutboxRelay,
    Subscription,
)
from prosum_platform.messaging.kafka import ensure_topics
from prosum_platform.runtime.tansu import TansuBroker

pytestmark = [pytest.mark.kafka]
REPO = Path(__file__).resolve().parents[3]
WIDGET = "platformtest.widget_recorded"


def _run(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _start_sink(db: str, tansu: TansuBroker, topic: str, expect: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.event_sink",
            "--db",
            db,
            "--bootstrap",
            tansu.bootstrap,
            "--topic",
            topic,
            "--group",
            f"sink-{topic}",
            "--expect",
            str(expect),
            "--settle",
            "2.5",
            "--timeout",
            "90",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sink_sequences(db: str) -> dict[str, list[int]]:
    store = EventStore(create_store_engine(db))
    seen: dict[str, list[int]] = defaultdict(list)
    for event in store.read_all(limit=100_000):
        seen[event.stream_id.removeprefix("sink-")].append(event.data["sequence"])
    return seen


def _widget(subject: str, sequence: int) -> Envelope:
    return Envelope(
        type=WIDGET,
        schema_version=1,
        source="identity",
        subject=subject,
        data={"widget_id": subject, "sequence": sequence, "amount": "2"},
    )


async def _read_back(
    kafka: KafkaConfig, topic: str, expected: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """The topic's records from the beginning, once ``expected`` arrived (or after 20 s)."""
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        for _ in range(80):
            batch = await reader.getmany(timeout_ms=250)
            records += [r for rs in batch.values() for r in rs]
            if len(records) >= expected:
                break
        return records
    finally:
        await reader.stop()


def _record(topic: str, event: Envelope, key: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    """A record as a fetch returns it, to deliver by hand."""
    value = event.to_bytes()
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=(),
    )


def _apply(envelope: Envelope, tx: Transaction) -> None:
    stream = f"sink-{envelope.subject}"
    tx.append(stream, tx.current_version(stream), [NewEvent("WidgetSeen", 1, dict(envelope.data))])


@pytest.mark.slow
def test_events_cross_processes_exactly_once_and_in_order_per_aggregate(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    source_db, sink_db = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'sink.db'}"
    sink = _start_sink(sink_db, tansu, topic, expect=200)
    writer = _run(
        "tests.support.outbox_writer",
        "--db",
        source_db,
        "--bootstrap",
        tansu.bootstrap,
        "--topic",
        topic,
        "--count",
        "200",
        "--subjects",
        "7",
    )
    assert writer.returncode == 0, writer.stderr
    out, err = sink.communicate(timeout=120)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats == {"applied": 200, "duplicates": 0, "dead_lettered": 0}, err[-2000:]
    seen = _sink_sequences(sink_db)
    for subject, sequences in seen.items():
        assert sequences == sorted(sequences), f"{subject} out of order"
    assert sorted(n for seqs in seen.values() for n in seqs) == list(range(200))


@pytest.mark.slow
def test_relay_killed_between_publish_and_mark_sent_loses_nothing_and_applies_once(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    source_db, sink_db = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'sink.db'}"
    sink = _start_sink(sink_db, tansu, topic, expect=50)
    crashed = _run(
        "tests.support.outbox_writer",
        "--db",
        source_db,
        "--bootstrap",
        tansu.bootstrap,
        "--topic",
        topic,
        "--count",
        "50",
        "--subjects",
        "3",
        env={"PROSUM_FAULTS": "relay.after_publish"},
    )
    assert crashed.returncode == 137, crashed.stderr
    assert "fault injected at relay.after_publish" in crashed.stderr
    store = EventStore(create_store_engine(source_db))
    assert store.pending_outbox() == 50, "published but not marked: all rows still pending"

    restarted = _run(
        "tests.support.outbox_writer",
        "--db",
        source_db,
        "--bootstrap",
        tansu.bootstrap,
        "--topic",
        topic,
    )
    assert restarted.returncode == 0, restarted.stderr
    assert store.pending_outbox() == 0
    out, err = sink.communicate(timeout=120)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["applied"] == 50, err[-2000:]
    assert stats["duplicates"] == 50, "every event arrived twice and was applied once"
    seen = _sink_sequences(sink_db)
    assert sorted(n for seqs in seen.values() for n in seqs) == list(range(50))


async def _consume_dead_letters(
    kafka: KafkaConfig, consumer_name: str, expect: int
) -> list[dict[str, Any]]:
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await reader.start()
    try:
        partitions = reader.partitions_for_topic("prosum.deadletter") or set()
        tps = [TopicPartition("prosum.deadletter", p) for p in partitions]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        found: list[dict[str, Any]] = []
        for _ in range(40):
            batch = await reader.getmany(timeout_ms=250)
            for records in batch.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    if headers.get("dlq.consumer") == consumer_name:
                        found.append({"value": record.value, **headers})
            if len(found) >= expect:
                break
        return found
    finally:
        await reader.stop()


async def test_bad_messages_go_to_the_dead_letter_topic_and_the_consumer_keeps_going(
    kafka: KafkaConfig, tmp_path: Path, registry: SchemaRegistry
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    name = f"dlq-test-{uuid.uuid4().hex[:6]}"
    producer = kafka.producer()
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{not json", key=b"w-1")
        unknown = _widget("w-1", 1).to_dict() | {"type": "platformtest.no_such_thing"}
        await producer.send_and_wait(topic, json.dumps(unknown).encode(), key=b"w-1")
        invalid = _widget("w-1", 2).to_dict()
        invalid["data"]["sequence"] = "two"
        await producer.send_and_wait(topic, json.dumps(invalid).encode(), key=b"w-1")
        await producer.send_and_wait(topic, None, key=b"w-1")
        await producer.send_and_wait(topic, _widget("w-1", 3).to_bytes(), key=b"w-1")
    finally:
        await producer.stop()

    engine = create_store_engine(f"sqlite:///{tmp_path / 'c.db'}")
    metadata.create_all(engine)
    store = EventStore(engine)
    consumer = EventConsumer(name, store, registry, kafka, Subscription((topic,), {WIDGET: _apply}))
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if consumer.stats.applied == 1 and consumer.stats.dead_lettered == 4:
                break
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        task.cancel()
    assert (consumer.stats.applied, consumer.stats.dead_lettered) == (1, 4)
    assert [e.data["sequence"] for e in store.load("sink-w-1")] == [3]

    letters = await _consume_dead_letters(kafka, name, expect=4)
    reasons = [letter["dlq.reason"] for letter in letters]
    assert reasons == ["malformed", "unknown_type", "invalid", "malformed"]
    assert "not JSON" in letters[0]["dlq.detail"]
    assert "platformtest.no_such_thing" in letters[1]["dlq.detail"]
    assert "sequence" in letters[2]["dlq.detail"]
    assert all(letter["dlq.topic"] == topic for letter in letters)
    assert letters[0]["value"] == b"{not json", "the original bytes are kept for inspection"


async def test_the_same_message_delivered_twice_is_applied_once(
    kafka: KafkaConfig, tmp_path: Path, registry: SchemaRegistry
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    engine = create_store_engine(f"sqlite:///{tmp_path / 'c.db'}")
    metadata.create_all(engine)
    store = EventStore(engine)
    event = _widget("w-9", 7)

    producer = kafka.producer()
    await producer.start()
    try:
        for _ in range(2):  # a producer retry or a relay restart: the same bytes twice
            await producer.send_and_wait(topic, event.to_bytes(), key=b"w-9")
    finally:
        await producer.stop()
    consumer = EventConsumer(
        f"twice-{uuid.uuid4().hex[:6]}",
        store,
        registry,
        kafka,
        Subscription((topic,), {WIDGET: _apply}),
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if consumer.stats.applied + consumer.stats.duplicates == 2:
                break
            await asyncio.sleep(0.1)
        # and once more, by hand, as a redelivery after a rebalance would
        record = _record(topic, event, b"w-9", offset=99)
        assert await consumer.process(record) is HandlerOutcome.DUPLICATE
    finally:
        await consumer.stop()
        task.cancel()
    assert (consumer.stats.applied, consumer.stats.duplicates) == (1, 2)
    assert len(store.load("sink-w-9")) == 1


async def test_relay_publishes_in_commit_order_with_the_subject_as_key(
    kafka: KafkaConfig, store_url: str, registry: SchemaRegistry
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    engine = create_store_engine(store_url)
    metadata.create_all(engine)
    store = EventStore(engine, registry)
    for n in range(30):
        with store.transaction() as tx:
            tx.enqueue(_widget(f"w-{n % 4}", n), topic)
    relay = OutboxRelay(store, kafka)
    await relay.start()
    try:
        assert await relay.publish_once() == 30
        assert await relay.publish_once() == 0
    finally:
        await relay.stop()
    assert store.pending_outbox() == 0

    records = await _read_back(kafka, topic, 30)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        by_key[record.key].append(json.loads(record.value)["data"]["sequence"])
        partition_of[record.key].add(record.partition)
    assert sum(len(v) for v in by_key.values()) == 30
    for key, sequences in by_key.items():
        assert sequences == sorted(sequences)
        assert len(partition_of[key]) == 1, f"{key!r} spread over partitions"


async def test_a_batch_handler_applies_a_fetch_at_once_and_still_exactly_once(
    kafka: KafkaConfig, tmp_path: Path, registry: SchemaRegistry
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    engine = create_store_engine(f"sqlite:///{tmp_path / 'c.db'}")
    metadata.create_all(engine)
    store = EventStore(engine)
    calls: list[int] = []

    def apply_many(envelopes: Any, tx: Transaction) -> None:
        calls.append(len(envelopes))
        for envelope in envelopes:
            _apply(envelope, tx)

    events = [_widget(f"w-{n % 3}", n) for n in range(40)]
    producer = kafka.producer()
    await producer.start()
    try:
        for event in [*events, *events[:10]]:  # ten delivered twice
            await producer.send_and_wait(topic, event.to_bytes(), key=event.subject.encode())
    finally:
        await producer.stop()
    consumer = EventConsumer(
        f"bulk-{uuid.uuid4().hex[:6]}",
        store,
        registry,
        kafka,
        Subscription((topic,), {WIDGET: _apply}, batch_handlers={WIDGET: apply_many}),
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if consumer.stats.applied + consumer.stats.duplicates >= 50:
                break
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        task.cancel()
    assert (consumer.stats.applied, consumer.stats.duplicates) == (40, 10)
    seen = sorted(
        e.data["sequence"] for s in ("w-0", "w-1", "w-2") for e in store.load(f"sink-{s}")
    )
    assert seen == list(range(40))
    assert sum(calls) == 40
    assert max(calls) > 1, "runs of one type went to the batch handler together"


async def test_relay_batches_keep_each_keys_partition_order_and_headers_on_many_partitions(
    kafka: KafkaConfig, sqlite_url: str, registry: SchemaRegistry
) -> None:
    """The relay hands rows to the producer as record batches per partition: each key still
    lands on the partition Kafka's default partitioner picks for it (what any other producer
    of that key would pick), in commit order, with its headers; rows too large to share a
    batch go in batches of their own."""
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [topic], partitions=4)
    engine = create_store_engine(sqlite_url)
    metadata.create_all(engine)
    store = EventStore(engine, registry)
    events = 300
    with store.transaction() as tx:
        for n in range(events):
            envelope = _widget(f"w-{n % 23}", n)
            if n % 50 == 0:  # larger than a producer batch (16 KB)
                envelope = Envelope(
                    type=WIDGET,
                    schema_version=1,
                    source="identity",
                    subject=envelope.subject,
                    data={**envelope.data, "widget_id": "x" * 40_000},
                )
            tx.enqueue(envelope, topic)
    relay = OutboxRelay(store, kafka, batch_size=120)
    await relay.start()
    try:
        published = 0
        while sent := await relay.publish_once():
            published += sent
    finally:
        await relay.stop()
    assert published == events
    assert store.pending_outbox() == 0

    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        for _ in range(80):
            batch = await reader.getmany(timeout_ms=250)
            records += [r for rs in batch.values() for r in rs]
            if len(records) >= events:
                break
        partitions = sorted(reader.partitions_for_topic(topic) or set())
    finally:
        await reader.stop()
    assert len(partitions) == 4
    assert len(records) == events
    choose = DefaultPartitioner()
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        assert record.key is not None and record.value is not None
        assert record.partition == choose(record.key, partitions, partitions)
        body = json.loads(record.value)
        by_key[record.key].append(body["data"]["sequence"])
        assert dict(record.headers)["event_id"].decode() == body["event_id"]
    assert len(by_key) == 23
    for sequences in by_key.values():
        assert sequences == sorted(sequences)
    assert len({r.partition for r in records}) > 1


async def test_a_topic_with_a_partitioner_of_its_own_is_spread_by_that_rule(
    kafka: KafkaConfig, sqlite_url: str, registry: SchemaRegistry
) -> None:
    """A service may give the relay its own rule for a topic's keys (the order book spreads
    markets by delivery interval): each key lands on the partition the rule picks, in order."""
    topic = f"ruled-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [topic], partitions=3)
    engine = create_store_engine(sqlite_url)
    metadata.create_all(engine)
    store = EventStore(engine, registry)
    with store.transaction() as tx:
        for n in range(60):
            tx.enqueue(_widget(f"w-{n % 7}", n), topic)
    relay = OutboxRelay(
        store, kafka, partitioners={topic: lambda key, count: int(key.split("-")[1]) % count}
    )
    await relay.start()
    try:
        while await relay.publish_once():
            pass
    finally:
        await relay.stop()
    records = await _read_back(kafka, topic, 60)
    assert len(records) == 60
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        assert record.key is not None and record.value is not None
        assert record.partition == int(record.key.decode().split("-")[1]) % 3
        by_key[record.key].append(json.loads(record.value)["data"]["sequence"])
    assert all(sequences == sorted(sequences) for sequences in by_key.values())


async def test_events_a_consumer_does_not_apply_do_not_break_its_batches(
    kafka: KafkaConfig, tmp_path: Path, registry: SchemaRegistry
) -> None:
    """A shared topic carries types a consumer has no handler for: they are skipped inside the
    fetched batch, and the batch handler still gets the runs of the types it applies."""
    topic = f"mixed-{uuid.uuid4().hex[:8]}"
    engine = create_store_engine(f"sqlite:///{tmp_path / 'm.db'}")
    metadata.create_all(engine)
    store = EventStore(engine)
    calls: list[int] = []

    def apply_many(envelopes: Any, tx: Transaction) -> None:
        calls.append(len(envelopes))
        for envelope in envelopes:
            _apply(envelope, tx)

    other = Envelope(
        "identity.participant_activated", 1, "identity", "p-1", {"participant_id": "p-1"}
    )
    events: list[Envelope] = []
    for n in range(40):
        events.append(_widget(f"w-{n % 3}", n))
        if n % 2:
            events.append(Envelope(other.type, 1, "identity", "p-1", dict(other.data)))
    producer = kafka.producer()
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, event.to_bytes(), key=b"one-partition")
        await producer.flush()
    finally:
        await producer.stop()
    consumer = EventConsumer(
        f"mixed-{uuid.uuid4().hex[:6]}",
        store,
        registry,
        kafka,
        Subscription((topic,), {WIDGET: _apply}, batch_handlers={WIDGET: apply_many}),
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if consumer.stats.applied + consumer.stats.ignored >= 60:
                break
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        task.cancel()
    assert (consumer.stats.applied, consumer.stats.ignored) == (40, 20)
    seen = sorted(
        e.data["sequence"] for s in ("w-0", "w-1", "w-2") for e in store.load(f"sink-{s}")
    )
    assert seen == list(range(40))
    assert sum(calls) == 40
    assert max(calls) > 1, "the skipped events did not split the batch into single events"


class _FlakyStore(EventStore):
    """An event store whose reads of the outbox fail a few times (a lost connection)."""

    failures = 2

    def unsent(self, limit: int) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise OSError("the database went away")
        return super().unsent(limit)


async def test_the_relay_outlives_database_errors_and_publishes_afterwards(
    kafka: KafkaConfig, sqlite_url: str, registry: SchemaRegistry
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"
    engine = create_store_engine(sqlite_url)
    metadata.create_all(engine)
    store = _FlakyStore(engine, registry)
    with store.transaction() as tx:
        for n in range(5):
            tx.enqueue(_widget(f"w-{n}", n), topic)
    relay = OutboxRelay(store, kafka, idle_poll=0.05)
    await relay.start()
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(100):
            if store.pending_outbox() == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        await relay.stop()
        task.cancel()
    assert store.failures == 0
    assert store.pending_outbox() == 0
    assert not task.done() or task.cancelled() or task.exception() is None


async def test_a_write_lock_held_long_by_another_writer_is_waited_out_not_dead_lettered(
    kafka: KafkaConfig, tmp_path: Path, registry: SchemaRegistry
) -> None:
    """Nothing is wrong with an event whose transaction could not get the database's write lock
    in time: the consumer tries it again, past its usual number of attempts, and applies it."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    metadata.create_all(engine)
    store = EventStore(engine)
    timeouts = {"left": 8}

    def apply_after_timeouts(envelope: Envelope, tx: Transaction) -> None:
        if timeouts["left"]:
            timeouts["left"] -= 1
            raise WriteLockTimeout("waited 30 s for another transaction")
        _apply(envelope, tx)

    topic = f"locked-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer(
        f"locked-{uuid.uuid4().hex[:6]}",
        store,
        registry,
        kafka,
        Subscription((topic,), {WIDGET: apply_after_timeouts}),
        handler_attempts=3,
    )
    await consumer.start()
    event = _widget("w-1", 1)
    record = _record(topic, event, b"w-1", offset=0)
    try:
        assert await consumer.process(record) is HandlerOutcome.APPLIED
    finally:
        await consumer.stop()
    assert timeouts["left"] == 0
    assert consumer.stats.dead_lettered == 0
    assert len(store.load("sink-w-1")) == 1
