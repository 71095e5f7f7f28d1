"""Identity's HTTP API in-process on a real store: the documented shapes, authentication, and
every bad input answered with its 4xx and reason (and nothing changed)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from prosum_contracts import Envelope
from prosum_identity.adapters.settings import IdentitySettings
from prosum_identity.bootstrap import DEFINITION, build_identity
from prosum_identity.domain.dact import Dact
from prosum_platform.eventstore.schema import events, outbox
from prosum_platform.runtime.tansu import TansuBroker
from prosum_platform.service import Platform, ServiceParts, build_platform, create_app
from prosum_platform.service.migrations import upgrade
from prosum_platform.settings import ServiceSettings
from tests.unit.identity.fakes import FakeClock
from tests.unit.identity.harness import DeviceKey

pytestmark = [pytest.mark.kafka]
OPS_SECRET = "http-test-ops-secret-0123456789-abcdef"


@dataclass
class Api:
    client: TestClient
    platform: Platform
    parts: ServiceParts
    clock: FakeClock
    ops: dict[str, str]

    def stored(self) -> tuple[int, int]:
        with self.platform.store.reading() as conn:
            return (
                conn.execute(select(func.count()).select_from(events)).scalar_one(),
                conn.execute(select(func.count()).select_from(outbox)).scalar_one(),
            )

    def confirm_grant(self, participant_id: str) -> None:
        """What the ledger adapter's confirmation does when identity's consumer applies it."""
        command = self.client.get(f"/participants/{participant_id}", headers=self.ops).json()[
            "pending_command_id"
        ]
        envelope = Envelope(
            type="ledger.command_confirmed",
            schema_version=1,
            source="ledger-adapter",
            subject=command,
            data={
                "command_id": command,
                "command_type": "ledger.grant_permissions",
                "backend": "evm",
                "tx_id": "0xabc",
                "block": 7,
                "fee": 0,
                "participant_id": participant_id,
            },
        )
        handler = self.parts.consumers[0].subscription.handlers[envelope.type]
        with self.platform.store.transaction() as tx:
            handler(envelope, tx)

    def participant(self, role: str = "prosumer", active: bool = True) -> str:
        pid = f"p-{uuid.uuid4().hex[:10]}"
        body = {"participant_id": pid, "name": "Alice", "role": role, "metering_point": f"MP-{pid}"}
        assert self.client.post("/participants", json=body, headers=self.ops).status_code == 201
        if active:
            self.confirm_grant(pid)
        return pid

    def device(self, participant_id: str, actions: tuple[str, ...] = ("ask", "bid")) -> DeviceKey:
        device_id = f"meter-{uuid.uuid4().hex[:10]}"
        key = DeviceKey(device_id, participant_id, Ed25519PrivateKey.generate(), {})
        key.dact = {
            "dact": 1,
            "device_id": device_id,
            "participant_id": participant_id,
            "kind": "smart_meter",
            "metering_point": f"MP-{participant_id}",
            "actions": sorted(actions),
            "public_key": key.public_key,
        }
        body = {
            "device_id": device_id,
            "kind": "smart_meter",
            "public_key": key.public_key,
            "metering_point": f"MP-{participant_id}",
            "rating_w": 4_600,
            "dact": key.dact,
        }
        response = self.client.post(
            f"/participants/{participant_id}/devices", json=body, headers=self.ops
        )
        assert response.status_code == 201, response.text
        return key

    def challenge(self, key: DeviceKey) -> dict[str, Any]:
        response = self.client.post(f"/devices/{key.device_id}/challenges")
        assert response.status_code == 201, response.text
        return dict(response.json())

    def threshold_request(
        self, key: DeviceKey, challenge: dict[str, Any], **changes: Any
    ) -> dict[str, Any]:
        body = {
            "device_id": key.device_id,
            "challenge_id": challenge["challenge_id"],
            "signature": key.sign(challenge["message"]),
            "dact": key.dact,
        }
        body.update(changes)
        return body

    def refused(self, response: Any, status: int, reason: str, before: tuple[int, int]) -> None:
        assert response.status_code == status, response.text
        assert response.json()["detail"]["reason"] == reason, response.text
        assert self.stored() == before, "a refused request changes nothing"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tansu: TansuBroker) -> Iterator[Api]:
    folder: Path = tmp_path_factory.mktemp("identity-http")
    url = f"sqlite:///{folder / 'identity.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PROSUM_DB_URL", url)
        env.setenv("PROSUM_DATA_DIR", str(folder))
        env.setenv("PROSUM_KAFKA_BOOTSTRAP_SERVERS", tansu.bootstrap)
        upgrade("prosum_identity", url)
        platform = build_platform(DEFINITION, ServiceSettings("identity"))
    clock = FakeClock(datetime.now(UTC))
    settings = IdentitySettings(
        ops_client_secret=OPS_SECRET,  # type: ignore[arg-type]
        key_encryption_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
        key_publish_lead_s=0,
        key_maintenance_interval_s=0.2,
    )
    parts = build_identity(platform, settings, clock=clock)
    app = create_app(DEFINITION, platform, parts, run_consumers=False)
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while not client.get("/.well-known/jwks.json").json()["keys"]:
            assert time.monotonic() < deadline, "no signing key was made"
            time.sleep(0.05)
        token = client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "ops",
                "client_secret": OPS_SECRET,
            },
        ).json()["access_token"]
        yield Api(client, platform, parts, clock, {"Authorization": f"Bearer {token}"})
    platform.engine.dispose()


# -- the happy path and the documented shapes -------------------------------------------------


def test_a_device_gets_a_threshold_over_http(api: Api) -> None:
    pid = api.participant()
    participant = api.client.get(f"/participants/{pid}", headers=api.ops).json()
    assert participant["status"] == "active"
    assert participant["effective_limits"] == {
        "max_order_wh": 100_000,
        "max_open_wh": 500_000,
        "max_ecoin": 10_000_000,
    }
    key = api.device(pid, ("ask", "bid", "submit_readings"))
    challenge = api.challenge(key)
    response = api.client.post("/thresholds", json=api.threshold_request(key, challenge))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["actions"] == ["ask", "bid", "submit_readings"]
    assert body["threshold"].count(".") == 2
    record = api.client.get(f"/thresholds/{body['threshold_id']}", headers=api.ops).json()
    assert (record["status"], record["device_id"]) == ("valid", key.device_id)
    listed = api.client.get(f"/participants/{pid}/thresholds?valid=true", headers=api.ops).json()
    assert [t["threshold_id"] for t in listed] == [body["threshold_id"]]


def test_registering_twice_answers_200_and_other_data_409(api: Api) -> None:
    body = {
        "participant_id": "p-twice",
        "name": "Bob",
        "role": "consumer",
        "metering_point": "MP-twice",
    }
    first = api.client.post("/participants", json=body, headers=api.ops)
    assert first.status_code == 201 and first.headers["Location"] == "participants/p-twice"
    before = api.stored()
    again = api.client.post("/participants", json=body, headers=api.ops)
    assert again.status_code == 200 and again.json() == first.json()
    api.refused(
        api.client.post("/participants", json={**body, "role": "producer"}, headers=api.ops),
        409,
        "participant_exists",
        before,
    )


def test_listing_participants_pages_by_id(api: Api) -> None:
    for _ in range(3):
        api.participant(active=False)
    first = api.client.get("/participants?status=pending&limit=2", headers=api.ops).json()
    assert len(first["items"]) == 2 and first["next_after"]
    rest = api.client.get(
        f"/participants?status=pending&limit=500&after={first['next_after']}", headers=api.ops
    ).json()
    ids = [p["participant_id"] for p in first["items"] + rest["items"]]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) >= 3


def test_a_participants_own_app_sees_its_own_records_only(api: Api) -> None:
    pid, other = api.participant(), api.participant()
    made = api.client.post(
        "/clients",
        json={"name": "app", "scopes": ["participant"], "participant_id": pid},
        headers=api.ops,
    ).json()
    token = api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(made["client_id"], made["client_secret"]),
    ).json()["access_token"]
    own = {"Authorization": f"Bearer {token}"}
    assert api.client.get(f"/participants/{pid}", headers=own).status_code == 200
    assert api.client.get(f"/participants/{other}", headers=own).json()["detail"]["reason"] == (
        "participant_unknown"
    )
    assert api.client.get("/participants", headers=own).json()["detail"]["reason"] == (
        "insufficient_scope"
    )


def test_the_openapi_document_covers_every_route(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path in ("/health", "/ready"):
                continue
            assert operation.get("tags") and operation.get("summary"), (method, path)
            for status, response in operation["responses"].items():
                if status.startswith("4") and path != "/oauth/token":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    token = spec["paths"]["/oauth/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]
    assert "client_credentials" in spec["components"]["securitySchemes"]
    assert "prosum.threshold-request.v1" in spec["paths"]["/thresholds"]["post"]["description"]


def test_jwks_is_public_and_cacheable_briefly(api: Api) -> None:
    response = api.client.get("/.well-known/jwks.json")
    [key, *_] = response.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert response.headers["Cache-Control"] == "public, max-age=30"


# -- the token endpoint ------------------------------------------------------------------------


def test_the_token_endpoint_takes_form_or_basic_and_never_caches(api: Api) -> None:
    form = api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "ops", "client_secret": OPS_SECRET},
    )
    assert form.status_code == 200
    assert form.json()["token_type"] == "Bearer" and form.json()["scope"] == "ops"
    assert form.headers["Cache-Control"] == "no-store"
    basic = api.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("ops", OPS_SECRET)
    )
    assert basic.status_code == 200


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error"),
    [
        ({"json": {"grant_type": "client_credentials"}}, 400, "invalid_request"),
        ({"data": {"client_id": "ops", "client_secret": OPS_SECRET}}, 400, "invalid_request"),
        ({"data": {"grant_type": "password", "client_id": "ops"}}, 400, "unsupported_grant_type"),
        (
            {
                "data": {
                    "grant_type": "client_credentials",
                    "client_id": "ops",
                    "client_secret": "x",
                }
            },
            401,
            "invalid_client",
        ),
        (
            {"data": {"grant_type": "client_credentials"}, "auth": ("ops", "wrong")},
            401,
            "invalid_client",
        ),
        (
            {
                "data": {"grant_type": "client_credentials", "client_secret": OPS_SECRET},
                "auth": ("ops", OPS_SECRET),
            },
            400,
            "invalid_request",
        ),
        (
            {
                "content": b"grant_type=client_credentials&grant_type=client_credentials",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            400,
            "invalid_request",
        ),
        (
            {
                "data": {
                    "grant_type": "client_credentials",
                    "client_id": "ops",
                    "client_secret": OPS_SECRET,
                    "scope": "partner",
                }
            },
            400,
            "invalid_scope",
        ),
    ],
)
def test_token_requests_are_refused_the_rfc6749_way(
    api: Api, request_kwargs: dict[str, Any], status: int, error: str
) -> None:
    response = api.client.post("/oauth/token", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    if status == 401:
        assert response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "credential_missing"),
        ({"Authorization": "Bearer not.a.token"}, 401, "credential_malformed"),
        ({"Authorization": "Basic b3BzOng="}, 401, "credential_missing"),
    ],
)
def test_management_needs_an_ops_token(
    api: Api, headers: dict[str, str], status: int, reason: str
) -> None:
    response = api.client.get("/participants", headers=headers)
    assert response.status_code == status
    assert response.json()["detail"]["reason"] == reason


def test_a_partner_token_does_not_manage(api: Api) -> None:
    made = api.client.post(
        "/clients", json={"name": "retailer", "scopes": ["partner"]}, headers=api.ops
    ).json()
    credentials = base64.b64encode(f"{made['client_id']}:{made['client_secret']}".encode()).decode()
    token = api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {credentials}"},
    ).json()["access_token"]
    response = api.client.post(
        "/participants",
        json={"name": "x", "role": "consumer", "metering_point": "MP-x"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (response.status_code, response.json()["detail"]["reason"]) == (
        403,
        "insufficient_scope",
    )


# -- malformed bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"name": "A", "role": "consumer"}',
        b'{"name": "A", "role": "landlord", "metering_point": "MP-1"}',
        b'{"name": "A", "role": "consumer", "metering_point": "MP-1", "admin": true}',
        b'{"name": "A", "role": "consumer", "metering_point": "MP-1",'
        b' "limits": {"max_order_wh": "100", "max_open_wh": 200, "max_ecoin": 1}}',
        b'{"name": "A", "role": "consumer", "metering_point": "MP-1",'
        b' "limits": {"max_order_wh": 1.5, "max_open_wh": 200, "max_ecoin": 1}}',
        b'{"participant_id": "bad id!", "name": "A", "role": "consumer", "metering_point": "MP-1"}',
    ],
)
def test_a_malformed_body_is_refused(api: Api, body: bytes) -> None:
    before = api.stored()
    response = api.client.post(
        "/participants", content=body, headers={**api.ops, "Content-Type": "application/json"}
    )
    api.refused(response, 422, "request_invalid", before)
    assert response.json()["detail"]["errors"]


def test_limits_that_contradict_each_other_are_refused(api: Api) -> None:
    before = api.stored()
    body = {
        "name": "A",
        "role": "consumer",
        "metering_point": "MP-limits",
        "limits": {"max_order_wh": 500, "max_open_wh": 100, "max_ecoin": 1},
    }
    api.refused(
        api.client.post("/participants", json=body, headers=api.ops), 422, "limits_invalid", before
    )


def test_a_device_must_measure_its_participants_metering_point(api: Api) -> None:
    pid = api.participant()
    key = DeviceKey("meter-x", pid, Ed25519PrivateKey.generate(), {})
    before = api.stored()
    body = {
        "device_id": "meter-x",
        "kind": "smart_meter",
        "public_key": key.public_key,
        "metering_point": "MP-elsewhere",
        "rating_w": 4_600,
    }
    api.refused(
        api.client.post(f"/participants/{pid}/devices", json=body, headers=api.ops),
        422,
        "metering_point_mismatch",
        before,
    )


# -- challenges and thresholds: every bad input --------------------------------------------------


def test_a_wrong_signature_is_401(api: Api) -> None:
    key = api.device(api.participant())
    challenge = api.challenge(key)
    other = Ed25519PrivateKey.generate()
    forged = DeviceKey(key.device_id, key.participant_id, other, key.dact).sign(
        challenge["message"]
    )
    before = api.stored()
    api.refused(
        api.client.post(
            "/thresholds", json=api.threshold_request(key, challenge, signature=forged)
        ),
        401,
        "signature_invalid",
        before,
    )


def test_a_replayed_challenge_is_409(api: Api) -> None:
    key = api.device(api.participant())
    request = api.threshold_request(key, api.challenge(key))
    assert api.client.post("/thresholds", json=request).status_code == 201
    before = api.stored()
    api.refused(api.client.post("/thresholds", json=request), 409, "challenge_used", before)


def test_an_expired_challenge_is_410(api: Api) -> None:
    key = api.device(api.participant())
    request = api.threshold_request(key, api.challenge(key))
    api.clock.advance(61)
    before = api.stored()
    api.refused(api.client.post("/thresholds", json=request), 410, "challenge_expired", before)


def test_a_dact_that_does_not_match_is_403(api: Api) -> None:
    key = api.device(api.participant(), ("submit_readings",))
    challenge = api.challenge(key)
    widened = {**key.dact, "actions": ["ask", "bid", "submit_readings"]}
    message = challenge["message"].rsplit("\n", 1)[0] + "\n" + Dact.from_document(widened).digest()
    before = api.stored()
    api.refused(
        api.client.post(
            "/thresholds",
            json=api.threshold_request(key, challenge, dact=widened, signature=key.sign(message)),
        ),
        403,
        "dact_mismatch",
        before,
    )


def test_a_malformed_dact_is_422(api: Api) -> None:
    key = api.device(api.participant())
    challenge = api.challenge(key)
    before = api.stored()
    api.refused(
        api.client.post(
            "/thresholds", json=api.threshold_request(key, challenge, dact={**key.dact, "dact": 2})
        ),
        422,
        "dact_malformed",
        before,
    )


def test_an_unknown_device_is_404(api: Api) -> None:
    before = api.stored()
    api.refused(api.client.post("/devices/meter-nobody/challenges"), 404, "device_unknown", before)


def test_a_revoked_device_is_403(api: Api) -> None:
    key = api.device(api.participant())
    request = api.threshold_request(key, api.challenge(key))
    revoked = api.client.post(
        f"/devices/{key.device_id}/revoke", json={"reason": "stolen"}, headers=api.ops
    )
    assert revoked.json()["status"] == "revoked"
    before = api.stored()
    api.refused(api.client.post("/thresholds", json=request), 403, "device_revoked", before)


def test_a_suspended_participant_gets_no_threshold(api: Api) -> None:
    pid = api.participant()
    key = api.device(pid)
    request = api.threshold_request(key, api.challenge(key))
    suspended = api.client.post(
        f"/participants/{pid}/suspend", json={"reason": "unpaid"}, headers=api.ops
    )
    assert suspended.json()["status"] == "suspended"
    before = api.stored()
    api.refused(api.client.post("/thresholds", json=request), 403, "participant_suspended", before)


def test_too_many_challenges_are_429_with_retry_after(api: Api) -> None:
    key = api.device(api.participant())
    for _ in range(10):
        api.challenge(key)
    before = api.stored()
    response = api.client.post(f"/devices/{key.device_id}/challenges")
    api.refused(response, 429, "challenge_rate_limited", before)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
