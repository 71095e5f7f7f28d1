"""Orders per second through the orderbook service: HTTP in, trade events out.

Starts a tansu broker and one or more orderbook processes sharing one database, stands in for
identity (keys, active participants, one threshold per participant) and the ledger (balances),
then sends crossing bids and asks over keep-alive HTTP connections to the instances in turn, in
several markets, and reads ``orderbook.trade_executed`` back from Kafka. The figure is orders
accepted (202) divided by the time from the first request to the last expected trade event.

    uv run python -m bench.orderbook_http [--orders 6000] [--instances 2] [--markets 12]
        [--connections 48] [--db sqlite|postgresql]

The load generator is a minimal asyncio HTTP/1.1 client (no httpx) so that it takes as little
of the machine's CPU as possible from the service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench._calibration import cpu_check
from prosum_contracts.topics import ORDERBOOK_EVENTS
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import start_tansu
from tests.integration.orderbook.harness import (
    Identity,
    Ledger,
    Orderbook,
    market_id,
    quarter_after,
)
from tests.support.stores import LOCAL_PG_ADMIN_URL


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read the status and the body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def count_trades(
    kafka: KafkaConfig, expected: int, started: list[float], timeout: float
) -> float:
    """Read the orderbook's events until ``expected`` trades were seen; returns when."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await reader.start()
    try:
        partitions = reader.partitions_for_topic(ORDERBOOK_EVENTS)
        while not partitions:
            await reader.force_metadata_update()
            partitions = reader.partitions_for_topic(ORDERBOOK_EVENTS)
        tps = [TopicPartition(ORDERBOOK_EVENTS, p) for p in partitions]
        reader.assign(tps)
        await reader.seek_to_end(*tps)
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for record in records:
                    if b'"orderbook.trade_executed"' in record.value:
                        seen.add(orjson.loads(record.value)["data"]["trade_id"])
        if len(seen) < expected:
            raise TimeoutError(f"only {len(seen)} of {expected} trades arrived")
        return time.perf_counter()
    finally:
        await reader.stop()


def database(kind: str, folder: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{folder / 'orderbook.db'}", None
    admin = sa.create_engine(LOCAL_PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"prosum_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = LOCAL_PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return url, drop


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=6000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--markets", type=int, default=12)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--batch", type=int, default=1, help="orders per request (>1: POST /orders/batch)"
    )
    args = parser.parse_args()
    print(cpu_check(), flush=True)

    broker = start_tansu()
    folder = Path(tempfile.mkdtemp(prefix="bench-orderbook-"))
    db_url, drop = database(args.db, folder)
    kafka = KafkaConfig(broker.bootstrap, client_id="bench")
    instances = [
        Orderbook(folder, broker.bootstrap, db_url, PROSUM_DB_POOL_SIZE="20")
        for _ in range(args.instances)
    ]
    try:
        instances[0].start("orderbook-0").ready()  # migrates the database alone
        for n, instance in enumerate(instances[1:], 1):
            instance.start(f"orderbook-{n}", PROSUM_DB_MIGRATE_ON_START="false")
        for instance in instances:
            instance.ready()
        identity, ledger = Identity(kafka), Ledger(kafka)
        await identity.publish_keys()
        tag = uuid.uuid4().hex[:6]
        sellers = [f"s{n}-{tag}" for n in range(args.participants // 2)]
        buyers = [f"b{n}-{tag}" for n in range(args.participants // 2)]
        for participant in sellers + buyers:
            await identity.status(participant, "activated")
        for participant in sellers:
            await ledger.balance(participant, 10**9, 0)
        for participant in buyers:
            await ledger.balance(participant, 0, 10**12)
        thresholds = {
            p: identity.threshold(p, max_open_wh=10**9, max_ecoin=10**12) for p in sellers + buyers
        }
        ops = identity.ops()
        for instance in instances:
            instance.until(
                f"/participants/{buyers[-1]}/cover", ops, lambda c: c["ecoin"] > 0, timeout=60
            )
        # wait until every instance holds partitions of the command topic
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [i.ready()["checks"]["books"]["assigned"] for i in instances]
            if all(states):
                break
            await asyncio.sleep(0.5)
        first = quarter_after(datetime.now(UTC), timedelta(hours=1))
        markets = [market_id(first + timedelta(minutes=15 * n)) for n in range(args.markets)]

        # Each pair: an ask, then a bid at the same price for the same quantity: one trade each.
        orders: list[tuple[str, dict[str, Any]]] = []
        pairs = args.orders // 2
        for n in range(pairs):
            market = markets[n % len(markets)]
            seller, buyer = sellers[n % len(sellers)], buyers[n % len(buyers)]
            for participant, side in ((seller, "sell"), (buyer, "buy")):
                # one price: every bid meets an ask, one trade per pair
                order = {"market_id": market, "side": side, "quantity_wh": 1000}
                orders.append((thresholds[participant], {**order, "price_per_kwh": "240"}))
        # One request per order, or batches of orders each with its own threshold.
        requests: list[tuple[str, bytes, dict[str, str], int]] = []
        if args.batch <= 1:
            for threshold, order in orders:
                headers = {"X-Prosum-Threshold": threshold}
                requests.append(("/orders", orjson.dumps(order), headers, 1))
        else:
            for start in range(0, len(orders), args.batch):
                chunk = orders[start : start + args.batch]
                body = {"orders": [{**order, "threshold": token} for token, order in chunk]}
                requests.append(("/orders/batch", orjson.dumps(body), {}, len(chunk)))

        connections = [
            Connection("127.0.0.1", instances[n % len(instances)].port)
            for n in range(args.connections)
        ]
        for connection in connections:
            await connection.open()
        queue: asyncio.Queue[tuple[str, bytes, dict[str, str], int]] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)
        latencies: list[float] = []
        refused: list[bytes] = []

        async def worker(connection: Connection) -> None:
            while True:
                try:
                    path, body, headers, count = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                sent = time.perf_counter()
                status, payload = await connection.post(path, body, headers)
                latencies.append(time.perf_counter() - sent)
                if status not in (200, 202) or (count > 1 and orjson.loads(payload)["refused"]):
                    refused.append(payload)

        started = [time.perf_counter()]
        counter = asyncio.create_task(count_trades(kafka, pairs, started, timeout=300))
        await asyncio.sleep(1.0)  # the reader is positioned at the end of the topic
        started[0] = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in connections))
        accepted_at = time.perf_counter()
        finished = await counter
        for connection in connections:
            await connection.close()
        if refused:
            print(f"refused: {len(refused)}, e.g. {refused[0][:300]!r}")
        for n, instance in enumerate(instances):
            books = instance.ready()["checks"]["books"]
            print(
                f"  instance {n}: partitions {books['partitions']}, {books['applied']} commands in "
                f"{books['batches']} batches ({books.get('prepared_batches', 0)} prepared ahead), "
                f"{books['entry_orders']} orders entered in "
                f"{books['entry_groups']} group commits"
            )
        total = len(orders) - len(refused)
        latencies.sort()
        shape = "one order per request" if args.batch <= 1 else f"{args.batch} orders per request"
        print(
            f"orderbook HTTP: {total} orders ({pairs} trades) in {args.markets} markets through "
            f"{args.instances} instance(s), {args.db}, {args.connections} connections, {shape}, "
            f"{os.cpu_count()} cores"
        )
        print(
            f"  accepted (HTTP 202): {total / (accepted_at - started[0]):,.0f} orders/s; "
            f"request latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
        )
        print(
            f"  HTTP in to trade events out: {total / (finished - started[0]):,.0f} orders/s "
            f"({finished - started[0]:.2f} s until the last of {pairs} trade events)"
        )
    finally:
        for instance in instances:
            instance.stop()
        broker.stop()
        if drop is not None:
            drop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
