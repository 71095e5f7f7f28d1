"""A service-like process for tests: writes events with their outbox rows, then relays them.

    python -m tests.support.outbox_writer --db URL --bootstrap HOST:PORT --topic T \
        --count N --subjects K

Each event is appended and enqueued in one transaction; then the relay publishes until the
outbox is empty. With ``PROSUM_FAULTS=relay.after_publish`` the process dies right after the
broker acknowledged a batch and before the rows were marked sent.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from prosum_contracts import Envelope, SchemaRegistry
from prosum_platform.eventstore import EventStore, NewEvent, create_store_engine, metadata
from prosum_platform.messaging import KafkaConfig, OutboxRelay

SCHEMAS = Path(__file__).resolve().parent.parent / "contracts" / "schemas"


def write(store: EventStore, topic: str, count: int, subjects: int, start: int) -> None:
    for n in range(start, start + count):
        subject = f"widget-{n % subjects}"
        with store.transaction() as tx:
            version = tx.current_version(subject)
            tx.append(subject, version, [NewEvent("WidgetRecorded", 1, {"n": n})])
            tx.enqueue(
                Envelope(
                    type="platformtest.widget_recorded",
                    schema_version=1,
                    source="identity",
                    subject=subject,
                    data={"widget_id": subject, "sequence": n, "amount": "0.001"},
                ),
                topic,
            )


async def relay_all(store: EventStore, bootstrap: str) -> int:
    relay = OutboxRelay(store, KafkaConfig(bootstrap, client_id="outbox-writer"))
    await relay.start()
    try:
        while store.pending_outbox():
            await relay.publish_once()
    finally:
        await relay.stop()
    return relay.published


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--subjects", type=int, default=1)
    args = parser.parse_args()
    engine = create_store_engine(args.db)
    metadata.create_all(engine)
    store = EventStore(engine, SchemaRegistry.load([SCHEMAS]))
    write(store, args.topic, args.count, args.subjects, args.start)
    published = asyncio.run(relay_all(store, args.bootstrap))
    print(f"published {published}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
