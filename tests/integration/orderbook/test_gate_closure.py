"""Gate closure: open orders expire and their reservations are released, also when the service
was down when gate closure passed (it catches up when it comes back)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prosum_contracts.topics import ORDERBOOK_EVENTS
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker
from tests.integration.orderbook.harness import (
    Identity,
    Ledger,
    Orderbook,
    market_id,
    quarter_after,
)
from tests.support.kafka_io import TopicReader

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

GATE_IN_S = 14


async def test_orders_open_at_gate_closure_expire_even_if_the_service_was_down_then(
    tansu: TansuBroker,
    kafka: KafkaConfig,
    tmp_path: Path,
    identity: Identity,
    ledger: Ledger,
    tag: str,
) -> None:
    now = datetime.now(UTC)
    start = quarter_after(now, timedelta(minutes=2))
    gate = now + timedelta(seconds=GATE_IN_S)
    lead_s = int((start - gate).total_seconds())
    closing, later = market_id(start), market_id(start + timedelta(minutes=15))
    service = Orderbook(
        tmp_path,
        tansu.bootstrap,
        f"sqlite:///{tmp_path / 'orderbook.db'}",
        PROSUM_ORDERBOOK_GATE_CLOSURE_S=str(lead_s),
        PROSUM_ORDERBOOK_SCHEDULER_INTERVAL_S="0.5",
    )
    seller, buyer = f"s-{tag}", f"b-{tag}"
    try:
        service.start("before").ready()
        await identity.publish_keys()
        for participant, (energy, ecoin) in {seller: (9_000, 0), buyer: (0, 90_000)}.items():
            await identity.status(participant, "activated")
            await ledger.balance(participant, energy, ecoin)
        ops = identity.ops()
        service.until(f"/participants/{buyer}/cover", ops, lambda c: c["ecoin"] == 90_000)
        ask = service.place(
            identity.threshold(seller),
            market_id=closing,
            side="sell",
            quantity_wh=3_000,
            price_per_kwh="250",
        )
        bid = service.place(
            identity.threshold(buyer),
            market_id=closing,
            side="buy",
            quantity_wh=2_000,
            price_per_kwh="200",
        )
        kept = service.place(
            identity.threshold(seller),
            market_id=later,
            side="sell",
            quantity_wh=1_000,
            price_per_kwh="250",
        )
        ids = [r.json()["order"]["order_id"] for r in (ask, bid, kept)]
        for order_id in ids:
            service.until(f"/orders/{order_id}", ops, lambda o: o["status"] == "open")
        assert service.get(f"/participants/{seller}/cover", ops).json()["reserved_wh"] == 4_000
    finally:
        service.stop()

    wait = (gate - datetime.now(UTC)).total_seconds() + 1
    assert wait > 0, "the service was stopped before gate closure"
    time.sleep(wait)

    try:
        service.start("after").ready()
        expired = service.until(
            f"/orders/{ids[0]}", ops, lambda o: o["status"] == "expired", timeout=60
        )
        assert expired["expired_wh"] == 3_000
        assert service.get(f"/orders/{ids[1]}", ops).json()["status"] == "expired"
        assert service.get(f"/orders/{ids[2]}", ops).json()["status"] == "open", "not its gate yet"
        assert service.get(f"/participants/{seller}/cover", ops).json()["reserved_wh"] == 1_000
        assert service.get(f"/participants/{buyer}/cover", ops).json()["reserved_ecoin"] == 0
        assert service.get(f"/markets/{closing}", ops).json()["status"] == "closed"
        late = service.place(
            identity.threshold(seller),
            market_id=closing,
            side="sell",
            quantity_wh=1,
            price_per_kwh="250",
        )
        assert (late.status_code, late.json()["detail"]["reason"]) == (409, "market_closed")
        async with TopicReader(kafka, ORDERBOOK_EVENTS) as events:
            found = await events.wait_for(
                lambda r: (
                    closing.encode() in r.value
                    and json.loads(r.value)["type"]
                    in ("orderbook.order_expired", "orderbook.market_closed")
                ),
                count=3,
            )
        assert sorted(json.loads(r.value)["type"] for r in found) == [
            "orderbook.market_closed",
            "orderbook.order_expired",
            "orderbook.order_expired",
        ]
    finally:
        service.stop()
