"""Outbox relay throughput and end-to-end latency, through a real tansu broker.

1. Throughput: N events already committed to the outbox; time until the broker acknowledged
   all of them (``acks=all``) and the rows are marked sent.
2. Latency: a writer appends events at a steady rate while its relay runs; a consumer in
   another process applies each one (tracking row and effect in one transaction) and measures
   from the event's ``occurred_at`` (set at append) to its commit. p50/p99 are printed.

    uv run python -m bench.outbox_relay [--events 20000] [--rate 500] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from prosum_contracts import Envelope, SchemaRegistry
from prosum_platform.eventstore import EventStore, NewEvent, create_store_engine, metadata
from prosum_platform.messaging import KafkaConfig, OutboxRelay
from prosum_platform.runtime.tansu import start_tansu
from tests.conftest import TEST_SCHEMAS

REPO = Path(__file__).resolve().parent.parent


def widget(subject: str, n: int) -> Envelope:
    return Envelope(
        type="platformtest.widget_recorded",
        schema_version=1,
        source="identity",
        subject=subject,
        data={"widget_id": subject, "sequence": n, "amount": "0.001"},
    )


def fill(store: EventStore, topic: str, events: int) -> None:
    per_tx = 100
    for start in range(0, events, per_tx):
        with store.transaction() as tx:
            for n in range(start, min(start + per_tx, events)):
                tx.enqueue(widget(f"w-{n % 64}", n), topic)


async def throughput(store: EventStore, kafka: KafkaConfig, topic: str, events: int) -> None:
    fill(store, topic, events)
    relay = OutboxRelay(store, kafka, batch_size=1000)
    await relay.start()
    started = time.perf_counter()
    while await relay.publish_once():
        pass
    elapsed = time.perf_counter() - started
    await relay.stop()
    print(
        f"relay throughput: {events} events in {elapsed:.2f}s = {events / elapsed:,.0f} events/s "
        "(commit to broker ack, marked sent)"
    )


async def latency(
    store: EventStore, kafka: KafkaConfig, bootstrap: str, tmp: str, rate: int, seconds: float
) -> None:
    topic = f"bench-latency-{uuid.uuid4().hex[:6]}"
    total = int(rate * seconds)
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench._latency_sink",
            bootstrap,
            topic,
            f"sqlite:///{tmp}/sink.db",
            str(total),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    assert sink.stdout is not None
    line = await asyncio.to_thread(sink.stdout.readline)  # the sink has joined its group
    assert line.strip() == "assigned", line
    relay = OutboxRelay(store, kafka, batch_size=500, idle_poll=0.05)
    await relay.start()
    relay_task = asyncio.create_task(relay.run())

    # Commands run in worker threads, as FastAPI runs the services' endpoints.
    def write() -> float:
        interval = 1.0 / rate
        next_at = time.perf_counter()
        busy = 0.0
        for n in range(total):
            subject = f"w-{n % 64}"
            started = time.perf_counter()
            with store.transaction() as tx:
                stream = f"lat-{subject}"
                tx.append(stream, tx.current_version(stream), [NewEvent("X", 1, {})])
                tx.enqueue(widget(subject, n), topic)
            busy += time.perf_counter() - started
            next_at += interval
            time.sleep(max(next_at - time.perf_counter(), 0))
        return busy / total

    per_command = await asyncio.to_thread(write)
    print(f"writer: {per_command * 1000:.2f} ms per command transaction (append + outbox)")
    out = await asyncio.to_thread(sink.stdout.read)
    sink.wait(timeout=30)
    await relay.stop()
    relay_task.cancel()
    stats = json.loads(out.strip().splitlines()[-1])
    print(
        f"end-to-end latency at {rate} events/s for {seconds:.0f}s ({stats['count']} events, "
        f"consumer in another process): p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
        f"max {stats['max_ms']:.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    broker = start_tansu()
    try:
        kafka = KafkaConfig(broker.bootstrap, client_id="bench")
        registry = SchemaRegistry.load([TEST_SCHEMAS])
        with tempfile.TemporaryDirectory() as tmp:
            engine = create_store_engine(f"sqlite:///{tmp}/source.db")
            metadata.create_all(engine)
            store = EventStore(engine, registry)
            await throughput(store, kafka, f"bench-tp-{uuid.uuid4().hex[:6]}", args.events)
            await latency(store, kafka, broker.bootstrap, tmp, args.rate, args.seconds)
    finally:
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
