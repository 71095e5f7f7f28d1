"""Trade to on-chain confirmation: trades per second and p50/p99 latency through settlement and
the ledger adapter (both as processes) on tansu and anvil.

Publishes ``orderbook.trade_executed`` events at a steady rate and measures, per trade, from
publishing it to receiving its ``settlement.trade_settled`` event (which follows the chain's
confirmation). The issue's bar: at least 500 trades/s, p50 under 1 s; the Oh et al. paper took
4.3 s per trade.

    uv run python -m bench.settlement_chain [--rate 600] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._calibration import cpu_check
from prosum_contracts import Envelope
from prosum_contracts.topics import (
    LEDGER_COMMANDS,
    LEDGER_EVENTS,
    ORDERBOOK_EVENTS,
    SETTLEMENT_EVENTS,
)
from prosum_ledger.adapters.evm import start_anvil
from prosum_ledger.adapters.evm.anvil import free_port
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import start_tansu
from tests.support.kafka_io import TopicReader, publish
from tests.support.service_process import ServiceProcess

PAIRS = 50


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1] * 1000


async def onboard(kafka: KafkaConfig) -> None:
    commands = []
    for i in range(PAIRS):
        for who, extra in ((f"s{i}", ["energy.issue"]), (f"b{i}", [])):
            commands.append(
                Envelope(
                    "ledger.grant_permissions",
                    1,
                    "identity",
                    who,
                    {
                        "command_id": f"g-{who}",
                        "participant_id": who,
                        "permissions": ["connect", "send", "receive", *extra],
                    },
                )
            )
        commands.append(
            Envelope(
                "ledger.mint_energy",
                1,
                "metering",
                f"s{i}",
                {
                    "command_id": f"m-s{i}",
                    "participant_id": f"s{i}",
                    "amount_wh": 10**12,
                    "evidence_hash": "aa" * 32,
                },
            )
        )
        commands.append(
            Envelope(
                "ledger.mint_ecoin",
                1,
                "settlement",
                f"b{i}",
                {"command_id": f"e-b{i}", "participant_id": f"b{i}", "amount": 10**14},
            )
        )
    commands.append(
        Envelope(
            "ledger.grant_permissions",
            1,
            "identity",
            "operator",
            {
                "command_id": "g-operator",
                "participant_id": "operator",
                "permissions": ["connect", "send", "receive"],
            },
        )
    )
    ids = {c.data["command_id"] for c in commands}
    async with TopicReader(kafka, LEDGER_EVENTS) as events:
        await publish(kafka, LEDGER_COMMANDS, commands)
        await events.wait_for(
            lambda r: json.loads(r.value)["data"].get("command_id") in ids,
            count=len(ids),
            timeout=300,
        )


async def stages(kafka: KafkaConfig, settled: list[Any], sent_wall: dict[str, float]) -> None:
    """Where the time goes, from the broker's record timestamps (each set when the record was
    produced): trade published -> its batch command produced by settlement -> the ledger's
    outcome produced -> trade_settled produced."""
    batch_of: dict[str, str] = {}
    command_at: dict[str, float] = {}
    outcome_at: dict[str, float] = {}
    async with TopicReader(kafka, LEDGER_COMMANDS) as commands:
        await commands.wait_for(lambda r: False, timeout=2)
        for record in commands.records:
            body = json.loads(record.value)
            if body["type"] == "ledger.settle_trades":
                command_id = body["data"]["command_id"]
                command_at[command_id] = record.timestamp / 1000
                for trade in body["data"]["trades"]:
                    batch_of.setdefault(trade["trade_id"], command_id)
    async with TopicReader(kafka, LEDGER_EVENTS) as outcomes:
        await outcomes.wait_for(lambda r: False, timeout=2)
        for record in outcomes.records:
            body = json.loads(record.value)
            command_id = body["data"].get("command_id", "")
            if body["type"] == "ledger.command_confirmed" and command_id in command_at:
                outcome_at[command_id] = record.timestamp / 1000
    parts: dict[str, list[float]] = {"to batch": [], "on chain": [], "to settled": []}
    for record in settled:
        body = json.loads(record.value)
        trade_id = body["data"].get("trade_id")
        command_id = batch_of.get(trade_id or "")
        if body["type"] != "settlement.trade_settled" or trade_id not in sent_wall:
            continue
        if command_id is None or command_id not in outcome_at:
            continue
        parts["to batch"].append(command_at[command_id] - sent_wall[trade_id])
        parts["on chain"].append(outcome_at[command_id] - command_at[command_id])
        parts["to settled"].append(record.timestamp / 1000 - outcome_at[command_id])
    sizes = [sum(1 for c in batch_of.values() if c == command_id) for command_id in command_at]
    print(
        "  stages (p50 / p99 ms): "
        + ", ".join(f"{k} {pct(v, 50):.0f} / {pct(v, 99):.0f}" for k, v in parts.items() if v)
        + f"; {len(command_at)} batches, {statistics.mean(sizes):.0f} trades each on average"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=600, help="trades per second offered")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(cpu_check(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = start_tansu()
        anvil = start_anvil(folder / "chain", free_port())
        kafka = KafkaConfig(broker.bootstrap, client_id="bench-settlement")
        common = {
            "PROSUM_DATA_DIR": str(folder),
            "PROSUM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "PROSUM_LOG_LEVEL": "WARNING",
        }
        ledger = ServiceProcess(
            "prosum_ledger",
            {
                **common,
                "PROSUM_DB_URL": f"sqlite:///{folder / 'l.db'}",
                "PROSUM_CHAIN_BACKEND": "evm",
                "PROSUM_CHAIN_EVM_RPC_URL": anvil.rpc_url,
                "PROSUM_CHAIN_EVM_CHAIN_ID": str(anvil.chain_id),
            },
            folder / "ledger.log",
        )
        settlement = ServiceProcess(
            "prosum_settlement",
            {
                **common,
                "PROSUM_DB_URL": f"sqlite:///{folder / 's.db'}",
                "PROSUM_SETTLEMENT_FEE_ACCOUNT": "operator",
            },
            folder / "settlement.log",
        )
        try:
            ledger.ready()
            settlement.ready()
            await onboard(kafka)
            total = int(args.rate * args.seconds)
            sent_at: dict[str, float] = {}
            sent_wall: dict[str, float] = {}
            done: dict[str, float] = {}
            async with TopicReader(kafka, SETTLEMENT_EVENTS) as reader:
                producer = kafka.producer()
                await producer.start()

                async def produce() -> None:
                    start = time.perf_counter()
                    for n in range(total):
                        trade_id = uuid.uuid4().hex
                        envelope = Envelope(
                            "orderbook.trade_executed",
                            1,
                            "orderbook",
                            f"m{n % 8}",
                            {
                                "trade_id": trade_id,
                                "market_id": f"m{n % 8}",
                                "delivery_start": "2026-11-22T10:00:00Z",
                                "delivery_end": "2026-11-22T10:15:00Z",
                                "seller": f"s{n % PAIRS}",
                                "buyer": f"b{(n * 7) % PAIRS}",
                                "sell_order_id": "so",
                                "buy_order_id": "bo",
                                "quantity_wh": 500,
                                "price_per_kwh": "200",
                                "value_ecoin": 100,
                                "fee_ecoin": 1,
                                "executed_at": "2026-11-22T09:00:00Z",
                            },
                        )
                        sent_at[trade_id] = time.perf_counter()
                        sent_wall[trade_id] = time.time()
                        await producer.send(
                            ORDERBOOK_EVENTS, envelope.to_bytes(), key=envelope.subject.encode()
                        )
                        delay = start + (n + 1) / args.rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await producer.flush()

                task = asyncio.create_task(produce())
                started = time.perf_counter()
                seen = 0
                deadline = started + args.seconds + 120
                while len(done) < total and time.perf_counter() < deadline:
                    await reader.poll()
                    now = time.perf_counter()
                    for record in reader.records[seen:]:
                        body = json.loads(record.value)
                        trade_id = body["data"].get("trade_id")
                        if (
                            body["type"] == "settlement.trade_settled"
                            and trade_id in sent_at
                            and trade_id not in done
                        ):
                            done[trade_id] = now - sent_at[trade_id]
                        elif body["type"] == "settlement.trade_failed":
                            raise RuntimeError(f"trade failed: {body['data']}")
                    seen = len(reader.records)
                await task
                await producer.stop()
                elapsed = time.perf_counter() - started
            latencies = list(done.values())
            print(
                f"offered {args.rate} trades/s for {args.seconds:.0f}s: {len(done)}/{total} settled on chain in {elapsed:.1f}s "
                f"= {len(done) / elapsed:,.0f} trades/s; trade -> settled p50 {pct(latencies, 50):.0f} ms, "
                f"p99 {pct(latencies, 99):.0f} ms, max {max(latencies) * 1000:.0f} ms"
            )
            await stages(kafka, reader.records, sent_wall)
        finally:
            settlement.stop()
            ledger.stop()
            anvil.stop()
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
