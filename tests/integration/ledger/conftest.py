"""Service processes in this folder get a broker of their own per test (see own_tansu)."""

from __future__ import annotations

import pytest

from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker
from tests.conftest import kafka_config


@pytest.fixture
def tansu(own_tansu: TansuBroker) -> TansuBroker:
    return own_tansu


@pytest.fixture
def kafka(own_tansu: TansuBroker) -> KafkaConfig:
    return kafka_config(own_tansu)
