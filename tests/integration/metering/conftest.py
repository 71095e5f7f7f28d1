from __future__ import annotations

from collections.abc import Iterator

import pytest

from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker
from tests.conftest import kafka_config
from tests.integration.metering.harness import Clock, Metering
from tests.unit.metering.meters import Meter

DAY_START = 1_779_926_400  # 2026-05-28T00:00:00Z
NOW = DAY_START + 2 * 86_400


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def metering(store_url: str, clock: Clock) -> Iterator[Metering]:
    service = Metering(store_url, clock)
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def producer() -> Meter:
    return Meter("meter-p1", "MP-P1", "producer-1")


# Service processes here get a broker of their own per test (see own_tansu in tests/conftest.py).
@pytest.fixture
def tansu(own_tansu: TansuBroker) -> TansuBroker:
    return own_tansu


@pytest.fixture
def kafka(own_tansu: TansuBroker) -> KafkaConfig:
    return kafka_config(own_tansu)
