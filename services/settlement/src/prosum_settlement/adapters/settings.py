"""Settlement's own settings (env prefix ``PROSUM_SETTLEMENT_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettlementSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_SETTLEMENT_", extra="ignore")

    batch_max_trades: int = Field(default=500, ge=1, le=1000)
    batch_window_ms: int = Field(default=200, ge=10, le=60_000)
    batches_in_flight: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1, le=50)
    batch_resend_s: float = Field(
        default=60.0,
        ge=1.0,
        le=86_400.0,
        description="a batch without an outcome from the ledger this long is sent again",
    )
    fee_account: str = Field(
        default="operator", description="participant id of the operator's fee account"
    )
    max_request_amount: int = Field(default=10**12, ge=1)
    reconcile_every_s: int = Field(
        default=300, ge=0, description="0 turns the periodic reconciliation off"
    )
