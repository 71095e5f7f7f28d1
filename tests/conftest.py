"""Fixtures that start real services: a tansu broker, PostgreSQL, SQLite files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prosum_contracts import SchemaRegistry
from prosum_ledger.adapters.evm import AnvilNode
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker, start_tansu
from tests.support.stores import PostgresServer, postgres_server

TEST_SCHEMAS = Path(__file__).parent / "contracts" / "schemas"

_pg_note: list[str] = []


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    broker = start_tansu(log=log)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker for one test: services started as processes read their topics from the
    beginning, and must not find earlier tests' events there (tansu starts in milliseconds)."""
    broker = start_tansu(log=tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


def kafka_config(broker: TansuBroker) -> KafkaConfig:
    return KafkaConfig(
        bootstrap_servers=broker.bootstrap,
        client_id="prosum-tests",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """A fresh anvil chain for the test session."""
    from prosum_ledger.adapters.evm import start_anvil
    from prosum_ledger.adapters.evm.anvil import free_port
    from tests.support.evm import anvil_or_skip

    anvil_or_skip()
    node = start_anvil(tmp_path_factory.mktemp("anvil"), free_port())
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def kafka(tansu: TansuBroker) -> KafkaConfig:
    # Short session timeouts: tansu joins consumer groups slowly otherwise.
    return kafka_config(tansu)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | None]:
    with postgres_server() as server:
        if server is None:
            _pg_note.append(
                "PostgreSQL: none reachable (127.0.0.1:5432 closed, no Docker engine); "
                "store tests ran on SQLite only"
            )
        else:
            _pg_note.append(f"PostgreSQL: tests ran against {server.origin}")
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer | None) -> Iterator[str]:
    if pg_server is None:
        pytest.skip("no PostgreSQL server reachable (and no Docker engine for testcontainers)")
    with pg_server.database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / f'store-{uuid.uuid4().hex[:8]}.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(scope="session")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load([TEST_SCHEMAS])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in _pg_note:
        terminalreporter.write_line(note)
