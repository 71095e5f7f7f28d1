"""Metering's own settings (env prefix ``PROSUM_METERING_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MeteringSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_METERING_", extra="ignore")

    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="largest ingestion request body; larger ones are refused with 413",
    )
    max_readings_per_request: int = Field(
        default=10_000, ge=1, le=100_000, description="most readings in one request (413 beyond)"
    )
    clock_skew_s: int = Field(
        default=30,
        ge=0,
        le=900,
        description="how far a meter's clock may run ahead before its reading is 'in the future'",
    )
    seal_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="how often unsealed readings are sealed"
    )
    seal_max_leaves: int = Field(
        default=16384, ge=1, le=65536, description="most readings under one Merkle root"
    )
    verify_workers: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description=(
            "processes verifying signatures; unset: one per CPU but one; 0: in the request thread"
        ),
    )
