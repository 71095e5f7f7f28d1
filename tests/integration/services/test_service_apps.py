"""Each of the five services, wired by its own bootstrap: health, readiness, OpenAPI."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from prosum_platform.runtime.tansu import TansuBroker, free_port
from prosum_platform.service import ServiceDefinition, build_platform, create_app
from prosum_platform.service.migrations import upgrade
from prosum_platform.settings import ServiceSettings

SERVICES = [
    "prosum_identity",
    "prosum_metering",
    "prosum_orderbook",
    "prosum_settlement",
    "prosum_ledger",
]


def _definition(package: str) -> ServiceDefinition:
    definition: ServiceDefinition = importlib.import_module(f"{package}.bootstrap").DEFINITION
    return definition


def _app(
    package: str, tmp_path: Path, bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> TestClient:
    definition = _definition(package)
    url = f"sqlite:///{tmp_path / f'{definition.name}.db'}"
    monkeypatch.setenv("PROSUM_DB_URL", url)
    monkeypatch.setenv("PROSUM_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    upgrade(definition.package, url)
    platform = build_platform(definition, ServiceSettings(definition.name))
    return TestClient(create_app(definition, platform))


@pytest.mark.kafka
@pytest.mark.parametrize("package", SERVICES)
def test_service_is_healthy_ready_and_documented(
    package: str, tansu: TansuBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _app(package, tmp_path, tansu.bootstrap, monkeypatch) as client:
        assert client.get("/health").json()["status"] == "ok"
        deadline = time.monotonic() + 30
        while (ready := client.get("/ready")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert checks["database"] == {"ok": True, "backend": "sqlite"}
        assert checks["kafka"] == {"ok": True}
        if package == "prosum_ledger":
            assert checks["chain"]["status"] == "not_configured"
        spec = client.get("/openapi.json").json()
        assert spec["info"]["title"] == _definition(package).title
        assert {"/health", "/ready"} <= set(spec["paths"])


def test_without_a_broker_the_service_is_alive_but_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with _app("prosum_orderbook", tmp_path, nobody, monkeypatch) as client:
        assert time.monotonic() - started < 10, "startup does not wait for the broker"
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["kafka"]["ok"] is False
        assert body["checks"]["database"]["ok"] is True
