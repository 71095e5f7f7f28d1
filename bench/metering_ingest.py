"""Signed meter readings verified and stored per second, and latency from reading to mint command.

Three parts, each printing its figures:

1. Signature verification alone (the floor under everything else): Ed25519 with
   ``cryptography`` in the calling thread and in the verifier's process pool.
2. In process, through the application layer (``IngestService`` on the real store, verifier
   pool, outbox): batches as a meter data hub sends them. Two shapes:
   - *live*: one reading from each of many meters per batch, each completing an interval
     (measured, and minted where there is surplus: about half of them);
   - *back-fill*: many consecutive readings of a few meters per batch.
   On SQLite (the embedded default) and PostgreSQL when one answers on 127.0.0.1:5432.
3. Through HTTP: metering as a process (as ``prosum up`` runs it) on tansu, batches POSTed by
   concurrent clients; then single readings one at a time, timing each from the POST to its
   ``ledger.mint_energy`` command on ``prosum.ledger.commands``.

    uv run python -m bench.metering_ingest [--meters 2000] [--rounds 6] [--no-http] [--no-pg]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from prosum_auth import Limits
from prosum_contracts import Envelope, SchemaRegistry
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_COMMANDS
from prosum_metering.adapters.signatures import (
    PooledVerifier,
    build_verifier,
    default_workers,
    verify_all,
)
from prosum_metering.adapters.store import read_view, unit_of_work
from prosum_metering.adapters.tables import tables
from prosum_metering.application.ingest import IngestService, Item, Submitter
from prosum_metering.application.ports import SignatureVerifier
from prosum_metering.domain.minting import mint_command_id
from prosum_metering.entrypoints.consumers import metering_handlers
from prosum_platform.eventstore import EventStore, create_store_engine, metadata
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import start_tansu
from prosum_platform.service.gc_tuning import freeze_startup_objects, tune_gc
from tests.support.kafka_io import TopicReader, publish
from tests.support.service_process import ServiceProcess
from tests.support.stores import postgres_server
from tests.unit.metering.meters import INTERVAL, Identity, Meter, onboarding, utc

WORKERS = os.cpu_count() or 1
START = (int(time.time()) // 86_400 - 30) * 86_400  # 30 days ago, 00:00 UTC
FLEET = "fleet-1"  # one participant (a meter operator) owning every meter of the benchmark


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc (Linux).

    Other sessions share this machine's cores, so wall-clock figures depend on their load;
    CPU seconds per reading do not, and bound what two dedicated cores can do.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1] * 1000


def fleet(count: int, first: int = 0) -> list[Meter]:
    """``count`` meters of the fleet, each with its own new key (create once, then reuse)."""
    return [
        Meter(f"bench-m{i}", f"BENCH-MP{i:05d}", FLEET, rating_w=40_000)
        for i in range(first, first + count)
    ]


def reading(meter: Meter, k: int) -> dict[str, Any]:
    """The k-th reading of a meter: half the meters export more than they import."""
    n = int(meter.device_id.removeprefix("bench-m"))
    exports = 300 if n % 2 else 0
    return meter.reading(START + k * INTERVAL, 1_000 + 200 * k, 1_000 + exports * k)


def submitter() -> Submitter:
    return Submitter(FLEET, None, "bench-threshold")


# -- 1. verification alone --------------------------------------------------------------------


def bench_verification(pool: PooledVerifier) -> None:
    meter = fleet(1)[0]
    items = []
    for k in range(20_000):
        r = reading(meter, k)
        message = (
            f"prosum-reading-v1\n{r['device_id']}\n{r['metering_point']}\n{r['interval_end']}"
            f"\n{r['import_wh']}\n{r['export_wh']}"
        ).encode()
        items.append(
            (
                meter.key.public_key().public_bytes_raw(),
                message,
                base64.urlsafe_b64decode(r["signature"] + "=="),
            )
        )
    started = time.perf_counter()
    assert all(verify_all(items[:5_000]))
    inline = 5_000 / (time.perf_counter() - started)
    cpu = tree_cpu(os.getpid())
    started = time.perf_counter()
    assert all(pool.verify_many(items))
    pooled = len(items) / (time.perf_counter() - started)
    per = (tree_cpu(os.getpid()) - cpu) / len(items) * 1e6
    print(f"  Ed25519 verify, one thread: {inline:>7,.0f} /s ({1e6 / inline:.0f} µs each)")
    print(f"  Ed25519 verify, pool of {pool.workers}:  {pooled:>7,.0f} /s ({per:.0f} µs CPU each)")


# -- 2. in process ------------------------------------------------------------------------------


def onboard(store: EventStore, meters: list[Meter]) -> None:
    handlers = metering_handlers()
    events = [onboarding(m)[0] for m in meters[:1]] + [onboarding(meters[0])[1]]
    events += [onboarding(m)[2] for m in meters]
    with store.transaction() as tx:  # one transaction, as the consumer applies a fetched batch
        for envelope in events:
            tx.record_processed("metering", envelope.event_id)
            handlers[envelope.type](envelope, tx)


def run_batches(
    ingest: IngestService, batches: list[list[dict[str, Any]]], clients: int
) -> tuple[float, int, int]:
    """Submit ``batches`` from ``clients`` threads; (seconds, readings accepted, mints)."""
    queue = list(reversed(batches))
    lock = threading.Lock()
    totals = [0, 0]

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                batch = queue.pop()
            result = ingest.submit(submitter(), [Item(i, r) for i, r in enumerate(batch)], "json")
            with lock:
                totals[0] += result.count("accepted")
                totals[1] += result.mints_requested

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, totals[0], totals[1]


def report(label: str, seconds: float, cpu: float, accepted: int, extra: str) -> None:
    print(
        f"  {label}: {accepted / seconds:>7,.0f} readings/s wall, "
        f"{cpu / accepted * 1e6:>4.0f} µs CPU per reading ({extra})"
    )


@contextmanager
def stores(use_pg: bool) -> Iterator[list[tuple[str, str]]]:
    with tempfile.TemporaryDirectory() as tmp:
        urls = [("SQLite", f"sqlite:///{Path(tmp) / 'metering.db'}")]
        if not use_pg:
            yield urls
            return
        with postgres_server() as server:
            if server is None:
                yield urls
                return
            with server.database() as pg_url:
                yield [*urls, ("PostgreSQL", pg_url)]


def bench_in_process(pool: SignatureVerifier, meters: int, rounds: int, use_pg: bool) -> None:
    live_fleet = fleet(meters)
    live = [[reading(m, k) for m in live_fleet] for k in range(rounds)]
    fill_fleet = fleet(50, first=meters)
    backfill = [
        [reading(m, k) for m in fill_fleet for k in range(part * 100, (part + 1) * 100)]
        for part in range(4)
    ]
    with stores(use_pg) as urls:
        for name, url in urls:
            for clients in (1, 2):
                engine = create_store_engine(url)
                metadata.drop_all(engine)
                tables.drop_all(engine)
                metadata.create_all(engine)
                tables.create_all(engine)
                store = EventStore(engine, SchemaRegistry.load())
                onboard(store, live_fleet + fill_fleet)
                ingest = IngestService(unit_of_work(store), read_view(store), pool, time.time)
                run_batches(ingest, live[:1], 1)  # baselines: the first reading of each meter
                cpu = tree_cpu(os.getpid())
                seconds, accepted, mints = run_batches(ingest, live[1:], clients)
                report(
                    f"{name:<10} live,      {clients} client(s), batches of {meters:>5}",
                    seconds,
                    tree_cpu(os.getpid()) - cpu,
                    accepted,
                    f"{accepted} intervals, {mints} mints",
                )
                cpu = tree_cpu(os.getpid())
                seconds, accepted, mints = run_batches(ingest, backfill, clients)
                report(
                    f"{name:<10} back-fill, {clients} client(s), batches of {len(backfill[0]):>5}",
                    seconds,
                    tree_cpu(os.getpid()) - cpu,
                    accepted,
                    f"{mints} mints",
                )
                metadata.drop_all(engine)
                tables.drop_all(engine)
                engine.dispose()


# -- 3. through HTTP ----------------------------------------------------------------------------


async def wait_known(client: httpx.AsyncClient, ops: str, metering_point: str) -> None:
    url = f"/v1/intervals?metering_point={metering_point}&from={utc(START)}&to={utc(START + 900)}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (await client.get(url, headers={"Authorization": f"Bearer {ops}"})).status_code == 200:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("metering did not learn of the meters")


async def bench_http(meters: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = start_tansu()
        kafka = KafkaConfig(broker.bootstrap, client_id="bench-metering")
        service = ServiceProcess(
            "prosum_metering",
            {
                "PROSUM_DATA_DIR": str(folder),
                "PROSUM_DB_URL": f"sqlite:///{folder / 'metering.db'}",
                "PROSUM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "PROSUM_LOG_LEVEL": "WARNING",
                "PROSUM_METERING_SEAL_INTERVAL_S": "5",
            },
            folder / "metering.log",
        )
        try:
            service.ready()
            who = Identity()
            meters_ = fleet(meters)
            events: list[Envelope] = [who.keys_changed(), *onboarding(meters_[0])[:2]]
            events += [onboarding(m)[2] for m in meters_]
            await publish(kafka, IDENTITY_EVENTS, events)
            threshold = who.signer.threshold(
                "bench-th",
                FLEET,
                meters_[0].device_id,
                "",
                ["submit_readings"],
                Limits(0, 0, 0),
                3600,
            )
            headers = {"X-Prosum-Threshold": threshold, "Content-Type": "application/json"}
            bodies = [body_of(meters_, k) for k in range(rounds)]
            async with httpx.AsyncClient(base_url=service.url, timeout=120) as client:
                await wait_known(client, who.ops_token(), meters_[-1].metering_point)
                first = await client.post("/v1/readings/batch", content=bodies[0], headers=headers)
                assert first.json()["accepted"] == meters, first.text
                for clients, ks in ((1, range(1, rounds)), (2, range(rounds, 2 * rounds - 1))):
                    batch = [bodies[k] if k < len(bodies) else body_of(meters_, k) for k in ks]
                    await drained(client)
                    cpu = tree_cpu(service.process.pid)
                    seconds, accepted = await post_concurrently(client, batch, clients, headers)
                    report(
                        f"HTTP live, {clients} client(s), batches of {meters:>5}",
                        seconds,
                        tree_cpu(service.process.pid) - cpu,
                        accepted,
                        "service process and its verifier workers",
                    )
                await drained(client)
                await latency(client, kafka, headers, meters_, 2 * rounds - 1)
        finally:
            service.stop()
            broker.stop()


async def drained(client: httpx.AsyncClient) -> None:
    """Until the relay has published everything (its backlog would bill the next run)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = (await client.get("/ready")).json()
        if ready.get("checks", {}).get("outbox", {}).get("pending") == 0:
            return
        await asyncio.sleep(0.2)


def body_of(meters: list[Meter], k: int) -> bytes:
    return orjson.dumps({"readings": [reading(m, k) for m in meters]})


async def post_concurrently(
    client: httpx.AsyncClient, bodies: list[bytes], clients: int, headers: dict[str, str]
) -> tuple[float, int]:
    queue = list(reversed(bodies))
    accepted = 0

    async def post_all() -> None:
        nonlocal accepted
        while queue:
            response = await client.post("/v1/readings/batch", content=queue.pop(), headers=headers)
            accepted += response.json()["accepted"]

    started = time.perf_counter()
    await asyncio.gather(*(post_all() for _ in range(clients)))
    return time.perf_counter() - started, accepted


async def latency(
    client: httpx.AsyncClient,
    kafka: KafkaConfig,
    headers: dict[str, str],
    meters: list[Meter],
    k: int,
) -> None:
    exporters = [m for m in meters if int(m.device_id.removeprefix("bench-m")) % 2][:60]
    samples: list[float] = []
    async with TopicReader(kafka, LEDGER_COMMANDS) as commands:
        await commands.wait_for(lambda r: False, timeout=0.5)
        for meter in exporters:
            body = orjson.dumps(reading(meter, k))
            wanted = mint_command_id(meter.metering_point, START + (k - 1) * INTERVAL)

            def mine(record: Any, wanted: str = wanted) -> bool:
                data = json.loads(record.value)
                return bool(
                    data["type"] == "ledger.mint_energy" and data["data"]["command_id"] == wanted
                )

            started = time.perf_counter()
            response = await client.post("/v1/readings", content=body, headers=headers)
            assert response.status_code == 201, response.text
            found = await commands.wait_for(mine, timeout=30)
            assert found, f"no mint command for {meter.metering_point}"
            samples.append(time.perf_counter() - started)
            commands.records.clear()
    print(
        f"  reading -> mint command on Kafka ({len(samples)} single readings, one at a time): "
        f"p50 {percentile(samples, 50):.0f} ms, p99 {percentile(samples, 99):.0f} ms, "
        f"mean {statistics.mean(samples) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=2000, help="meters (readings per live batch)")
    parser.add_argument("--rounds", type=int, default=6, help="live batches per run")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    print(f"metering ingest on {WORKERS} CPU(s)")
    tune_gc()  # as the service process does
    pool = PooledVerifier(WORKERS)
    try:
        pool.warm_up()
        print("1. signature verification")
        bench_verification(pool)
    finally:
        pool.close()
    # The service's own verifier: one process per CPU but one, beside the request thread.
    verifier = build_verifier(None)
    try:
        if isinstance(verifier, PooledVerifier):
            verifier.warm_up()
        freeze_startup_objects()  # as the service does once it has started
        print(
            "2. in process, application layer (verify, check, store, measure, mint, outbox; "
            f"{default_workers()} verifying process(es))"
        )
        bench_in_process(verifier, args.meters, args.rounds, not args.no_pg)
    finally:
        verifier.close()
    if not args.no_http:
        print("3. through HTTP (metering as a process, SQLite, tansu)")
        asyncio.run(bench_http(args.meters, args.rounds))


if __name__ == "__main__":
    main()
