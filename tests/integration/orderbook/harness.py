"""Driving the orderbook as a process from tests: its neighbours' events on the real broker
(identity's keys and participants, the ledger's balances, settlement's outcomes), its HTTP API,
and its events read back from Kafka."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_auth import Limits, TokenSigner, jwk_of
from prosum_contracts import Envelope
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_EVENTS, SETTLEMENT_EVENTS
from prosum_platform.messaging import KafkaConfig
from tests.support.kafka_io import publish
from tests.support.service_process import ServiceProcess


def event(type_: str, source: str, subject: str, **data: Any) -> Envelope:
    return Envelope(type=type_, schema_version=1, source=source, subject=subject, data=data)


def market_id(start: datetime) -> str:
    return start.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def quarter_after(moment: datetime, at_least: timedelta) -> datetime:
    """The first 15-minute boundary at least ``at_least`` after ``moment``."""
    target = moment + at_least
    start = target.replace(minute=target.minute - target.minute % 15, second=0, microsecond=0)
    return start if start >= target else start + timedelta(minutes=15)


@dataclass
class Identity:
    """Stands in for the identity service: publishes its keys and participants' status, and
    signs the thresholds and access tokens it would hand out."""

    kafka: KafkaConfig
    kid: str = field(default_factory=lambda: f"k-{uuid.uuid4().hex[:8]}")
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def signer(self) -> TokenSigner:
        return TokenSigner(self.kid, self.key)

    async def publish_keys(self) -> None:
        await publish(
            self.kafka,
            IDENTITY_EVENTS,
            [
                event(
                    "identity.signing_keys_changed",
                    "identity",
                    "signing-keys",
                    keys=[jwk_of(self.kid, self.key.public_key())],
                    active_kid=self.kid,
                )
            ],
        )

    async def status(self, participant_id: str, status: str) -> None:
        await publish(
            self.kafka,
            IDENTITY_EVENTS,
            [
                event(
                    f"identity.participant_{status}",
                    "identity",
                    participant_id,
                    participant_id=participant_id,
                )
            ],
        )

    def threshold(
        self,
        participant_id: str,
        *,
        actions: tuple[str, ...] = ("bid", "ask"),
        max_order_wh: int = 1_000_000,
        max_open_wh: int = 10_000_000,
        max_ecoin: int = 100_000_000,
        ttl_s: int = 600,
        threshold_id: str | None = None,
    ) -> str:
        return self.signer.threshold(
            threshold_id or f"th-{uuid.uuid4().hex[:10]}",
            participant_id,
            f"dev-{participant_id}",
            f"mp-{participant_id}",
            actions,
            Limits(max_order_wh, max_open_wh, max_ecoin),
            ttl_s,
        )

    def ops(self) -> str:
        return self.signer.access_token("ops-console", ["ops"], 600)

    def participant_token(self, participant_id: str) -> str:
        return self.signer.access_token(
            f"app-{participant_id}", ["participant"], 600, participant_id
        )


class Ledger:
    """Stands in for the ledger adapter's balance events."""

    def __init__(self, kafka: KafkaConfig) -> None:
        self.kafka = kafka
        self.block = 100

    async def balance(
        self, participant_id: str, energy_wh: int, ecoin: int, block: int | None = None
    ) -> int:
        if block is None:
            self.block += 1
            block = self.block
        await publish(
            self.kafka,
            LEDGER_EVENTS,
            [
                event(
                    "ledger.balance_changed",
                    "ledger-adapter",
                    participant_id,
                    participant_id=participant_id,
                    energy_wh=energy_wh,
                    ecoin=ecoin,
                    block=block,
                    command_id=f"cmd-{uuid.uuid4().hex[:8]}",
                )
            ],
        )
        return block


async def settle(kafka: KafkaConfig, trade: dict[str, Any], block: int) -> None:
    await publish(
        kafka,
        SETTLEMENT_EVENTS,
        [
            event(
                "settlement.trade_settled",
                "settlement",
                trade["trade_id"],
                trade_id=trade["trade_id"],
                batch_id=f"batch-{uuid.uuid4().hex[:6]}",
                seller=trade["seller"],
                buyer=trade["buyer"],
                quantity_wh=trade["quantity_wh"],
                value_ecoin=trade["value_ecoin"],
                fee_ecoin=trade["fee_ecoin"],
                tx_id=f"0x{uuid.uuid4().hex}",
                block=block,
            )
        ],
    )


async def fail(
    kafka: KafkaConfig, trade: dict[str, Any], reason: str = "insufficient_ecoin"
) -> None:
    await publish(
        kafka,
        SETTLEMENT_EVENTS,
        [
            event(
                "settlement.trade_failed",
                "settlement",
                trade["trade_id"],
                trade_id=trade["trade_id"],
                batch_id=f"batch-{uuid.uuid4().hex[:6]}",
                seller=trade["seller"],
                buyer=trade["buyer"],
                quantity_wh=trade["quantity_wh"],
                value_ecoin=trade["value_ecoin"],
                fee_ecoin=trade["fee_ecoin"],
                reason=reason,
                chain_message="the buyer's ecoin balance is too low",
                failed_trade_id=trade["trade_id"],
            )
        ],
    )


class Orderbook:
    """One orderbook process and an HTTP client to it."""

    def __init__(self, folder: Path, bootstrap: str, db_url: str, **settings: str) -> None:
        self.folder = folder
        self.env = {
            "PROSUM_DATA_DIR": str(folder),
            "PROSUM_DB_URL": db_url,
            "PROSUM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PROSUM_LOG_LEVEL": "WARNING",
            **settings,
        }
        self.process: ServiceProcess | None = None
        self.http: httpx.Client | None = None

    def start(self, name: str = "orderbook", **extra: str) -> Orderbook:
        self.process = ServiceProcess(
            "prosum_orderbook", {**self.env, **extra}, self.folder / f"{name}.log"
        )
        self.http = httpx.Client(base_url=self.process.url, timeout=10)
        return self

    def ready(self, timeout: float = 60) -> dict[str, Any]:
        assert self.process is not None
        return self.process.ready(timeout)

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.process is not None:
            self.process.stop()

    @property
    def port(self) -> int:
        assert self.process is not None
        return self.process.port

    @property
    def api(self) -> httpx.Client:
        assert self.http is not None
        return self.http

    def place(self, threshold: str, **order: Any) -> httpx.Response:
        return self.api.post("/orders", json=order, headers={"X-Prosum-Threshold": threshold})

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return self.api.get(path, params=params, headers={"Authorization": f"Bearer {token}"})

    def until(
        self,
        path: str,
        token: str,
        check: Callable[[Any], bool],
        timeout: float = 30,
        **params: Any,
    ) -> Any:
        """GET ``path`` until ``check`` holds on the JSON body; the last body either way."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            response = self.get(path, token, **params)
            if response.status_code == 200:
                body = response.json()
                if check(body):
                    return body
            time.sleep(0.1)
        raise AssertionError(f"{path} never satisfied the check; last: {body}")


def bodies(records: list[Any], type_: str) -> list[dict[str, Any]]:
    out = []
    for record in records:
        body = json.loads(record.value)
        if body["type"] == type_:
            out.append(body)
    return out
