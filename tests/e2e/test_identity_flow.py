"""End to end: identity and the ledger adapter as processes on the real broker (and anvil),
driven over HTTP like ops and a smart meter would; another service's verifier, whose trust
projection is filled from identity's events on Kafka, accepts the threshold, and then refuses it
once it is revoked.

1. ops gets a token, registers a prosumer; identity asks the ledger for its permissions and the
   participant turns active when the chain confirms them;
2. ops registers the meter with its DACT; the meter takes a challenge, signs it and gets a
   threshold; an order endpoint guarded by ``prosum_auth`` (as the orderbook will be) accepts it
   within its limits and refuses it beyond them;
3. the threshold is revoked: the order endpoint refuses it from then on; the participant is
   suspended: its next threshold is refused too, and the chain permissions are revoked;
4. the signing key is rotated: tokens signed before still work, new ones carry the new key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Header, HTTPException
from sqlalchemy import Engine

from prosum_auth import AuthError, TokenVerifier
from prosum_auth.http import THRESHOLD_HEADER, http_error
from prosum_auth.trust import SqlTrustStore, trust_handlers
from prosum_auth.trust import tables as trust_tables
from prosum_contracts import Envelope, SchemaRegistry
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_COMMANDS, LEDGER_EVENTS
from prosum_platform.eventstore import EventStore, create_store_engine, metadata
from prosum_platform.messaging import EventConsumer, KafkaConfig, Subscription
from prosum_platform.runtime.tansu import TansuBroker
from tests.support.kafka_io import TopicReader, publish
from tests.support.service_process import ServiceProcess
from tests.unit.identity.harness import DeviceKey

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

OPS_SECRET = "e2e-ops-secret-" + uuid.uuid4().hex


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


class OtherService:
    """What metering or the orderbook run: a trust projection of identity's events in their own
    store, a verifier over it, and an endpoint that takes an order only with a threshold."""

    def __init__(self, folder: Path, kafka: KafkaConfig) -> None:
        self.engine: Engine = create_store_engine(f"sqlite:///{folder / 'orderbook.db'}")
        metadata.create_all(self.engine)
        trust_tables.create_all(self.engine)
        self.trust = SqlTrustStore(self.engine, key_cache_s=0.2)
        self.consumer = EventConsumer(
            f"orderbook-trust-{uuid.uuid4().hex[:6]}",
            EventStore(self.engine, SchemaRegistry.load()),
            SchemaRegistry.load(),
            kafka,
            Subscription((IDENTITY_EVENTS,), trust_handlers()),
        )
        verifier = TokenVerifier(self.trust.keys, self.trust)
        self.app = FastAPI()

        @self.app.post("/orders", status_code=201)
        def place(
            body: dict[str, int],
            threshold: str | None = Header(default=None, alias=THRESHOLD_HEADER),
        ) -> dict[str, str]:
            try:
                held = verifier.threshold(
                    threshold, "ask", order_wh=body["energy_wh"], ecoin=body["ecoin"]
                )
            except AuthError as error:
                raise http_error(error) from None
            if body["energy_wh"] <= 0:
                raise HTTPException(422, "energy_wh must be positive")
            return {"participant_id": held.participant_id, "threshold_id": held.threshold_id}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://svc")


@pytest.fixture
async def other_service(tmp_path: Path, kafka: KafkaConfig) -> AsyncIterator[OtherService]:
    service = OtherService(tmp_path, kafka)
    await service.consumer.start()
    task = asyncio.create_task(service.consumer.run())
    try:
        yield service
    finally:
        await service.consumer.stop()
        task.cancel()
        service.engine.dispose()


@pytest.fixture
def ledger(request: pytest.FixtureRequest, tmp_path: Path, tansu: TansuBroker) -> Any:
    """The real ledger adapter on anvil; None where anvil is not installed (the test then
    answers identity's grant itself, as the ledger adapter would)."""
    try:
        anvil = request.getfixturevalue("anvil")
    except pytest.skip.Exception:
        yield None
        return
    folder = tmp_path / "ledger"
    process = ServiceProcess(
        "prosum_ledger",
        {
            "PROSUM_DATA_DIR": str(folder),
            "PROSUM_DB_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "PROSUM_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
            "PROSUM_CHAIN_BACKEND": "evm",
            "PROSUM_CHAIN_EVM_RPC_URL": anvil.rpc_url,
            "PROSUM_CHAIN_EVM_CHAIN_ID": str(anvil.chain_id),
        },
        tmp_path / "ledger.log",
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def identity(tmp_path: Path, tansu: TansuBroker) -> Any:
    process = ServiceProcess(
        "prosum_identity",
        {
            "PROSUM_ENVIRONMENT": "test",
            "PROSUM_DATA_DIR": str(tmp_path / "identity"),
            "PROSUM_DB_URL": f"sqlite:///{tmp_path / 'identity.db'}",
            "PROSUM_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
            "PROSUM_IDENTITY_OPS_CLIENT_SECRET": OPS_SECRET,
            "PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "PROSUM_IDENTITY_KEY_PUBLISH_LEAD_S": "0",
        },
        tmp_path / "identity.log",
    )
    try:
        yield process
    finally:
        process.stop()


async def test_onboarding_to_a_threshold_another_service_accepts(
    identity: ServiceProcess,
    ledger: ServiceProcess | None,
    other_service: OtherService,
    kafka: KafkaConfig,
) -> None:
    if ledger is not None:
        await asyncio.to_thread(ledger.ready, 90)
    await asyncio.to_thread(identity.ready, 60)
    tag = uuid.uuid4().hex[:8]
    pid, device_id = f"p-{tag}", f"meter-{tag}"
    async with (
        httpx.AsyncClient(base_url=identity.url, timeout=10) as http,
        other_service.client() as orderbook,
        TopicReader(kafka, LEDGER_EVENTS) as ledger_events,
        TopicReader(kafka, LEDGER_COMMANDS) as ledger_commands,
    ):
        # 1. ops token, participant, chain grant, active on the confirmation
        token = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("ops", OPS_SECRET)
        )
        assert token.status_code == 200, token.text
        ops = {"Authorization": f"Bearer {token.json()['access_token']}"}
        registered = await http.post(
            "/participants",
            json={
                "participant_id": pid,
                "name": "Sunny Roof",
                "role": "prosumer",
                "metering_point": f"MP-{tag}",
            },
            headers=ops,
        )
        assert registered.status_code == 201, registered.text
        assert registered.json()["status"] == "pending"
        grant_id = registered.json()["pending_command_id"]
        [command] = await ledger_commands.wait_for(
            lambda r: json.loads(r.value)["data"].get("command_id") == grant_id
        )
        grant = json.loads(command.value)
        assert (grant["type"], grant["data"]["permissions"]) == (
            "ledger.grant_permissions",
            ["connect", "send", "receive", "energy.issue"],
        )
        if ledger is None:  # no chain here: answer as the ledger adapter would
            await publish(kafka, LEDGER_EVENTS, [confirmation(grant_id, pid)])
        [outcome] = await ledger_events.wait_for(
            lambda r: json.loads(r.value)["data"].get("command_id") == grant_id
        )
        assert json.loads(outcome.value)["type"] == "ledger.command_confirmed"

        async def participant_status() -> str | None:
            body = (await http.get(f"/participants/{pid}", headers=ops)).json()
            return str(body["status"]) if body["status"] == "active" else None

        await eventually(participant_status, "the participant to turn active")

        # 2. the meter, its DACT, challenge, signature, threshold; another service accepts it
        meter = DeviceKey(device_id, pid, Ed25519PrivateKey.generate(), {})
        meter.dact = {
            "dact": 1,
            "device_id": device_id,
            "participant_id": pid,
            "kind": "smart_meter",
            "metering_point": f"MP-{tag}",
            "actions": ["ask", "bid", "submit_readings"],
            "public_key": meter.public_key,
        }
        device = await http.post(
            f"/participants/{pid}/devices",
            json={
                "device_id": device_id,
                "kind": "smart_meter",
                "public_key": meter.public_key,
                "metering_point": f"MP-{tag}",
                "rating_w": 9_900,
                "dact": meter.dact,
            },
            headers=ops,
        )
        assert device.status_code == 201, device.text

        async def threshold() -> dict[str, Any]:
            challenge = (await http.post(f"/devices/{device_id}/challenges")).json()
            issued = await http.post(
                "/thresholds",
                json={
                    "device_id": device_id,
                    "challenge_id": challenge["challenge_id"],
                    "signature": meter.sign(challenge["message"]),
                    "dact": meter.dact,
                },
            )
            assert issued.status_code == 201, issued.text
            return dict(issued.json())

        first = await threshold()

        async def order(held: dict[str, Any], energy_wh: int = 4_000) -> httpx.Response:
            return await orderbook.post(
                "/orders",
                json={"energy_wh": energy_wh, "ecoin": 900},
                headers={THRESHOLD_HEADER: held["threshold"]},
            )

        async def accepted() -> bool:
            return (await order(first)).status_code == 201

        await eventually(accepted, "the other service to learn keys and status from events")
        placed = (await order(first)).json()
        assert placed == {"participant_id": pid, "threshold_id": first["threshold_id"]}
        too_big = await order(first, energy_wh=first["limits"]["max_order_wh"] + 1)
        assert (too_big.status_code, too_big.json()["detail"]["reason"]) == (403, "limit_exceeded")

        # 3. revocation holds before expiry; a suspended participant is refused everywhere
        revoked = await http.post(
            f"/thresholds/{first['threshold_id']}/revoke",
            json={"reason": "phone lost"},
            headers=ops,
        )
        assert revoked.json()["status"] == "revoked"

        async def refused_for(held: dict[str, Any], reason: str) -> bool:
            response = await order(held)
            return response.status_code == 403 and response.json()["detail"]["reason"] == reason

        await eventually(lambda: refused_for(first, "threshold_revoked"), "the revocation")
        second = await threshold()
        assert (await order(second)).status_code == 201
        suspended = await http.post(
            f"/participants/{pid}/suspend", json={"reason": "audit"}, headers=ops
        )
        revoke_id = suspended.json()["pending_command_id"]
        assert suspended.json()["status"] == "suspended" and revoke_id
        await eventually(lambda: refused_for(second, "participant_not_active"), "the suspension")
        refused_challenge = await http.post(f"/devices/{device_id}/challenges")
        assert refused_challenge.json()["detail"]["reason"] == "participant_suspended"
        if ledger is not None:
            [revoke] = await ledger_events.wait_for(
                lambda r: json.loads(r.value)["data"].get("command_id") == revoke_id
            )
            assert json.loads(revoke.value)["type"] == "ledger.command_confirmed"

        # 4. key rotation: the token from before still works, new tokens carry the new key
        old_kid = first["kid"]
        rotated = await http.post("/signing-keys/rotate", headers=ops)
        assert rotated.status_code == 201, rotated.text
        new_kid = rotated.json()["kid"]
        assert {k["kid"]: k["status"] for k in rotated.json()["keys"]} == {
            old_kid: "retired",
            new_kid: "active",
        }
        assert (await http.get(f"/participants/{pid}", headers=ops)).status_code == 200
        fresh = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("ops", OPS_SECRET)
        )
        header = json.loads(_b64(fresh.json()["access_token"].split(".")[0]))
        assert header["kid"] == new_kid
        jwks = (await http.get("/.well-known/jwks.json")).json()
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}

        async def projection_knows_both() -> bool:
            return other_service.trust.keys().kids() == {old_kid, new_kid}

        await eventually(projection_knows_both, "identity.signing_keys_changed to arrive")


def confirmation(command_id: str, participant_id: str) -> Envelope:
    return Envelope(
        type="ledger.command_confirmed",
        schema_version=1,
        source="ledger-adapter",
        subject=participant_id,
        data={
            "command_id": command_id,
            "command_type": "ledger.grant_permissions",
            "backend": "test",
            "tx_id": "0x01",
            "block": 1,
            "fee": 0,
            "participant_id": participant_id,
        },
    )


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
