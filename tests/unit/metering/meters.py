"""Simulated smart meters and the identity events that register them, for metering's tests and
benchmark. A meter signs readings exactly as the OpenAPI description says a device must."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_auth import Limits, TokenSigner, jwk_of
from prosum_contracts import Envelope

INTERVAL = 900
DAY = 96


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def utc(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed_bytes(
    device_id: str, metering_point: str, end_s: int, import_wh: int, export_wh: int
) -> bytes:
    """The canonical bytes, written out here independently of the service's code."""
    return (
        f"prosum-reading-v1\n{device_id}\n{metering_point}\n{utc(end_s)}\n{import_wh}\n{export_wh}"
    ).encode()


@dataclass
class Meter:
    device_id: str
    metering_point: str
    participant_id: str
    rating_w: int = 20_000
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_key(self) -> str:
        return b64url(self.key.public_key().public_bytes_raw())

    def reading(
        self, end_s: int, import_wh: int, export_wh: int, **override: Any
    ) -> dict[str, Any]:
        signature = self.key.sign(
            signed_bytes(self.device_id, self.metering_point, end_s, import_wh, export_wh)
        )
        return {
            "device_id": self.device_id,
            "metering_point": self.metering_point,
            "interval_end": utc(end_s),
            "import_wh": import_wh,
            "export_wh": export_wh,
            "signature": b64url(signature),
            **override,
        }


def solar_day(
    day_start: int, *, base_import: int = 1_000, base_export: int = 500
) -> list[tuple[int, int, int]]:
    """A producer's day: 97 readings (the baseline at midnight and the end of each of 96
    intervals) as (end, import register, export register); exports peak at noon."""
    readings = [(day_start, base_import, base_export)]
    imp, exp = base_import, base_export
    for i in range(DAY):
        imp += 40 + (i % 7) * 5  # the household draws a little all day
        sun = max(0, 48 - abs(i - 48))  # 0 at night, up to 48 at noon
        exp += sun * 90  # at most 4,320 Wh per interval: below 20 kW x 0.25 h
        readings.append((day_start + (i + 1) * INTERVAL, imp, exp))
    return readings


def net_surplus(readings: list[tuple[int, int, int]]) -> dict[int, int]:
    """Expected net surplus per interval start (only the intervals with surplus)."""
    out: dict[int, int] = {}
    for (s, i0, e0), (_e, i1, e1) in itertools.pairwise(readings):
        surplus = max((e1 - e0) - (i1 - i0), 0)
        if surplus:
            out[s] = surplus
    return out


def day_readings(meter: Meter, day_start: int) -> Iterator[dict[str, Any]]:
    for end, imp, exp in solar_day(day_start):
        yield meter.reading(end, imp, exp)


# -- identity's events -----------------------------------------------------------------------


def identity(type_: str, subject: str, **data: Any) -> Envelope:
    return Envelope(
        type=f"identity.{type_}", schema_version=1, source="identity", subject=subject, data=data
    )


def registered(participant_id: str, metering_point: str, role: str = "producer") -> Envelope:
    return identity(
        "participant_registered",
        participant_id,
        participant_id=participant_id,
        name=f"Participant {participant_id}",
        role=role,
        metering_point=metering_point,
    )


def activated(participant_id: str) -> Envelope:
    return identity("participant_activated", participant_id, participant_id=participant_id)


def device(meter: Meter, kind: str = "smart_meter") -> Envelope:
    return identity(
        "device_registered",
        meter.participant_id,
        device_id=meter.device_id,
        participant_id=meter.participant_id,
        kind=kind,
        public_key=meter.public_key,
        metering_point=meter.metering_point,
        rating_w=meter.rating_w,
    )


def revoked_device(meter: Meter) -> Envelope:
    return identity(
        "device_revoked",
        meter.participant_id,
        device_id=meter.device_id,
        participant_id=meter.participant_id,
    )


def onboarding(meter: Meter, role: str = "producer") -> list[Envelope]:
    """What identity publishes for a participant with one meter, in order."""
    return [
        registered(meter.participant_id, meter.metering_point, role),
        activated(meter.participant_id),
        device(meter),
    ]


def trade(trade_id: str, seller: str, buyer: str, start: int, end: int) -> Envelope:
    return Envelope(
        type="orderbook.trade_executed",
        schema_version=1,
        source="orderbook",
        subject=trade_id,
        data={
            "trade_id": trade_id,
            "market_id": f"m-{start}",
            "delivery_start": utc(start),
            "delivery_end": utc(end),
            "seller": seller,
            "buyer": buyer,
            "sell_order_id": f"s-{trade_id}",
            "buy_order_id": f"b-{trade_id}",
            "quantity_wh": 1_000,
            "price_per_kwh": "0.25",
            "value_ecoin": 250,
            "fee_ecoin": 1,
            "executed_at": utc(start - 3600),
        },
    )


@dataclass
class Identity:
    """Identity's signing side: its key, the keys event, and the tokens it hands out."""

    kid: str = "identity-k1"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def signer(self) -> TokenSigner:
        return TokenSigner(self.kid, self.key)

    def keys_changed(self) -> Envelope:
        return identity(
            "signing_keys_changed",
            "identity-keys",
            keys=[jwk_of(self.kid, self.key.public_key())],
            active_kid=self.kid,
        )

    def threshold(
        self,
        meter: Meter,
        actions: tuple[str, ...] = ("submit_readings",),
        threshold_id: str | None = None,
    ) -> str:
        return self.signer.threshold(
            threshold_id or f"th-{meter.device_id}-{'-'.join(actions)}",
            meter.participant_id,
            meter.device_id,
            meter.metering_point,
            actions,
            Limits(10**9, 10**9, 10**9),
            3600,
        )

    def ops_token(self) -> str:
        return self.signer.access_token("ops-console", ["ops"], 3600)

    def participant_token(self, participant_id: str) -> str:
        return self.signer.access_token(
            f"app-{participant_id}", ["participant"], 3600, participant_id
        )
