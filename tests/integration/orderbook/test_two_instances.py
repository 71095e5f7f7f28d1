"""Two orderbook instances share the markets: each owns the markets of the command topic's
partitions it was assigned, both take orders for any market over HTTP, and no market is matched
twice, also when one instance leaves and the other takes its markets over."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prosum_contracts.topics import ORDERBOOK_EVENTS
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker
from tests.integration.orderbook.conftest import wait_until
from tests.integration.orderbook.harness import (
    Identity,
    Ledger,
    Orderbook,
    market_id,
    quarter_after,
)
from tests.support.kafka_io import TopicReader
from tests.support.stores import PostgresServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MARKETS = 12


@pytest.fixture
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """PostgreSQL where one answers (as in production), else one SQLite file for both."""
    server: PostgresServer | None = request.getfixturevalue("pg_server")
    if server is None:
        yield f"sqlite:///{tmp_path / 'orderbook.db'}"
        return
    with server.database() as url:
        yield url


def books(instance: Orderbook) -> dict[str, Any]:
    state: dict[str, Any] = instance.ready()["checks"]["books"]
    return state


async def test_two_instances_share_the_markets_without_matching_one_twice(
    tansu: TansuBroker,
    kafka: KafkaConfig,
    tmp_path: Path,
    shared_db: str,
    identity: Identity,
    ledger: Ledger,
    tag: str,
) -> None:
    first = quarter_after(datetime.now(UTC), timedelta(hours=3))
    markets = [market_id(first + timedelta(minutes=15 * n)) for n in range(MARKETS)]
    a = Orderbook(tmp_path / "a", tansu.bootstrap, shared_db)
    b = Orderbook(tmp_path / "b", tansu.bootstrap, shared_db)
    try:
        a.start("a").ready()
        b.start("b", PROSUM_DB_MIGRATE_ON_START="false").ready()
        wait_until(
            lambda: (
                books(a)["assigned"]
                and books(b)["assigned"]
                and len(books(a)["partitions"]) + len(books(b)["partitions"]) == 6
            ),
            timeout=60,
        )
        owned_a, owned_b = set(books(a)["partitions"]), set(books(b)["partitions"])
        assert owned_a.isdisjoint(owned_b) and owned_a | owned_b == set(range(6))

        sellers = [f"s{n}-{tag}" for n in range(4)]
        buyers = [f"b{n}-{tag}" for n in range(4)]
        await identity.publish_keys()
        for participant in sellers + buyers:
            await identity.status(participant, "activated")
            await ledger.balance(participant, 100_000 if participant in sellers else 0, 10**7)
        ops = identity.ops()
        for instance in (a, b):
            instance.until(f"/participants/{buyers[-1]}/cover", ops, lambda c: c["ecoin"] == 10**7)
        thresholds = {p: identity.threshold(p) for p in sellers + buyers}

        def wave(via: list[Orderbook]) -> list[str]:
            """Per market two asks of 1 kWh and three bids of 700 Wh, through the instances in
            turn: 2000 Wh trade in every market whoever matches it."""
            ids = []
            n = 0
            for market in markets:
                orders = [(s, "sell", 1_000, "240") for s in sellers[:2]] + [
                    (byr, "buy", 700, "250") for byr in buyers[:3]
                ]
                for participant, side, quantity, price in orders:
                    response = via[n % len(via)].place(
                        thresholds[participant],
                        market_id=market,
                        side=side,
                        quantity_wh=quantity,
                        price_per_kwh=price,
                    )
                    n += 1
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["order"]["order_id"])
            return ids

        applied = {name: books(i)["applied"] for name, i in (("a", a), ("b", b))}
        wave([a, b])
        wait_until(
            lambda: (
                sum(len(a.get("/trades", ops, market_id=m).json()) > 0 for m in markets) == MARKETS
            )
        )
        wait_until(
            lambda: all(
                sum(t["quantity_wh"] for t in a.get("/trades", ops, market_id=m).json()) == 2_000
                for m in markets
            )
        )
        assert books(a)["applied"] > applied["a"] and books(b)["applied"] > applied["b"], (
            "both instances matched markets"
        )

        # b leaves: a takes its partitions over and matches its markets, from the books b wrote
        b.stop()
        wait_until(lambda: len(books(a)["partitions"]) == 6, timeout=60)
        wave([a])
        wait_until(
            lambda: all(
                sum(t["quantity_wh"] for t in a.get("/trades", ops, market_id=m).json()) == 4_000
                for m in markets
            ),
            timeout=60,
        )

        async with TopicReader(kafka, ORDERBOOK_EVENTS) as events:
            await events.wait_for(lambda r: False, timeout=2.0)
            executed = [
                json.loads(r.value)["data"]
                for r in events.records
                if b"orderbook.trade_executed" in r.value
                and json.loads(r.value)["data"]["market_id"] in markets
            ]
        by_trade = Counter(t["trade_id"] for t in executed)
        volume: dict[str, int] = defaultdict(int)
        for trade in {t["trade_id"]: t for t in executed}.values():
            volume[trade["market_id"]] += trade["quantity_wh"]
        assert volume == dict.fromkeys(markets, 4_000), "every market matched once"
        # a trade event may be published twice (at-least-once), never two trades for one match
        stored = [t for m in markets for t in a.get("/trades", ops, market_id=m).json()]
        assert len(stored) == len(by_trade) and set(by_trade) == {t["trade_id"] for t in stored}
        for participant in sellers[:2]:
            orders = a.get(f"/participants/{participant}/orders", ops, limit=1000).json()
            assert {o["status"] for o in orders} == {"filled"}
            assert all(o["filled_wh"] == o["quantity_wh"] == 1_000 for o in orders)
    finally:
        a.stop()
        b.stop()
