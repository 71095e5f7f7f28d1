"""The orderbook as a process on the real broker, driven through HTTP like a participant's device,
ops and a partner system would drive it, with identity, the ledger and settlement stood in for
by their events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_auth import Limits, TokenSigner
from prosum_contracts import SchemaRegistry
from prosum_contracts.topics import ORDERBOOK_EVENTS, PUBLIC_TAPE
from prosum_platform.messaging import KafkaConfig
from tests.integration.orderbook.conftest import wait_until
from tests.integration.orderbook.harness import (
    Identity,
    Ledger,
    Orderbook,
    fail,
    market_id,
    quarter_after,
    settle,
)
from tests.support.kafka_io import TopicReader

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def onboard(
    identity: Identity, ledger: Ledger, orderbook: Orderbook, **funds: tuple[int, int]
) -> None:
    """Activate participants and give them chain balances; wait until the service knows."""
    for participant, (energy, ecoin) in funds.items():
        await identity.status(participant, "activated")
        await ledger.balance(participant, energy, ecoin)
    ops = identity.ops()
    for participant, (energy, ecoin) in funds.items():
        orderbook.until(
            f"/participants/{participant}/cover",
            ops,
            lambda c, e=energy, m=ecoin: (c["energy_wh"], c["ecoin"]) == (e, m),
        )


def detail(response: Any) -> tuple[int, str]:
    body = response.json()
    assert set(body["detail"]) >= {"reason", "message"}, body
    return response.status_code, body["detail"]["reason"]


def cover(orderbook: Orderbook, identity: Identity, participant: str) -> dict[str, Any]:
    response = orderbook.get(f"/participants/{participant}/cover", identity.ops())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_ask_of_5_kwh_meets_bids_of_2_and_3_kwh_in_two_trade_executed_events(
    orderbook: Orderbook,
    identity: Identity,
    ledger: Ledger,
    kafka: KafkaConfig,
    tag: str,
    market: str,
) -> None:
    seller, buyer_a, buyer_b = f"seller-{tag}", f"buyer-a-{tag}", f"buyer-b-{tag}"
    await onboard(
        identity,
        ledger,
        orderbook,
        **{seller: (5_000, 0), buyer_a: (0, 10_000), buyer_b: (0, 10_000)},
    )
    ask = orderbook.place(
        identity.threshold(seller),
        market_id=market,
        side="sell",
        quantity_wh=5_000,
        price_per_kwh="240",
    )
    assert ask.status_code == 202, ask.text
    assert ask.json()["order"]["status"] == "pending"
    bids = [
        orderbook.place(
            identity.threshold(buyer_a),
            market_id=market,
            side="buy",
            quantity_wh=2_000,
            price_per_kwh="250",
        ),
        orderbook.place(
            identity.threshold(buyer_b),
            market_id=market,
            side="buy",
            quantity_wh=3_000,
            price_per_kwh="240",
            client_order_id=f"c-{tag}",
        ),
    ]
    assert [b.status_code for b in bids] == [202, 202], [b.text for b in bids]

    registry = SchemaRegistry.load()
    async with TopicReader(kafka, ORDERBOOK_EVENTS) as events:
        found = await events.wait_for(
            lambda r: b"orderbook.trade_executed" in r.value and market.encode() in r.value, count=2
        )
        await events.wait_for(lambda r: False, timeout=1.0)  # nothing more comes
        trades = [
            r
            for r in events.records
            if b"orderbook.trade_executed" in r.value and market.encode() in r.value
        ]
    assert len(trades) == 2 == len(found)
    data = [registry.decode(r.value).data for r in trades]  # valid against the contract
    assert all(r.key == market.encode() for r in trades), (
        "keyed by market: one market, one partition"
    )
    assert [(d["seller"], d["buyer"], d["quantity_wh"], d["price_per_kwh"]) for d in data] == [
        (seller, buyer_a, 2_000, "240"),
        (seller, buyer_b, 3_000, "240"),
    ]
    # value: 2 kWh x 240; fee: grid 2 kWh x 0.01 = 0.02 -> 0, operator 2
    assert [(d["value_ecoin"], d["fee_ecoin"], d["mechanism"]) for d in data] == [
        (480, 2, "continuous"),
        (720, 2, "continuous"),
    ]
    async with TopicReader(kafka, PUBLIC_TAPE) as tape:
        prints = await tape.wait_for(lambda r: market.encode() in r.value, count=2)
    printed = [json.loads(r.value)["data"] for r in prints]
    assert [(p["quantity_wh"], p["price_per_kwh"]) for p in printed] == [
        (2_000, "240"),
        (3_000, "240"),
    ]
    assert not any(tag in json.dumps(p) for p in printed), "the public tape names nobody"

    ops = identity.ops()
    for order in (ask, *bids):
        order_id = order.json()["order"]["order_id"]
        assert orderbook.get(f"/orders/{order_id}", ops).json()["status"] == "filled"
    assert orderbook.get(f"/markets/{market}/depth", ops).json() == {
        "market_id": market,
        "bids": [],
        "asks": [],
    }
    listed = orderbook.get("/trades", ops, seller=seller, status="executed").json()
    assert [t["quantity_wh"] for t in listed] == [3_000, 2_000]
    assert (
        orderbook.get("/trades", ops, buyer=buyer_a).json()[0]["buy_order_id"]
        == bids[0].json()["order"]["order_id"]
    )
    own = orderbook.get(f"/participants/{seller}/trades", identity.participant_token(seller))
    assert sorted(t["quantity_wh"] for t in own.json()) == [2_000, 3_000]
    assert {t["seller"] for t in own.json()} == {seller}
    not_own = orderbook.get(f"/participants/{seller}/trades", identity.participant_token(buyer_a))
    assert detail(not_own) == (403, "not_your_data")
    public = orderbook.api.get("/public/trades", params={"market_id": market}).json()
    assert [(t["sequence"], t["quantity_wh"]) for t in public] == [(2, 3_000), (1, 2_000)]
    assert cover(orderbook, identity, seller)["reserved_wh"] == 5_000, "until settled"
    assert cover(orderbook, identity, buyer_a)["reserved_ecoin"] == 482


async def test_orders_are_refused_with_their_reason_and_nothing_is_applied(
    orderbook: Orderbook, identity: Identity, ledger: Ledger, tag: str, market: str
) -> None:
    seller, buyer, suspended = f"s-{tag}", f"b-{tag}", f"x-{tag}"
    await onboard(
        identity,
        ledger,
        orderbook,
        **{seller: (2_000, 0), buyer: (0, 1_000), suspended: (9_000, 9_000)},
    )
    ask = {"market_id": market, "side": "sell", "quantity_wh": 1_000, "price_per_kwh": "240"}
    bid = {**ask, "side": "buy"}
    th = identity.threshold(seller)
    assert orderbook.place(th, **ask, client_order_id=f"c-{tag}").status_code == 202

    def refusal(threshold: str | None, **order: Any) -> tuple[int, str]:
        headers = {"X-Prosum-Threshold": threshold} if threshold else {}
        return detail(orderbook.api.post("/orders", json=order, headers=headers))

    far = market_id(quarter_after(datetime.now(UTC), timedelta(days=3)))
    past = market_id(quarter_after(datetime.now(UTC), timedelta(hours=-2)))
    expired = identity.signer.threshold(
        "th-old", seller, "d", "m", ["ask"], Limits(10**6, 10**6, 10**6), -60
    )
    stranger = TokenSigner("k-unknown", Ed25519PrivateKey.generate()).threshold(
        "th-x", seller, "d", "m", ["ask"], Limits(10**6, 10**6, 10**6), 600
    )
    small = identity.threshold(seller, max_order_wh=500)
    await identity.status(suspended, "suspended")
    # More than it has: refused for cover while active, for its status once suspended.
    huge = {**ask, "quantity_wh": 1_000_000}
    wait_until(
        lambda: refusal(identity.threshold(suspended), **huge) == (403, "participant_not_active")
    )

    assert refusal(th, **{**ask, "quantity_wh": 1_001}) == (409, "insufficient_energy")
    # 5 kWh at 240 = 1200 ecoin > 1000
    assert refusal(identity.threshold(buyer), **{**bid, "quantity_wh": 5_000}) == (
        409,
        "insufficient_ecoin",
    )
    assert refusal(None, **ask) == (401, "credential_missing")
    assert refusal("not-a-token", **ask) == (401, "credential_malformed")
    assert refusal(expired, **ask) == (401, "credential_expired")
    assert refusal(stranger, **ask) == (401, "unknown_signing_key")
    assert refusal(identity.threshold(seller, actions=("bid",)), **ask) == (
        403,
        "action_not_allowed",
    )
    assert refusal(small, **ask) == (403, "limit_exceeded")
    assert refusal(identity.threshold(suspended), **ask) == (403, "participant_not_active")
    assert refusal(th, **{**ask, "market_id": far}) == (409, "market_not_open")
    assert refusal(th, **{**ask, "market_id": past}) == (409, "market_closed")
    assert refusal(th, **{**ask, "market_id": "2026-11-21T14:10Z"}) == (404, "unknown_market")
    assert refusal(th, **{**ask, "market_id": "tomorrow"}) == (422, "invalid_request")
    assert refusal(th, **{**ask, "price_per_kwh": 0.25}) == (422, "invalid_request")
    assert refusal(th, **{**ask, "price_per_kwh": "0.2501"}) == (422, "invalid_price")
    assert refusal(th, **{**ask, "quantity_wh": 0}) == (422, "invalid_request")
    assert refusal(th, **ask, colour="green") == (422, "invalid_request")
    assert refusal(th, **ask, client_order_id=f"c-{tag}") == (409, "duplicate_client_order_id")

    ops = identity.ops()
    mine = orderbook.get(f"/participants/{seller}/orders", ops).json()
    assert len(mine) == 1, "only the accepted order exists"
    assert cover(orderbook, identity, seller)["reserved_wh"] == 1_000
    assert cover(orderbook, identity, buyer)["reserved_ecoin"] == 0
    assert orderbook.get(f"/participants/{suspended}/orders", ops).json() == []


async def test_a_threshold_is_exhausted_by_the_open_volume_placed_under_it(
    orderbook: Orderbook, identity: Identity, ledger: Ledger, tag: str, market: str
) -> None:
    seller = f"s-{tag}"
    await onboard(identity, ledger, orderbook, **{seller: (50_000, 0)})
    threshold = identity.threshold(seller, max_open_wh=5_000)
    order = {"market_id": market, "side": "sell", "price_per_kwh": "240"}
    assert orderbook.place(threshold, **order, quantity_wh=3_000).status_code == 202
    refused = orderbook.place(threshold, **order, quantity_wh=2_001)
    assert detail(refused) == (403, "threshold_exhausted")
    assert orderbook.place(threshold, **order, quantity_wh=2_000).status_code == 202
    assert (
        orderbook.place(identity.threshold(seller), **order, quantity_wh=2_000).status_code == 202
    )
    assert cover(orderbook, identity, seller)["reserved_wh"] == 7_000


async def test_settlement_outcomes_release_the_reservations(
    orderbook: Orderbook,
    identity: Identity,
    ledger: Ledger,
    kafka: KafkaConfig,
    tag: str,
    market: str,
) -> None:
    seller, buyer = f"s-{tag}", f"b-{tag}"
    await onboard(identity, ledger, orderbook, **{seller: (4_000, 0), buyer: (0, 10_000)})
    ops = identity.ops()
    for _ in range(2):
        orderbook.place(
            identity.threshold(seller),
            market_id=market,
            side="sell",
            quantity_wh=2_000,
            price_per_kwh="240",
        )
        orderbook.place(
            identity.threshold(buyer),
            market_id=market,
            side="buy",
            quantity_wh=2_000,
            price_per_kwh="240",
        )
    trades = orderbook.until("/trades", ops, lambda t: len(t) == 2, seller=seller)
    first, second = sorted(trades, key=lambda t: t["trade_id"])
    assert cover(orderbook, identity, seller)["reserved_wh"] == 4_000
    assert cover(orderbook, identity, buyer)["reserved_ecoin"] == 2 * (480 + 2)

    await fail(kafka, first)
    orderbook.until(f"/participants/{buyer}/cover", ops, lambda c: c["reserved_ecoin"] == 482)
    assert cover(orderbook, identity, seller)["reserved_wh"] == 2_000
    assert (
        orderbook.until("/trades", ops, lambda t: len(t) == 1, status="failed", seller=seller)[0][
            "trade_id"
        ]
        == first["trade_id"]
    )

    block = ledger.block + 1
    await settle(kafka, second, block)
    orderbook.until("/trades", ops, lambda t: len(t) == 1, status="settled", seller=seller)
    assert cover(orderbook, identity, seller)["reserved_wh"] == 2_000, (
        "not before the balance shows it"
    )
    await ledger.balance(seller, 2_000, 480, block=block)
    await ledger.balance(buyer, 2_000, 10_000 - 482, block=block)
    orderbook.until(f"/participants/{seller}/cover", ops, lambda c: c["reserved_wh"] == 0)
    final = orderbook.until(f"/participants/{buyer}/cover", ops, lambda c: c["reserved_ecoin"] == 0)
    assert (final["ecoin"], final["free_ecoin"]) == (9_518, 9_518)


async def test_cancel_reduce_and_the_book_as_its_participants_see_it(
    orderbook: Orderbook, identity: Identity, ledger: Ledger, tag: str, market: str
) -> None:
    seller, other = f"s-{tag}", f"o-{tag}"
    await onboard(identity, ledger, orderbook, **{seller: (10_000, 0), other: (0, 100_000)})
    threshold = identity.threshold(seller)
    placed = [
        orderbook.place(
            threshold, market_id=market, side="sell", quantity_wh=q, price_per_kwh=p
        ).json()["order"]
        for q, p in ((3_000, "250"), (2_000, "260"))
    ]
    bid = orderbook.place(
        identity.threshold(other),
        market_id=market,
        side="buy",
        quantity_wh=1_000,
        price_per_kwh="200",
    )
    assert bid.status_code == 202
    token = identity.participant_token(seller)
    orderbook.until(
        f"/markets/{market}/depth", token, lambda d: len(d["asks"]) == 2 and len(d["bids"]) == 1
    )
    first, second = (o["order_id"] for o in placed)
    reduced = orderbook.api.post(
        f"/orders/{first}/reduce",
        json={"reduce_by_wh": 1_000},
        headers={"X-Prosum-Threshold": threshold},
    )
    assert reduced.status_code == 202 and reduced.json()["request"] == "reduce"
    cancelled = orderbook.api.delete(f"/orders/{second}", headers={"X-Prosum-Threshold": threshold})
    assert cancelled.status_code == 202
    depth = orderbook.until(f"/markets/{market}/depth", token, lambda d: len(d["asks"]) == 1)
    assert depth["asks"] == [{"price_per_kwh": "250", "quantity_wh": 2_000, "orders": 1}]
    assert depth["bids"] == [{"price_per_kwh": "200", "quantity_wh": 1_000, "orders": 1}]
    assert cover(orderbook, identity, seller)["reserved_wh"] == 2_000
    again = orderbook.api.delete(f"/orders/{second}", headers={"X-Prosum-Threshold": threshold})
    assert detail(again) == (409, "order_not_open")
    too_much = orderbook.api.post(
        f"/orders/{first}/reduce",
        json={"reduce_by_wh": 2_000},
        headers={"X-Prosum-Threshold": threshold},
    )
    assert detail(too_much) == (422, "reduce_exceeds_remaining")
    not_theirs = orderbook.api.delete(
        f"/orders/{first}",
        headers={"X-Prosum-Threshold": identity.threshold(other, actions=("ask",))},
    )
    assert detail(not_theirs) == (403, "not_order_owner")

    mine = orderbook.get(f"/participants/{seller}/orders", token).json()
    assert {o["status"] for o in mine} == {"open", "cancelled"}
    assert detail(orderbook.get(f"/participants/{other}/orders", token)) == (403, "not_your_data")
    assert detail(orderbook.get("/trades", token)) == (403, "not_your_data")
    assert orderbook.get("/trades", token, seller=seller).status_code == 200
    assert detail(orderbook.api.get(f"/markets/{market}/depth")) == (401, "credential_missing")


async def test_a_batch_of_orders_is_accepted_or_refused_order_by_order(
    orderbook: Orderbook, identity: Identity, ledger: Ledger, tag: str, market: str
) -> None:
    rich, poor = f"r-{tag}", f"p-{tag}"
    await onboard(identity, ledger, orderbook, **{rich: (10_000, 0), poor: (100, 0)})
    order = {"market_id": market, "side": "sell", "quantity_wh": 1_000, "price_per_kwh": "240"}
    response = orderbook.api.post(
        "/orders/batch",
        json={
            "orders": [
                {**order, "threshold": identity.threshold(rich)},
                {**order, "threshold": identity.threshold(poor)},
                order,
            ]
        },
        headers={"X-Prosum-Threshold": identity.threshold(rich)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == [202, 409, 202]
    assert body["results"][1]["detail"]["reason"] == "insufficient_energy"
    assert cover(orderbook, identity, rich)["reserved_wh"] == 2_000
    malformed = orderbook.api.post("/orders/batch", json={"orders": [{**order, "quantity_wh": -1}]})
    assert detail(malformed) == (422, "invalid_request")


async def test_a_suspended_participants_resting_orders_are_cancelled(
    orderbook: Orderbook, identity: Identity, ledger: Ledger, tag: str, market: str
) -> None:
    seller = f"s-{tag}"
    await onboard(identity, ledger, orderbook, **{seller: (5_000, 0)})
    order = orderbook.place(
        identity.threshold(seller),
        market_id=market,
        side="sell",
        quantity_wh=3_000,
        price_per_kwh="300",
    )
    order_id = order.json()["order"]["order_id"]
    ops = identity.ops()
    orderbook.until(f"/orders/{order_id}", ops, lambda o: o["status"] == "open")
    await identity.status(seller, "suspended")
    cancelled = orderbook.until(f"/orders/{order_id}", ops, lambda o: o["status"] == "cancelled")
    assert cancelled["reason"] == "participant_suspended"
    assert cover(orderbook, identity, seller)["reserved_wh"] == 0


async def test_ops_see_the_order_books_balances_reconciled_with_the_chain(
    orderbook: Orderbook, identity: Identity, ledger: Ledger, kafka: KafkaConfig, tag: str
) -> None:
    from prosum_contracts.topics import LEDGER_EVENTS
    from tests.integration.orderbook.harness import event
    from tests.support.kafka_io import publish

    agrees, differs = f"a-{tag}", f"d-{tag}"
    await onboard(identity, ledger, orderbook, **{agrees: (1_000, 5), differs: (0, 700)})
    run = f"run-{tag}"
    await publish(
        kafka,
        LEDGER_EVENTS,
        [
            event(
                "ledger.balances_reported",
                "ledger-adapter",
                f"reconcile-{run}",
                command_id=f"reconcile-{run}",
                block=ledger.block,
                balances=[
                    {"participant_id": agrees, "energy_wh": 1_000, "ecoin": 5},
                    {"participant_id": differs, "energy_wh": 0, "ecoin": 650},
                ],
                total_supply={"energy_wh": 1_000, "ecoin": 655},
            )
        ],
    )
    ops = identity.ops()
    runs = orderbook.until(
        "/reconciliations", ops, lambda found: any(r["run_id"] == run for r in found)
    )
    [mine] = [r for r in runs if r["run_id"] == run]
    assert (mine["block"], mine["checked"], mine["skipped"]) == (ledger.block, 2, 0)
    assert mine["differences"] == [
        {
            "participant_id": differs,
            "projected_energy_wh": 0,
            "projected_ecoin": 700,
            "chain_energy_wh": 0,
            "chain_ecoin": 650,
        }
    ]
    assert detail(orderbook.get("/reconciliations", identity.participant_token(agrees))) == (
        403,
        "insufficient_scope",
    )


def test_the_api_is_documented(orderbook: Orderbook) -> None:
    spec = orderbook.api.get("/openapi.json").json()
    assert {
        "/orders",
        "/orders/batch",
        "/orders/{order_id}",
        "/orders/{order_id}/reduce",
        "/participants/{participant_id}/orders",
        "/participants/{participant_id}/trades",
        "/participants/{participant_id}/cover",
        "/trades",
        "/public/trades",
        "/markets",
        "/markets/{market_id}",
        "/markets/{market_id}/depth",
    } <= set(spec["paths"])
    place = spec["paths"]["/orders"]["post"]
    assert {"202", "401", "403", "409", "422"} <= set(place["responses"])


def test_ops_chooses_a_markets_mechanism_before_it_opens(
    orderbook: Orderbook, identity: Identity, tag: str
) -> None:
    ahead = market_id(quarter_after(datetime.now(UTC), timedelta(days=2)))
    ops = {"Authorization": f"Bearer {identity.ops()}"}
    chosen = orderbook.api.post(
        "/markets", json={"market_id": ahead, "mechanism": "call_auction"}, headers=ops
    )
    assert chosen.status_code == 201, chosen.text
    assert (chosen.json()["status"], chosen.json()["mechanism"]) == ("scheduled", "call_auction")
    participant = {"Authorization": f"Bearer {identity.participant_token(f'p-{tag}')}"}
    forbidden = orderbook.api.post(
        "/markets", json={"market_id": ahead, "mechanism": "continuous"}, headers=participant
    )
    assert detail(forbidden) == (403, "insufficient_scope")
    open_now = orderbook.api.get("/markets", params={"status": "open"}, headers=ops).json()
    assert open_now and all(m["status"] == "open" for m in open_now)
    already = orderbook.api.post(
        "/markets",
        json={"market_id": open_now[0]["market_id"], "mechanism": "call_auction"},
        headers=ops,
    )
    assert detail(already) == (409, "market_already_open")


async def test_a_command_delivered_twice_is_applied_once(
    orderbook: Orderbook,
    identity: Identity,
    ledger: Ledger,
    kafka: KafkaConfig,
    tag: str,
    market: str,
) -> None:
    seller, buyer = f"s-{tag}", f"b-{tag}"
    await onboard(identity, ledger, orderbook, **{seller: (5_000, 0), buyer: (0, 50_000)})
    ask = orderbook.place(
        identity.threshold(seller),
        market_id=market,
        side="sell",
        quantity_wh=2_000,
        price_per_kwh="240",
    )
    ask_id = ask.json()["order"]["order_id"]
    ops = identity.ops()
    orderbook.until(f"/orders/{ask_id}", ops, lambda o: o["status"] == "open")
    async with TopicReader(kafka, "prosum.orderbook.commands") as commands:
        [original] = await commands.wait_for(lambda r: ask_id.encode() in r.value)
    await publish_raw(kafka, "prosum.orderbook.commands", [original, original])
    bid = orderbook.place(
        identity.threshold(buyer),
        market_id=market,
        side="buy",
        quantity_wh=3_000,
        price_per_kwh="240",
    )
    bid_id = bid.json()["order"]["order_id"]
    orderbook.until(f"/orders/{bid_id}", ops, lambda o: o["status"] == "partially_filled")
    trades = orderbook.get("/trades", ops, seller=seller).json()
    assert [t["quantity_wh"] for t in trades] == [2_000], "the repeated order did not trade again"
    assert orderbook.get(f"/markets/{market}/depth", ops).json()["bids"] == [
        {"price_per_kwh": "240", "quantity_wh": 1_000, "orders": 1}
    ]
    assert cover(orderbook, identity, seller)["reserved_wh"] == 2_000


async def publish_raw(kafka: KafkaConfig, topic: str, records: list[Any]) -> None:
    producer = kafka.producer()
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                topic, record.value, key=record.key, headers=list(record.headers)
            )
    finally:
        await producer.stop()
