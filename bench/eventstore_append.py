"""Event store appends per second: one writer and 8 concurrent writers, SQLite and PostgreSQL.

Each append is one transaction holding one event (the common case of a command), with the
optimistic version check. Concurrent writers each own their aggregates, as independent
commands do; PostgreSQL is skipped when 127.0.0.1:5432 does not answer.

    uv run python -m bench.eventstore_append [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid

from prosum_platform.eventstore import EventStore, NewEvent, create_store_engine, metadata
from tests.support.stores import postgres_server


def run(store: EventStore, writers: int, seconds: float) -> tuple[int, float]:
    counts = [0] * writers
    stop = time.monotonic() + seconds

    def writer(index: int) -> None:
        version = 0
        stream = f"agg-{index}-{uuid.uuid4().hex[:6]}"
        event = [NewEvent("Deposited", 1, {"amount": "0.001", "by": index})]
        while time.monotonic() < stop:
            with store.transaction() as tx:
                tx.append(stream, version, event)
            version += 1
            counts[index] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return sum(counts), elapsed


def bench(label: str, url: str, seconds: float) -> None:
    engine = create_store_engine(url, pool_size=10)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    store = EventStore(engine)
    for writers in (1, 8):
        total, elapsed = run(store, writers, seconds)
        print(
            f"{label:<11} writers={writers}  appends={total:>7}  {total / elapsed:>9,.0f} appends/s"
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench("sqlite", f"sqlite:///{tmp}/bench.db", args.seconds)
    with postgres_server() as server:
        if server is None:
            print("postgresql  skipped: no server reachable")
            return
        with server.database() as url:
            bench("postgresql", url, args.seconds)


if __name__ == "__main__":
    main()
