"""Configuration refuses laptop defaults outside development."""

from __future__ import annotations

from pathlib import Path

import pytest

from prosum_platform.settings import KafkaSettings, ServiceSettings


def test_development_defaults_to_an_sqlite_file_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROSUM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PROSUM_DB_URL", raising=False)
    settings = ServiceSettings("orderbook")
    assert settings.database_url == f"sqlite:///{tmp_path.resolve()}/orderbook.db"


def test_production_refuses_the_sqlite_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROSUM_ENVIRONMENT", "production")
    monkeypatch.delenv("PROSUM_DB_URL", raising=False)
    with pytest.raises(ValueError, match="PROSUM_DB_URL must be set"):
        ServiceSettings("orderbook")
    monkeypatch.setenv("PROSUM_DB_URL", "sqlite:///x.db")
    with pytest.raises(ValueError, match="PostgreSQL"):
        ServiceSettings("orderbook")


def test_production_refuses_a_broker_on_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROSUM_ENVIRONMENT", "production")
    monkeypatch.setenv("PROSUM_DB_URL", "postgresql+psycopg://db/orderbook")
    monkeypatch.setenv("PROSUM_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    with pytest.raises(ValueError, match="Kafka cluster"):
        ServiceSettings("orderbook")
    monkeypatch.setenv("PROSUM_KAFKA_BOOTSTRAP_SERVERS", "kafka-0.kafka:9092,kafka-1.kafka:9092")
    assert ServiceSettings("orderbook").kafka.bootstrap_servers.startswith("kafka-0")


def test_out_of_range_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROSUM_KAFKA_SESSION_TIMEOUT_MS", "10")
    with pytest.raises(ValueError, match="session_timeout_ms"):
        KafkaSettings()
