"""End to end: the trade of ARCHITECTURE.md ("The trade, end to end") through every service.

`prosum up --detach` runs the tansu broker, anvil and the five services as processes, each with
its SQLite store, from a fresh data dir; the test then acts as ops, a producer's smart meter
and a consumer's home gateway would, over HTTP only:

1. ops gets a token and onboards a producer, a consumer and the operator's fee account; each
   turns active when the chain confirms its permissions;
2. the meter and the gateway, registered with their Ed25519 keys and DACTs, each answer a
   challenge and get a threshold;
3. the meter sends signed readings that measure 6 kWh of net surplus; metering has it minted;
4. the consumer's top-up is requested and approved by ops; the ledger mints the ecoin;
5. in one continuous market two bids (2 and 3 kWh) rest, and an ask of 5 kWh meets both: two
   trades, with an operator fee and a grid fee;
6. both trades settle on chain; the chain, the APIs (settlement, order book) and the events
   (ledger, settlement, order book topics) agree on every balance: 5 kWh went from the producer
   to the consumer, the trades' value the other way, the fees to the operator, and nothing was
   made or lost.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest

from prosum_contracts.topics import LEDGER_EVENTS, ORDERBOOK_EVENTS, SETTLEMENT_EVENTS
from tests.support.e2e_clients import Clients, Device, expect
from tests.support.e2e_platform import Platform, PlatformError, anvil_installed
from tests.support.kafka_io import TopicReader

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not anvil_installed(),
        reason="`prosum up` runs the development chain, and anvil is not installed: run "
        "`npm ci` or scripts/setup.sh",
    ),
]

OPERATOR_FEE_ECOIN = 7  # per buy order, on its first fill
GRID_FEE_PER_KWH = Decimal("2.5")  # per kWh traded
QUARTER = timedelta(minutes=15)

# Register deltas (import, export) of the meter per 15-minute interval: 3 kWh surplus each.
INTERVALS = [(100, 3_100), (50, 3_050)]
MINTED_WH = sum(export - imported for imported, export in INTERVALS)
TOP_UP_ECOIN = 1_000
ASK = (5_000, "120")  # Wh, limit ecoin per kWh
BIDS = [(2_000, "130"), (3_000, "125.5")]  # the better bid fills first


class Phases:
    """How long each step took, for the failure message and the report."""

    def __init__(self, startup_s: float) -> None:
        self.began = self.last = time.monotonic()
        self.times: list[tuple[str, float]] = [("prosum up", startup_s)]
        self.began -= startup_s

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.times.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.times)
        return f"{steps}; total {time.monotonic() - self.began:.1f} s"


def quarter_floor(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def market_id_of(start: datetime) -> str:
    return start.strftime("%Y-%m-%dT%H:%MZ")


def ecoin(quantity_wh: int, price_per_kwh: Decimal) -> int:
    """Value or grid fee of a quantity at a rate per kWh: rounded down to whole ecoin."""
    exact = Decimal(quantity_wh) * price_per_kwh / 1000
    return int(exact.to_integral_value(rounding=ROUND_FLOOR))


def decoded(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    tag = uuid.uuid4().hex[:8]
    running = Platform(
        tmp_path / "prosum-data",
        env={
            "PROSUM_ORDERBOOK_OPERATOR_FEE_ECOIN": str(OPERATOR_FEE_ECOIN),
            "PROSUM_ORDERBOOK_GRID_FEE_PER_KWH": str(GRID_FEE_PER_KWH),
            # The fee account is a participant like any other: ops onboards it below.
            "PROSUM_SETTLEMENT_FEE_ACCOUNT": f"operator-{tag}",
            "PROSUM_SETTLEMENT_BATCH_WINDOW_MS": "100",
        },
    )
    try:
        running.up()
        yield running
    finally:
        running.down()


async def events(
    platform: Platform,
    reader: TopicReader,
    match: Callable[[dict[str, Any]], bool],
    count: int,
    what: str,
    logs: tuple[str, ...],
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """At least ``count`` events of the topic that ``match``, read from its beginning."""
    found = decoded(await reader.wait_for(lambda r: match(json.loads(r.value)), count, timeout))
    if len(found) < count:
        failure = PlatformError(
            f"timed out after {timeout:.0f} s waiting for {count} {what}; found {len(found)}: "
            f"{found}\n{platform.logs(*logs)}"
        )
        failure.with_logs = True
        raise failure
    return found


async def test_an_ask_meets_two_bids_and_both_trades_settle_on_chain(
    platform: Platform,
) -> None:
    phases = Phases(platform.startup_s)
    tag = uuid.uuid4().hex[:8]
    producer, consumer = f"producer-{tag}", f"consumer-{tag}"
    operator = platform.env["PROSUM_SETTLEMENT_FEE_ACCOUNT"]
    clients = Clients(platform)
    try:
        await run_the_trade(platform, clients, phases, producer, consumer, operator)
    except Exception as exc:
        exc.add_note(f"steps so far: {phases}")
        if not getattr(exc, "with_logs", False):
            exc.add_note(platform.logs(lines=25))
        raise
    finally:
        await clients.aclose()
    print(f"\ntrade end to end: {phases}")


async def run_the_trade(
    platform: Platform,
    clients: Clients,
    phases: Phases,
    producer: str,
    consumer: str,
    operator: str,
) -> None:
    tag = producer.removeprefix("producer-")

    # 1. ops onboards the producer, the consumer and the operator's fee account ------------------
    await clients.login_ops()
    onboarded = await asyncio.gather(
        clients.onboard(producer, "producer", f"MP-P-{tag}"),
        clients.onboard(consumer, "consumer", f"MP-C-{tag}"),
        clients.onboard(operator, "operator", f"MP-O-{tag}"),
    )
    assert [p["status"] for p in onboarded] == ["active"] * 3
    phases.done("onboarding")

    # 2. devices with keys and DACTs; each proves possession and gets a threshold ---------------
    meter = Device(
        f"meter-{tag}", producer, "smart_meter", f"MP-P-{tag}", ("ask", "submit_readings")
    )
    gateway = Device(f"gateway-{tag}", consumer, "home_gateway", f"MP-C-{tag}", ("bid",))
    await clients.register_device(meter, rating_w=20_000)
    await clients.register_device(gateway, rating_w=11_000)
    meter_threshold, gateway_threshold = await asyncio.gather(
        clients.threshold(meter), clients.threshold(gateway)
    )
    assert sorted(meter_threshold["actions"]) == ["ask", "submit_readings"], meter_threshold
    assert gateway_threshold["actions"] == ["bid"], gateway_threshold
    phases.done("devices and thresholds")

    # 3. the meter's signed readings; metering measures the surplus and has it minted -----------
    last_end = quarter_floor(datetime.now(UTC) - timedelta(minutes=1))
    first_end = last_end - QUARTER * len(INTERVALS)
    registers = [(1_000, 2_000)]
    for imported, exported in INTERVALS:
        registers.append((registers[-1][0] + imported, registers[-1][1] + exported))
    for i, (import_wh, export_wh) in enumerate(registers):
        answer = await clients.submit_reading(
            meter_threshold, meter.reading(first_end + QUARTER * i, import_wh, export_wh)
        )
        assert answer["status"] == "accepted", answer

    balance_seen: list[Any] = []

    async def minted() -> dict[str, Any] | None:
        held = await clients.settlement_balance(producer)
        balance_seen[:] = [held]
        return held if held is not None and held["energy_wh"] >= MINTED_WH else None

    held = await platform.eventually(
        minted,
        f"{MINTED_WH} Wh minted to {producer} (settlement's balance view)",
        timeout=30,
        logs=("metering", "ledger-adapter", "settlement"),
        last=lambda: str(balance_seen),
    )
    assert held["energy_wh"] == MINTED_WH, held
    measured = expect(
        await clients.metering.get(
            "/v1/intervals",
            params={
                "metering_point": meter.metering_point,
                "from": first_end.isoformat(),
                "to": last_end.isoformat(),
            },
            headers=clients.ops,
        ),
        200,
    )
    assert [
        (i["interval_start"], i["surplus_wh"], i["mint"]["status"], i["mint"]["amount_wh"])
        for i in measured["intervals"]
    ] == [
        (
            (first_end + QUARTER * n).strftime("%Y-%m-%dT%H:%M:%SZ"),
            export - imported,
            "confirmed",
            export - imported,
        )
        for n, (imported, export) in enumerate(INTERVALS)
    ], measured
    phases.done("readings and mint")

    # 4. the consumer's top-up: requested for it by ops, approved, minted ------------------------
    topup = await clients.top_up(consumer, TOP_UP_ECOIN, f"bank-{tag}")
    assert topup["amount"] == TOP_UP_ECOIN, topup
    phases.done("top-up")

    # 5. one market: two bids rest, an ask of 5 kWh meets both -----------------------------------
    delivery = quarter_floor(datetime.now(UTC)) + 2 * QUARTER  # gate closure >= 25 min away
    market_id = market_id_of(delivery)
    market = await clients.ensure_open_market(market_id)
    assert market["mechanism"] == "continuous", market
    assert market["operator_fee_ecoin"] == OPERATOR_FEE_ECOIN, market
    assert Decimal(market["grid_fee_per_kwh"]) == GRID_FEE_PER_KWH, market

    async def covered() -> bool:
        seller, buyer = await asyncio.gather(clients.cover(producer), clients.cover(consumer))
        return seller["free_wh"] >= ASK[0] and buyer["free_ecoin"] >= TOP_UP_ECOIN

    await platform.eventually(
        covered,
        "the order book to see the minted energy and ecoin (ledger.balance_changed)",
        timeout=20,
        logs=("orderbook", "ledger-adapter"),
    )
    bids = []
    for i, (quantity, price) in enumerate(BIDS):
        bids.append(
            await clients.place_order(
                gateway_threshold,
                {
                    "market_id": market_id,
                    "side": "buy",
                    "quantity_wh": quantity,
                    "price_per_kwh": price,
                    "client_order_id": f"bid-{i}-{tag}",
                },
            )
        )
    for bid in bids:
        await clients.order_in(bid["order_id"], "open")
    depth = expect(
        await clients.orderbook.get(f"/markets/{market_id}/depth", headers=clients.ops), 200
    )
    assert [(Decimal(lv["price_per_kwh"]), lv["quantity_wh"]) for lv in depth["bids"]] == [
        (Decimal(p), q) for q, p in BIDS
    ], depth
    ask = await clients.place_order(
        meter_threshold,
        {
            "market_id": market_id,
            "side": "sell",
            "quantity_wh": ASK[0],
            "price_per_kwh": ASK[1],
            "client_order_id": f"ask-{tag}",
        },
    )
    filled_ask = await clients.order_in(ask["order_id"], "filled")
    assert (filled_ask["filled_wh"], filled_ask["remaining_wh"]) == (ASK[0], 0), filled_ask
    for bid in bids:
        await clients.order_in(bid["order_id"], "filled")

    trades = expect(
        await clients.orderbook.get(
            "/trades", params={"market_id": market_id, "seller": producer}, headers=clients.ops
        ),
        200,
    )
    assert len(trades) == 2, trades
    by_quantity = {t["quantity_wh"]: t for t in trades}
    assert sorted(by_quantity) == sorted(q for q, _p in BIDS), trades
    for quantity, price in BIDS:
        trade = by_quantity[quantity]
        # Each fill at the resting bid's price; the buyer pays the grid fee per kWh and the
        # operator fee once per bid (its first fill, which this is).
        assert (trade["seller"], trade["buyer"]) == (producer, consumer), trade
        assert Decimal(trade["price_per_kwh"]) == Decimal(price), trade
        assert trade["value_ecoin"] == ecoin(quantity, Decimal(price)), trade
        assert trade["fee_ecoin"] == OPERATOR_FEE_ECOIN + ecoin(quantity, GRID_FEE_PER_KWH), trade
        assert trade["sell_order_id"] == ask["order_id"], trade
    assert {t["buy_order_id"] for t in trades} == {b["order_id"] for b in bids}, trades
    trade_ids = {t["trade_id"] for t in trades}
    # The public tape shows the two trades without naming anyone (Song 2019).
    tape = expect(
        await clients.orderbook.get("/public/trades", params={"market_id": market_id}), 200
    )
    assert sorted(t["quantity_wh"] for t in tape) == sorted(q for q, _p in BIDS), tape
    assert not any(producer in json.dumps(t) or consumer in json.dumps(t) for t in tape), tape
    value = sum(t["value_ecoin"] for t in trades)
    fees = sum(t["fee_ecoin"] for t in trades)
    phases.done("orders and matching")

    # 6. both trades settle on chain ---------------------------------------------------------------
    seen: list[Any] = []

    async def settled() -> list[dict[str, Any]] | None:
        rows = expect(
            await clients.settlement.get(
                "/instructions", params={"seller": producer}, headers=clients.ops
            ),
            200,
        )
        seen[:] = rows
        failed = [r for r in rows if r["status"] == "failed"]
        if failed:
            raise PlatformError(f"a trade failed to settle: {failed}")
        done = [r for r in rows if r["status"] == "settled" and r["trade_id"] in trade_ids]
        return done if len(done) == len(trade_ids) else None

    instructions = await platform.eventually(
        settled,
        "both trades settled (settlement GET /instructions)",
        timeout=30,
        logs=("settlement", "ledger-adapter", "orderbook"),
        last=lambda: str(seen),
    )
    for row in instructions:
        assert row["tx_id"] and row["block"] is not None, row
        trade = next(t for t in trades if t["trade_id"] == row["trade_id"])
        assert (row["quantity_wh"], row["value_ecoin"], row["fee_ecoin"]) == (
            trade["quantity_wh"],
            trade["value_ecoin"],
            trade["fee_ecoin"],
        ), (row, trade)
    phases.done("settlement")

    # The chain: what moved, and nothing made or lost ----------------------------------------------
    chain = await asyncio.to_thread(platform.chain)
    on_chain = await asyncio.to_thread(chain.balances_many, [producer, consumer, operator])
    expected = {
        producer: (MINTED_WH - ASK[0], value),
        consumer: (ASK[0], TOP_UP_ECOIN - value - fees),
        operator: (0, fees),
    }
    assert {p: (b.energy_wh, b.ecoin) for p, b in on_chain.items()} == expected, on_chain
    total = await asyncio.to_thread(chain.total_supply)
    assert (total.energy_wh, total.ecoin) == (MINTED_WH, TOP_UP_ECOIN), total
    for trade_id in trade_ids:
        assert await asyncio.to_thread(chain.is_settled, trade_id), trade_id

    # The APIs: settlement's balances and the order book's cover, once the balance events of the
    # settlement's block reached them; nothing stays reserved ------------------------------------
    async def settlement_agrees() -> bool:
        for participant, (energy, money) in expected.items():
            held = await clients.settlement_balance(participant)
            if held is None or (held["energy_wh"], held["ecoin"]) != (energy, money):
                return False
        return True

    await platform.eventually(
        settlement_agrees,
        f"settlement's balances to be the chain's {expected}",
        timeout=20,
        logs=("settlement", "ledger-adapter"),
    )
    # Settlement's own reconciliation (through the ledger adapter) finds no difference either.
    run = expect(await clients.settlement.post("/reconciliations", headers=clients.ops), 202)
    reconciliation: dict[str, Any] = {}

    async def reconciled() -> dict[str, Any] | None:
        body = expect(
            await clients.settlement.get(f"/reconciliations/{run['run_id']}", headers=clients.ops),
            200,
        )
        reconciliation.update(body)
        return body if body["status"] != "running" else None

    await platform.eventually(
        reconciled,
        f"reconciliation {run['run_id']} to complete",
        timeout=20,
        logs=("settlement", "ledger-adapter"),
        last=lambda: str(reconciliation),
    )
    assert reconciliation["status"] == "clean", reconciliation
    assert reconciliation["differences"] == [], reconciliation
    assert reconciliation["checked"] >= len(expected), reconciliation
    covers: dict[str, dict[str, Any]] = {}

    async def orderbook_agrees() -> bool:
        for participant, (energy, money) in expected.items():
            cover = await clients.cover(participant)
            covers[participant] = cover
            if (cover["energy_wh"], cover["ecoin"]) != (energy, money):
                return False
            if (cover["reserved_wh"], cover["reserved_ecoin"]) != (0, 0):
                return False
            if (cover["free_wh"], cover["free_ecoin"]) != (energy, money):
                return False
        return True

    await platform.eventually(
        orderbook_agrees,
        f"the order book's cover to be the chain's {expected} with nothing reserved",
        timeout=20,
        logs=("orderbook", "ledger-adapter"),
        last=lambda: str(covers),
    )

    async def orderbook_trades_settled() -> list[dict[str, Any]] | None:
        rows = expect(
            await clients.orderbook.get(
                "/trades", params={"market_id": market_id, "status": "settled"}, headers=clients.ops
            ),
            200,
        )
        return rows if {r["trade_id"] for r in rows} == trade_ids else None

    settled_trades = await platform.eventually(
        orderbook_trades_settled,
        "the order book to record both trades settled",
        timeout=20,
        logs=("orderbook", "settlement"),
    )

    # The same run reconciled the order book's balances (those its cover checks use): clean too.
    async def orderbook_reconciled() -> dict[str, Any] | None:
        runs = expect(await clients.orderbook.get("/reconciliations", headers=clients.ops), 200)
        return next((r for r in runs if r["run_id"] == run["run_id"]), None)

    orderbook_run = await platform.eventually(
        orderbook_reconciled,
        f"the order book to reconcile run {run['run_id']}",
        timeout=20,
        logs=("orderbook", "ledger-adapter"),
    )
    assert orderbook_run["differences"] == [], orderbook_run
    assert orderbook_run["checked"] >= len(expected), orderbook_run
    settled_by_id = {r["trade_id"]: r for r in instructions}
    for trade in settled_trades:
        assert (trade["tx_id"], trade["block"]) == (
            settled_by_id[trade["trade_id"]]["tx_id"],
            settled_by_id[trade["trade_id"]]["block"],
        ), trade
    phases.done("chain and API balances")

    # The events: trades executed, trades settled, and the ledger's last word on each balance -----
    kafka = platform.kafka()
    async with (
        TopicReader(kafka, ORDERBOOK_EVENTS) as orderbook_events,
        TopicReader(kafka, SETTLEMENT_EVENTS) as settlement_events,
        TopicReader(kafka, LEDGER_EVENTS) as ledger_events,
    ):
        executed = await events(
            platform,
            orderbook_events,
            lambda e: (
                e["type"] == "orderbook.trade_executed" and e["data"]["trade_id"] in trade_ids
            ),
            len(trade_ids),
            "orderbook.trade_executed",
            ("orderbook",),
        )
        for event in executed:
            data = event["data"]
            trade = next(t for t in trades if t["trade_id"] == data["trade_id"])
            assert {k: data[k] for k in ("seller", "buyer", "quantity_wh", "market_id")} == {
                k: trade[k] for k in ("seller", "buyer", "quantity_wh", "market_id")
            }, (data, trade)
            assert (data["value_ecoin"], data["fee_ecoin"]) == (
                trade["value_ecoin"],
                trade["fee_ecoin"],
            ), (data, trade)
            assert Decimal(data["price_per_kwh"]) == Decimal(trade["price_per_kwh"]), data
        assert len({e["data"]["trade_id"] for e in executed}) == len(trade_ids), executed

        settled_events = await events(
            platform,
            settlement_events,
            lambda e: (
                e["type"] == "settlement.trade_settled" and e["data"]["trade_id"] in trade_ids
            ),
            len(trade_ids),
            "settlement.trade_settled",
            ("settlement",),
        )
        for event in settled_events:
            data = event["data"]
            row = settled_by_id[data["trade_id"]]
            assert (data["tx_id"], data["block"]) == (row["tx_id"], row["block"]), (data, row)
            assert (data["seller"], data["buyer"], data["quantity_wh"]) == (
                producer,
                consumer,
                row["quantity_wh"],
            ), data
            assert (data["value_ecoin"], data["fee_ecoin"]) == (
                row["value_ecoin"],
                row["fee_ecoin"],
            ), data
        assert len({e["data"]["trade_id"] for e in settled_events}) == len(trade_ids)
        assert not [
            e
            for e in decoded(settlement_events.records)
            if e["type"] == "settlement.trade_failed" and e["data"]["trade_id"] in trade_ids
        ]
        settle_block = max(r["block"] for r in instructions)

        def final_balance(event: dict[str, Any]) -> bool:
            data = event["data"]
            return (
                event["type"] == "ledger.balance_changed"
                and data["participant_id"] in expected
                and data["block"] >= settle_block
            )

        finals = await events(
            platform,
            ledger_events,
            final_balance,
            len(expected),
            "ledger.balance_changed from the settlement's block",
            ("ledger-adapter",),
        )
        last: dict[str, dict[str, Any]] = {}
        for event in decoded(ledger_events.records):
            data = event["data"]
            if event["type"] != "ledger.balance_changed" or data["participant_id"] not in expected:
                continue
            held = last.get(data["participant_id"])
            if held is None or data["block"] >= held["block"]:
                last[data["participant_id"]] = data
        assert {p: (d["energy_wh"], d["ecoin"]) for p, d in last.items()} == expected, last
        assert {e["data"]["participant_id"] for e in finals} == set(expected), finals
    phases.done("events")
