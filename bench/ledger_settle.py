"""Settlement throughput of the EVM ledger backend on a fresh anvil.

    uv run python -m bench.ledger_settle [--participants 200] [--seconds 15]

Starts anvil in a temporary folder, funds ``--participants`` prosumers, then settles batches
of 1, 10, 100 and 500 trades one after the other (each batch one ``settle_batch`` command, as
the settlement service sends them) and prints trades per second, the latency of one command
from call to confirmed receipt (p50/p99) and gas per trade. Each batch size runs for at most
``--seconds`` and at most a fixed number of batches, so the whole run stays under two minutes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from eth_account import Account

from prosum_ledger.adapters.evm import EvmBackend, EvmConfig, generate_encryption_key, start_anvil
from prosum_ledger.domain.model import (
    PARTICIPANT_PERMISSIONS,
    PRODUCER_PERMISSIONS,
    Permission,
    SettlementTrade,
)

BATCH_SIZES = (1, 10, 100, 500)
MAX_BATCHES = {1: 300, 10: 100, 100: 30, 500: 8}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(q * (len(ordered) - 1)))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0, help="time cap per batch size")
    args = parser.parse_args()
    rng = random.Random(7)
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="prosum-bench-ledger-") as tmp:
        folder = Path(tmp)
        with start_anvil(folder / "chain") as node:
            backend = EvmBackend(
                EvmConfig(
                    rpc_url=node.rpc_url,
                    chain_id=node.chain_id,
                    operator_private_key=Account.create().key.hex(),
                    keystore_path=folder / "keys" / "participants.keys",
                    keystore_key=generate_encryption_key(),
                )
            )
            backend.setup_assets()
            producers = [f"producer-{i}" for i in range(args.participants // 2)]
            consumers = [f"consumer-{i}" for i in range(args.participants - len(producers))]
            for pid in producers:
                backend.grant(f"grant-{pid}", pid, PRODUCER_PERMISSIONS)
                backend.mint_energy(f"mint-{pid}", pid, 10**12, f"evidence-{pid}")
            for pid in consumers:
                backend.grant(f"grant-{pid}", pid, PARTICIPANT_PERMISSIONS)
                backend.mint_ecoin(f"topup-{pid}", pid, 10**15)
            backend.grant("grant-ops", "ops", frozenset({Permission.RECEIVE}))
            print(
                f"setup: {args.participants} participants funded in "
                f"{time.monotonic() - started:.1f} s (anvil {node.rpc_url})"
            )
            print(
                f"{'batch':>6} {'batches':>8} {'trades':>7} {'trades/s':>9} "
                f"{'p50 ms':>8} {'p99 ms':>8} {'gas/trade':>10}"
            )
            serial = 0
            for size in BATCH_SIZES:
                latencies: list[float] = []
                gas = 0
                trades_done = 0
                window_start = time.monotonic()
                deadline = window_start + args.seconds
                while len(latencies) < MAX_BATCHES[size] and time.monotonic() < deadline:
                    trades = []
                    for _ in range(size):
                        serial += 1
                        trades.append(
                            SettlementTrade(
                                trade_id=f"trade-{serial}",
                                seller=rng.choice(producers),
                                buyer=rng.choice(consumers),
                                energy_wh=rng.randint(100, 5000),
                                ecoin=rng.randint(10, 900),
                                fee_ecoin=1,
                            )
                        )
                    t0 = time.perf_counter()
                    result = backend.settle_batch(f"settle-{serial}", trades, "ops")
                    latencies.append(time.perf_counter() - t0)
                    assert len(result.settled) == size, result
                    gas += result.receipt.fee
                    trades_done += size
                elapsed = time.monotonic() - window_start
                print(
                    f"{size:>6} {len(latencies):>8} {trades_done:>7} "
                    f"{trades_done / elapsed:>9.0f} "
                    f"{statistics.median(latencies) * 1000:>8.1f} "
                    f"{percentile(latencies, 0.99) * 1000:>8.1f} "
                    f"{gas // trades_done:>10}"
                )
    print(f"total run time {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
