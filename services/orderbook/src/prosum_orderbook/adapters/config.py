"""The orderbook's own settings (``PROSUM_ORDERBOOK_*``), beside the platform's."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prosum_orderbook.application.entry import MarketDefaults
from prosum_orderbook.domain.markets import Fees, Mechanism, Schedule
from prosum_orderbook.domain.units import PriceError, parse_rate


class OrderbookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_ORDERBOOK_", extra="ignore")

    open_ahead_s: int = Field(
        default=86_400, ge=1, description="a market opens this many seconds before delivery"
    )
    gate_closure_s: int = Field(
        default=300,
        ge=0,
        description="gate closure this many seconds before delivery; open orders expire then",
    )
    mechanism: Mechanism = Field(
        default=Mechanism.CONTINUOUS,
        description="mechanism of new markets unless ops opened one otherwise: "
        "continuous or call_auction",
    )
    operator_fee_ecoin: int = Field(
        default=0, ge=0, description="operator fee in ecoin, once per buy order (first fill)"
    )
    grid_fee_per_kwh: Decimal = Field(
        default=Decimal(0), description="grid fee in ecoin per kWh traded, paid by the buyer"
    )
    scheduler_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="how often the market calendar runs"
    )

    @field_validator("grid_fee_per_kwh")
    @classmethod
    def _on_tick(cls, value: Decimal) -> Decimal:
        try:
            parse_rate(value)
        except PriceError as exc:
            raise ValueError(f"grid fee: {exc}") from None
        return value

    @model_validator(mode="after")
    def _window(self) -> OrderbookSettings:
        if self.open_ahead_s <= self.gate_closure_s:
            raise ValueError(
                "PROSUM_ORDERBOOK_OPEN_AHEAD_S must exceed PROSUM_ORDERBOOK_GATE_CLOSURE_S"
            )
        return self

    def schedule(self) -> Schedule:
        return Schedule(
            open_ahead=timedelta(seconds=self.open_ahead_s),
            gate_closure=timedelta(seconds=self.gate_closure_s),
        )

    def defaults(self) -> MarketDefaults:
        return MarketDefaults(
            mechanism=self.mechanism,
            fees=Fees(self.operator_fee_ecoin, parse_rate(self.grid_fee_per_kwh)),
        )
