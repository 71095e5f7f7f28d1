"""Trades settled per second through the ledger adapter, command to outcome event.

Starts tansu, a fresh anvil and the ledger adapter as a process (as ``prosum up`` does), onboards
participants, then for batches of 1, 10, 100 and 500 trades publishes settle commands to
Kafka and waits for every ``ledger.command_confirmed``. Prints trades/s and the p50/p99
latency from publishing a command to receiving its outcome event.

    uv run python -m bench.ledger_commands [--trades 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from prosum_contracts import Envelope
from prosum_contracts.topics import LEDGER_COMMANDS, LEDGER_EVENTS
from prosum_ledger.adapters.evm import start_anvil
from prosum_ledger.adapters.evm.anvil import free_port
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import start_tansu
from tests.support.kafka_io import TopicReader, publish
from tests.support.service_process import ServiceProcess

PAIRS = 50


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1] * 1000


def cmd(kind: str, subject: str, **data: Any) -> Envelope:
    return Envelope(f"ledger.{kind}", 1, "settlement", subject, data)


async def wait_outcomes(
    reader: TopicReader, ids: set[str], sent_at: dict[str, float], timeout: float
) -> dict[str, float]:
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    seen = 0
    while len(done) < len(ids) and time.monotonic() < deadline:
        await reader.poll()
        for record in reader.records[seen:]:
            body = json.loads(record.value)
            cid = body["data"].get("command_id")
            if body["type"].startswith("ledger.command_") and cid in ids and cid not in done:
                if body["type"] != "ledger.command_confirmed":
                    raise RuntimeError(f"{cid} failed: {body['data']}")
                done[cid] = time.perf_counter() - sent_at[cid]
        seen = len(reader.records)
    return done


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=2000, help="trades per batch size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = start_tansu()
        anvil = start_anvil(folder / "chain", free_port())
        kafka = KafkaConfig(broker.bootstrap, client_id="bench-ledger")
        service = ServiceProcess(
            "prosum_ledger",
            {
                "PROSUM_DATA_DIR": str(folder),
                "PROSUM_DB_URL": f"sqlite:///{folder / 'ledger.db'}",
                "PROSUM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "PROSUM_CHAIN_BACKEND": "evm",
                "PROSUM_CHAIN_EVM_RPC_URL": anvil.rpc_url,
                "PROSUM_CHAIN_EVM_CHAIN_ID": str(anvil.chain_id),
                "PROSUM_LOG_LEVEL": "WARNING",
            },
            folder / "ledger.log",
        )
        try:
            service.ready()
            async with TopicReader(kafka, LEDGER_EVENTS) as reader:
                sellers = [f"s{i}" for i in range(PAIRS)]
                buyers = [f"b{i}" for i in range(PAIRS)]
                setup: list[Envelope] = []
                for p in [*sellers, *buyers, "operator"]:
                    perms = ["connect", "send", "receive"] + (
                        ["energy.issue"] if p.startswith("s") else []
                    )
                    setup.append(
                        cmd(
                            "grant_permissions",
                            p,
                            command_id=f"g-{p}",
                            participant_id=p,
                            permissions=perms,
                        )
                    )
                for s in sellers:
                    setup.append(
                        cmd(
                            "mint_energy",
                            s,
                            command_id=f"m-{s}",
                            participant_id=s,
                            amount_wh=10**12,
                            evidence_hash="aa" * 32,
                        )
                    )
                for b in buyers:
                    setup.append(
                        cmd("mint_ecoin", b, command_id=f"e-{b}", participant_id=b, amount=10**14)
                    )
                sent = {c.data["command_id"]: time.perf_counter() for c in setup}
                await publish(kafka, LEDGER_COMMANDS, setup)
                await wait_outcomes(reader, set(sent), sent, 300)
                print(
                    "throughput: all commands published at once; latency: command published -> outcome"
                )
                print(
                    "event, one command at a time; burst p50: latency inside the burst (queueing)"
                )
                print(
                    f"{'batch':>5} {'trades':>7} {'trades/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'burst p50':>10}"
                )
                for size in (1, 10, 100, 500):
                    commands = max(1, min(args.trades // size, 200))
                    batch: list[Envelope] = []
                    for c in range(commands):
                        trades = []
                        for i in range(size):
                            n = c * size + i
                            trades.append(
                                {
                                    "trade_id": uuid.uuid4().hex,
                                    "seller": sellers[n % PAIRS],
                                    "buyer": buyers[(n * 7) % PAIRS],
                                    "energy_wh": 1_000,
                                    "ecoin": 250,
                                    "fee_ecoin": 1,
                                }
                            )
                        cid = uuid.uuid4().hex
                        batch.append(
                            cmd(
                                "settle_trades",
                                cid,
                                command_id=cid,
                                fee_account="operator",
                                trades=trades,
                            )
                        )
                    sent = {}
                    started = time.perf_counter()
                    producer = kafka.producer()
                    await producer.start()
                    for envelope in batch:
                        sent[envelope.data["command_id"]] = time.perf_counter()
                        await producer.send(
                            LEDGER_COMMANDS, envelope.to_bytes(), key=envelope.subject.encode()
                        )
                    await producer.flush()
                    await producer.stop()
                    done = await wait_outcomes(reader, set(sent), sent, 600)
                    elapsed = time.perf_counter() - started
                    # Latency without a queue in front: one command at a time.
                    single: list[float] = []
                    for envelope in batch[: min(len(batch), 10)]:
                        fresh = dict(envelope.data, command_id=uuid.uuid4().hex)
                        fresh["trades"] = [
                            dict(t, trade_id=uuid.uuid4().hex) for t in fresh["trades"]
                        ]
                        one = cmd("settle_trades", fresh["command_id"], **fresh)
                        at = {fresh["command_id"]: time.perf_counter()}
                        await publish(kafka, LEDGER_COMMANDS, [one])
                        single.extend((await wait_outcomes(reader, set(at), at, 120)).values())
                    print(
                        f"{size:>5} {commands * size:>7} {commands * size / elapsed:>9,.0f} "
                        f"{percentile(single, 50):>8.0f} {percentile(single, 99):>8.0f} "
                        f"{percentile(list(done.values()), 50):>10.0f}"
                    )
        finally:
            service.stop()
            anvil.stop()
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
