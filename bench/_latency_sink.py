"""Consumer process for bench/outbox_relay.py: applies events and measures their latency."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from prosum_contracts import Envelope, SchemaRegistry
from prosum_contracts.envelope import utc_now
from prosum_platform.eventstore import (
    EventStore,
    NewEvent,
    Transaction,
    create_store_engine,
    metadata,
)
from prosum_platform.messaging import EventConsumer, KafkaConfig, Subscription
from tests.conftest import TEST_SCHEMAS

REPO = Path(__file__).resolve().parent.parent


async def main(bootstrap: str, topic: str, db: str, expect: int) -> None:
    engine = create_store_engine(db)
    metadata.create_all(engine)
    latencies: list[float] = []

    def apply(envelope: Envelope, tx: Transaction) -> None:
        stream = f"seen-{envelope.subject}"
        tx.append(stream, tx.current_version(stream), [NewEvent("Seen", 1, {})])
        latencies.append((utc_now() - envelope.occurred_at).total_seconds() * 1000)

    consumer = EventConsumer(
        "bench-sink",
        EventStore(engine),
        SchemaRegistry.load([TEST_SCHEMAS]),
        KafkaConfig(bootstrap, client_id="bench-sink", heartbeat_interval_ms=500),
        Subscription((topic,), {"platformtest.widget_recorded": apply}),
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(consumer.assigned.wait(), 30)
    print("assigned", flush=True)
    deadline = time.monotonic() + 90
    while len(latencies) < expect and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await consumer.stop()
    task.cancel()
    ordered = sorted(latencies)
    print(
        json.dumps(
            {
                "count": len(ordered),
                "p50_ms": statistics.median(ordered),
                "p99_ms": ordered[int(len(ordered) * 0.99) - 1],
                "max_ms": ordered[-1],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
