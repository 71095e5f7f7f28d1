"""A consuming service for tests: applies widget events to its own store, exactly once.

    python -m tests.support.event_sink --db URL --bootstrap HOST:PORT --topic T --group G \
        --expect N [--settle 2.0] [--timeout 60]

Every applied event is appended to the stream ``sink-<subject>`` in the same transaction as the
consumer's tracking row. The process stops once it has applied ``expect`` events and seen
nothing new for ``settle`` seconds (so late duplicates are still read), and prints its counts
as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from prosum_contracts import Envelope, SchemaRegistry
from prosum_platform.eventstore import (
    EventStore,
    NewEvent,
    Transaction,
    create_store_engine,
    metadata,
)
from prosum_platform.messaging import EventConsumer, KafkaConfig, Subscription

SCHEMAS = Path(__file__).resolve().parent.parent / "contracts" / "schemas"


def apply_widget(envelope: Envelope, tx: Transaction) -> None:
    stream = f"sink-{envelope.subject}"
    tx.append(
        stream,
        tx.current_version(stream),
        [NewEvent("WidgetSeen", 1, {"sequence": envelope.data["sequence"]})],
    )


async def run(args: argparse.Namespace) -> dict[str, int]:
    engine = create_store_engine(args.db)
    metadata.create_all(engine)
    store = EventStore(engine)
    consumer = EventConsumer(
        args.group,
        store,
        SchemaRegistry.load([SCHEMAS]),
        KafkaConfig(args.bootstrap, client_id="event-sink", heartbeat_interval_ms=500),
        Subscription(topics=(args.topic,), handlers={"platformtest.widget_recorded": apply_widget}),
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    deadline = time.monotonic() + args.timeout
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        total = consumer.stats.applied + consumer.stats.duplicates + consumer.stats.dead_lettered
        if total != seen:
            seen, quiet_since = total, time.monotonic()
        elif consumer.stats.applied >= args.expect and time.monotonic() - quiet_since > args.settle:
            break
    await consumer.stop()
    task.cancel()
    return {
        "applied": consumer.stats.applied,
        "duplicates": consumer.stats.duplicates,
        "dead_lettered": consumer.stats.dead_lettered,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    stats = asyncio.run(run(parser.parse_args()))
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
