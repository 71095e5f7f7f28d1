"""The matching core in one process: order operations per second and latency per operation.

A continuous book is warmed up with resting orders around a mid price, then driven by a seeded
random mix of operations (by default 55% limit orders, a fifth of which cross the spread, 5%
immediate-or-cancel, 25% cancels, 15% reduces) from 500 participants, as the books' consumer
drives it: each operation's events are taken (``mark_persisted``) right after it. Throughput is
measured in a run without per-operation timing; latency (p50, p99, p99.9, max) in a second run
that times every operation with ``perf_counter_ns``. Then: rebuilding the book from its events,
and clearing a call auction.

    uv run python -m bench.matching_core [--ops 300000] [--resting 20000] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench._calibration import cpu_check
from prosum_orderbook.domain.book import OrderBook
from prosum_orderbook.domain.markets import Fees, Mechanism
from prosum_platform.domain import DomainEvent

MARKET = "2026-11-21T14:00Z"
AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MID = 240_000  # 240 ecoin/kWh in milli-ecoin/kWh
TICK = 1_000


def new_book(mechanism: Mechanism = Mechanism.CONTINUOUS) -> OrderBook:
    book = OrderBook(MARKET)
    book.open(mechanism, Fees(operator_fee=2, grid_fee_per_kwh=10_000), AT)
    book.mark_persisted()
    return book


def workload(ops: int, seed: int) -> list[Callable[[OrderBook], None]]:
    """The operations, prepared up front so that the timed loop only runs the book."""
    rng = random.Random(seed)
    live: list[str] = []
    prepared: list[Callable[[OrderBook], None]] = []
    for n in range(ops):
        roll = rng.random()
        if roll < 0.60 or len(live) < 100:
            side = "buy" if rng.random() < 0.5 else "sell"
            crossing = rng.random() < 0.2
            offset = rng.randint(0, 20) * TICK
            if side == "buy":
                price = MID + offset if crossing else MID - TICK - offset
            else:
                price = MID - offset if crossing else MID + TICK + offset
            order_id = f"o{n}"
            tif = "ioc" if roll > 0.55 else "gtc"
            participant = f"p{rng.randrange(500)}"
            quantity = rng.randint(1, 50) * 100
            if tif == "gtc":
                live.append(order_id)

            def place(
                b: OrderBook,
                o: str = order_id,
                p: str = participant,
                s: str = side,
                pr: int = price,
                q: int = quantity,
                t: str = tif,
            ) -> None:
                b.place(
                    order_id=o,
                    participant_id=p,
                    side=s,
                    price=pr,
                    quantity_wh=q,
                    time_in_force=t,
                    at=AT,
                )

            prepared.append(place)
        elif roll < 0.85:
            victim = live.pop(rng.randrange(len(live)))
            prepared.append(lambda b, o=victim: b.cancel(o, AT))
        else:
            target = live[rng.randrange(len(live))]
            by = rng.randint(1, 10) * 100
            prepared.append(lambda b, o=target, r=by: b.reduce(o, r, AT))
    return prepared


def warm(book: OrderBook, resting: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    for n in range(resting):
        side = "buy" if n % 2 else "sell"
        offset = rng.randint(0, 40) * TICK
        price = MID - TICK - offset if side == "buy" else MID + TICK + offset
        book.place(
            order_id=f"w{n}",
            participant_id=f"w{rng.randrange(500)}",
            side=side,
            price=price,
            quantity_wh=rng.randint(1, 50) * 100,
            at=AT,
        )
    book.mark_persisted()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=300_000)
    parser.add_argument("--resting", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(cpu_check(), flush=True)

    operations = workload(args.ops, args.seed)
    gc.collect()

    # throughput: no timing inside the loop
    book = new_book()
    warm(book, args.resting, args.seed)
    events = 0
    started = time.perf_counter()
    for operation in operations:
        operation(book)
        events += len(book.pending_events)
        book.mark_persisted()
    elapsed = time.perf_counter() - started
    trades = book.trade_seq
    print(
        f"matching core: {args.ops:,} operations on a book of {args.resting:,} resting orders in "
        f"{elapsed:.2f} s = {args.ops / elapsed:,.0f} operations/s "
        f"({trades:,} trades, {events:,} events, {len(book.orders):,} orders resting after)"
    )

    # latency: every operation timed
    book = new_book()
    warm(book, args.resting, args.seed)
    latencies: list[int] = []
    clock = time.perf_counter_ns
    for operation in operations:
        before = clock()
        operation(book)
        book.mark_persisted()
        latencies.append(clock() - before)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))] / 1000

    print(
        f"  latency per operation: p50 {pct(0.50):.1f} us, p99 {pct(0.99):.1f} us, "
        f"p99.9 {pct(0.999):.1f} us, max {latencies[-1] / 1000:.0f} us (bar: p99 < 1000 us)"
    )

    # rebuilding a book from its events (what a new owner of a market does without a snapshot)
    source = OrderBook(MARKET)
    source.open(Mechanism.CONTINUOUS, Fees(operator_fee=2, grid_fee_per_kwh=10_000), AT)
    recorded: list[DomainEvent] = list(source.pending_events)
    source.mark_persisted()
    for operation in operations[:100_000]:
        operation(source)
        recorded.extend(source.pending_events)
        source.mark_persisted()
    fresh = OrderBook(MARKET)
    started = time.perf_counter()
    for version, event in enumerate(recorded, start=1):
        fresh.replay(event, version)
    elapsed = time.perf_counter() - started
    assert fresh.state() == source.state(), "replay rebuilds the same book"
    print(
        f"  replay: {len(recorded):,} events in {elapsed:.2f} s = "
        f"{len(recorded) / elapsed:,.0f} events/s, the same book"
    )

    # a call auction: collect crossing orders, clear them at gate closure
    auction = new_book(Mechanism.CALL_AUCTION)
    rng = random.Random(args.seed + 2)
    for n in range(args.resting):
        side = "buy" if n % 2 else "sell"
        auction.place(
            order_id=f"c{n}",
            participant_id=f"c{n % 997}",
            side=side,
            price=MID + rng.randint(-30, 30) * TICK,
            quantity_wh=rng.randint(1, 50) * 100,
            at=AT,
        )
    auction.mark_persisted()
    started = time.perf_counter()
    auction.close(AT)
    elapsed = time.perf_counter() - started
    cleared = auction.pending_events[0]
    print(
        f"  call auction: {args.resting:,} orders cleared in {elapsed * 1000:.0f} ms "
        f"({auction.trade_seq:,} trades, {cleared})"
    )


if __name__ == "__main__":
    main()
