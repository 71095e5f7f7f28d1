"""An orderbook process per test module, and its neighbours' stand-ins on the session's broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker, start_tansu
from tests.conftest import kafka_config
from tests.integration.orderbook.harness import (
    Identity,
    Ledger,
    Orderbook,
    market_id,
    quarter_after,
)


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A broker per module: the order book processes here read their topics from the start
    and must not find other modules' events there."""
    broker = start_tansu(log=tmp_path_factory.mktemp("tansu") / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka(tansu: TansuBroker) -> KafkaConfig:
    return kafka_config(tansu)


@pytest.fixture(scope="module")
async def identity(kafka: KafkaConfig) -> Identity:
    stand_in = Identity(kafka)
    await stand_in.publish_keys()
    return stand_in


@pytest.fixture(scope="module")
def ledger(kafka: KafkaConfig) -> Ledger:
    return Ledger(kafka)


@pytest.fixture(scope="module")
async def orderbook(
    tansu: TansuBroker, tmp_path_factory: pytest.TempPathFactory, identity: Identity
) -> AsyncIterator[Orderbook]:
    folder = tmp_path_factory.mktemp("orderbook")
    service = Orderbook(
        folder,
        tansu.bootstrap,
        f"sqlite:///{folder / 'orderbook.db'}",
        PROSUM_ORDERBOOK_OPERATOR_FEE_ECOIN="2",
        PROSUM_ORDERBOOK_GRID_FEE_PER_KWH="0.01",
    ).start()
    try:
        service.ready()
        # the keys published before the service joined its consumer group are read from the
        # beginning of the topic; an access token verifies once they are applied
        service.until("/markets", identity.ops(), lambda body: True, timeout=60)
        yield service
    finally:
        service.stop()


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:6]


_markets = iter(range(4, 90))


@pytest.fixture
def market() -> str:
    """A market of its own for each test, open for the next hours."""
    return market_id(quarter_after(datetime.now(UTC), timedelta(minutes=15 * next(_markets))))


def wait_until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
