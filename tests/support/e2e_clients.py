"""Users of a running platform, over HTTP only: ops (identity, settlement, the order book), a
device with its Ed25519 key and DACT (challenge, threshold, signed meter readings, orders).

Every wait is a poll with a deadline (``Platform.eventually``) whose failure message shows what
was last seen and the tails of the logs of the services involved.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from prosum_auth.http import THRESHOLD_HEADER
from tests.support.e2e_platform import Platform, PlatformError

# Refusals that only say another service has not yet learnt from identity's events (its keys,
# the participant's activation, the device): worth asking again until the deadline.
NOT_YET_KNOWN = frozenset(
    {"unknown_signing_key", "participant_not_active", "unknown_device", "participant_pending"}
)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def reason_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail.get("reason") if isinstance(detail, dict) else None


def expect(response: httpx.Response, *statuses: int) -> Any:
    """The body of a response with one of the expected statuses; else a failure that shows it."""
    if response.status_code not in statuses:
        raise PlatformError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code} (wanted {statuses}): {response.text}"
        )
    return response.json()


@dataclass
class Device:
    """A device with its key pair and its DACT (services/identity/README.md)."""

    device_id: str
    participant_id: str
    kind: str
    metering_point: str
    actions: tuple[str, ...]
    private_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_key(self) -> str:
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return b64url(raw)

    @property
    def dact(self) -> dict[str, Any]:
        return {
            "dact": 1,
            "device_id": self.device_id,
            "participant_id": self.participant_id,
            "kind": self.kind,
            "metering_point": self.metering_point,
            "actions": sorted(set(self.actions)),
            "public_key": self.public_key,
        }

    def sign(self, message: str) -> str:
        return b64url(self.private_key.sign(message.encode("utf-8")))

    def reading(self, interval_end: datetime, import_wh: int, export_wh: int) -> dict[str, Any]:
        """A signed reading (services/metering/README.md: six lines, no trailing newline)."""
        end = interval_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        signed = "\n".join(
            [
                "prosum-reading-v1",
                self.device_id,
                self.metering_point,
                end,
                str(import_wh),
                str(export_wh),
            ]
        )
        return {
            "device_id": self.device_id,
            "metering_point": self.metering_point,
            "interval_end": end,
            "import_wh": import_wh,
            "export_wh": export_wh,
            "signature": self.sign(signed),
        }


class Clients:
    """HTTP clients of the five services, with ops' access token once ``login_ops`` ran."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.identity = httpx.AsyncClient(base_url=platform.url("identity"), timeout=15)
        self.metering = httpx.AsyncClient(base_url=platform.url("metering"), timeout=15)
        self.orderbook = httpx.AsyncClient(base_url=platform.url("orderbook"), timeout=15)
        self.settlement = httpx.AsyncClient(base_url=platform.url("settlement"), timeout=15)
        self.ops: dict[str, str] = {}

    async def aclose(self) -> None:
        for client in (self.identity, self.metering, self.orderbook, self.settlement):
            await client.aclose()

    # -- identity ---------------------------------------------------------------------------------
    async def login_ops(self) -> None:
        client_id, secret = self.platform.ops_secret()
        token = expect(
            await self.identity.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
            ),
            200,
        )
        assert "ops" in token.get("scope", "ops").split(), token
        self.ops = {"Authorization": f"Bearer {token['access_token']}"}

    async def onboard(self, participant_id: str, role: str, metering_point: str) -> dict[str, Any]:
        """Registers a participant and waits until the chain grant made it active."""
        registered = expect(
            await self.identity.post(
                "/participants",
                json={
                    "participant_id": participant_id,
                    "name": f"{role} {participant_id}",
                    "role": role,
                    "metering_point": metering_point,
                },
                headers=self.ops,
            ),
            201,
        )
        assert registered["status"] == "pending", registered
        assert registered["pending_command_id"], registered
        seen: dict[str, Any] = {}

        async def active() -> dict[str, Any] | None:
            body = expect(
                await self.identity.get(f"/participants/{participant_id}", headers=self.ops), 200
            )
            seen.update(body)
            if body["status"] in ("grant_failed", "closed", "suspended"):
                raise PlatformError(f"{participant_id} ended {body['status']}: {body}")
            return body if body["status"] == "active" else None

        return await self.platform.eventually(
            active,
            f"participant {participant_id} ({role}) to turn active on the chain grant",
            timeout=45,
            logs=("identity", "ledger-adapter"),
            last=lambda: str(seen),
        )

    async def register_device(self, device: Device, rating_w: int) -> dict[str, Any]:
        body: dict[str, Any] = expect(
            await self.identity.post(
                f"/participants/{device.participant_id}/devices",
                json={
                    "device_id": device.device_id,
                    "kind": device.kind,
                    "public_key": device.public_key,
                    "metering_point": device.metering_point,
                    "rating_w": rating_w,
                    "dact": device.dact,
                },
                headers=self.ops,
            ),
            201,
        )
        return body

    async def threshold(self, device: Device) -> dict[str, Any]:
        """The device proves possession of its key over a challenge and gets a threshold."""
        challenge = expect(await self.identity.post(f"/devices/{device.device_id}/challenges"), 201)
        lines = challenge["message"].split("\n")
        assert lines[0] == "prosum.threshold-request.v1", challenge
        assert lines[1:4] == [challenge["challenge_id"], challenge["nonce"], device.device_id]
        issued: dict[str, Any] = expect(
            await self.identity.post(
                "/thresholds",
                json={
                    "device_id": device.device_id,
                    "challenge_id": challenge["challenge_id"],
                    "signature": device.sign(challenge["message"]),
                    "dact": device.dact,
                },
            ),
            201,
        )
        assert issued["participant_id"] == device.participant_id, issued
        return issued

    # -- metering ---------------------------------------------------------------------------------
    async def submit_reading(self, threshold: dict[str, Any], reading: dict[str, Any]) -> Any:
        """``POST /v1/readings``; asked again while metering has not yet learnt identity's keys,
        the participant's activation or the device from identity's events."""
        last: list[httpx.Response] = []

        async def accepted() -> Any:
            response = await self.metering.post(
                "/v1/readings",
                json=reading,
                headers={THRESHOLD_HEADER: threshold["threshold"]},
            )
            last[:] = [response]
            if response.status_code in (200, 201):
                return response.json()
            if reason_of(response) in NOT_YET_KNOWN:
                return None
            return expect(response, 200, 201)

        return await self.platform.eventually(
            accepted,
            f"metering to accept the reading at {reading['interval_end']}",
            timeout=30,
            logs=("metering", "identity"),
            last=lambda: last[0].text if last else "",
        )

    # -- settlement -------------------------------------------------------------------------------
    async def settlement_balance(self, participant_id: str) -> dict[str, Any] | None:
        response = await self.settlement.get(f"/balances/{participant_id}", headers=self.ops)
        if response.status_code == 404:
            return None
        body: dict[str, Any] = expect(response, 200)
        return body

    async def login_participant(self, participant_id: str) -> dict[str, str]:
        """Ops gives the participant's app an OAuth client; the app logs in with it."""
        made = expect(
            await self.identity.post(
                "/clients",
                json={
                    "name": f"{participant_id}'s app",
                    "scopes": ["participant"],
                    "participant_id": participant_id,
                },
                headers=self.ops,
            ),
            201,
        )
        token = expect(
            await self.identity.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(made["client_id"], made["client_secret"]),
            ),
            200,
        )
        return {"Authorization": f"Bearer {token['access_token']}"}

    async def top_up(self, participant_id: str, amount: int, reference: str) -> dict[str, Any]:
        """The participant's app requests a top-up with its bank payment reference (the
        paper's request_ecoin_issue); ops finds it among the requested ones and approves it
        (schedule_ecoin_issue); the ledger mints it (issue_ecoin)."""
        last: list[httpx.Response] = []
        app = await self.login_participant(participant_id)

        async def requested() -> Any:
            response = await self.settlement.post(
                "/topups", json={"amount": amount, "reference": reference}, headers=app
            )
            last[:] = [response]
            if reason_of(response) in NOT_YET_KNOWN:
                return None  # settlement has not yet seen identity's activation
            return expect(response, 201, 200)

        request = await self.platform.eventually(
            requested,
            f"settlement to take a top-up for {participant_id}",
            timeout=30,
            logs=("settlement", "identity"),
            last=lambda: last[0].text if last else "",
        )
        assert (request["status"], request["participant_id"]) == ("requested", participant_id)
        request_id = request["request_id"]
        waiting = expect(
            await self.settlement.get("/topups", params={"status": "requested"}, headers=self.ops),
            200,
        )
        assert request_id in {r["request_id"] for r in waiting}, waiting
        approved = expect(
            await self.settlement.post(f"/topups/{request_id}/approve", headers=self.ops), 200
        )
        assert approved["status"] in ("approved", "completed"), approved
        seen: dict[str, Any] = {}

        async def completed() -> dict[str, Any] | None:
            body = expect(await self.settlement.get(f"/topups/{request_id}", headers=self.ops), 200)
            seen.update(body)
            if body["status"] in ("failed", "rejected"):
                raise PlatformError(f"top-up {request_id} ended {body['status']}: {body}")
            return body if body["status"] == "completed" else None

        return await self.platform.eventually(
            completed,
            f"top-up {request_id} to be minted",
            timeout=30,
            logs=("settlement", "ledger-adapter"),
            last=lambda: str(seen),
        )

    # -- order book -------------------------------------------------------------------------------
    async def cover(self, participant_id: str) -> dict[str, Any]:
        body: dict[str, Any] = expect(
            await self.orderbook.get(f"/participants/{participant_id}/cover", headers=self.ops), 200
        )
        return body

    async def ensure_open_market(self, market_id: str) -> dict[str, Any]:
        """The market, open and continuous; ops opens it if the calendar has not yet."""
        response = await self.orderbook.get(f"/markets/{market_id}", headers=self.ops)
        if response.status_code == 200 and response.json()["status"] == "open":
            market: dict[str, Any] = response.json()
            return market
        expect(
            await self.orderbook.post(
                "/markets",
                json={"market_id": market_id, "mechanism": "continuous"},
                headers=self.ops,
            ),
            201,
        )
        seen: dict[str, Any] = {}

        async def opened() -> dict[str, Any] | None:
            body = expect(await self.orderbook.get(f"/markets/{market_id}", headers=self.ops), 200)
            seen.update(body)
            return body if body["status"] == "open" else None

        return await self.platform.eventually(
            opened,
            f"market {market_id} to open",
            timeout=20,
            logs=("orderbook",),
            last=lambda: str(seen),
        )

    async def place_order(self, threshold: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
        """``POST /orders``; asked again while the order book has not yet learnt identity's keys
        or the participant's activation. ``order`` must carry a ``client_order_id``, so that a
        repeat can never place the order twice."""
        assert order.get("client_order_id"), "give every order a client_order_id"
        last: list[httpx.Response] = []

        async def placed() -> Any:
            response = await self.orderbook.post(
                "/orders", json=order, headers={THRESHOLD_HEADER: threshold["threshold"]}
            )
            last[:] = [response]
            if reason_of(response) in NOT_YET_KNOWN:
                return None
            return expect(response, 202)

        accepted = await self.platform.eventually(
            placed,
            f"the order book to accept order {order['client_order_id']}",
            timeout=30,
            logs=("orderbook", "identity"),
            last=lambda: last[0].text if last else "",
        )
        placed_order: dict[str, Any] = accepted["order"]
        return placed_order

    async def order_in(self, order_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        async def reached() -> dict[str, Any] | None:
            body = expect(await self.orderbook.get(f"/orders/{order_id}", headers=self.ops), 200)
            seen.update(body)
            if body["status"] == "rejected":
                raise PlatformError(f"order {order_id} was rejected by its book: {body}")
            return body if body["status"] in statuses else None

        return await self.platform.eventually(
            reached,
            f"order {order_id} to be {' or '.join(statuses)}",
            timeout=timeout,
            logs=("orderbook",),
            last=lambda: str(seen),
        )
