"""Configuration, one pydantic-settings class per concern, each with its own env prefix.

Outside development the validators refuse what is only fit for a laptop: an SQLite store in
production, a broker on localhost, telemetry left nowhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_", extra="ignore")

    environment: Environment = "development"
    data_dir: Path = Path(".prosum")
    log_level: str = "INFO"


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_DB_", extra="ignore")

    url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means an SQLite file in the data dir"
    )
    pool_size: int = Field(default=10, ge=1, le=200)
    migrate_on_start: bool = True

    def resolved_url(self, runtime: RuntimeSettings, service: str) -> str:
        if self.url:
            return self.url
        if runtime.environment == "production":
            raise ValueError(
                "PROSUM_DB_URL must be set in production (the SQLite default is for "
                "development only)"
            )
        return f"sqlite:///{(runtime.data_dir / f'{service}.db').resolve()}"


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:19092"
    session_timeout_ms: int = Field(default=6000, ge=1000, le=300000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    partitions: int = Field(default=6, ge=1, le=1000)
    fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=5000,
        description="longest a fetch waits for data (tansu always waits it out: each hop costs it)",
    )
    create_topics: bool = True
    group_prefix: str = Field(
        default="", max_length=64, description="prefix of consumer group ids (shared clusters)"
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("PROSUM_KAFKA_BOOTSTRAP_SERVERS must name at least one broker")
        return value


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_HTTP_", extra="ignore")

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)


class TelemetrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_OTEL_", extra="ignore")

    endpoint: str | None = Field(
        default=None, description="OTLP/HTTP endpoint, e.g. http://otel-collector:4318"
    )


class ContractSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_CONTRACTS_", extra="ignore")

    extra_schema_dirs: list[Path] = Field(
        default_factory=list, description="directories of add-on event schemas"
    )


class ServiceSettings:
    """All settings one service process reads, checked together."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.runtime = RuntimeSettings()
        self.database = DatabaseSettings()
        self.kafka = KafkaSettings()
        self.http = HttpSettings()
        self.telemetry = TelemetrySettings()
        self.contracts = ContractSettings()
        self.database_url = self.database.resolved_url(self.runtime, service)
        if self.runtime.environment == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs PostgreSQL, not SQLite")
            hosts = self.kafka.bootstrap_servers.split(",")
            if all(h.split(":")[0] in {"127.0.0.1", "localhost"} for h in hosts):
                raise ValueError("production needs a Kafka cluster, not a broker on localhost")
