"""Thresholds issued per second (challenge, sign, verify, issue) and threshold verifications per
second in another service's verifier.

Issuing, three ways:

- ``application``: identity's application services over its SQL store (SQLite file, and
  PostgreSQL when 127.0.0.1:5432 answers), in one process: per threshold, a challenge (one
  transaction), the device's Ed25519 signature, then verification of the signature and the
  DACT, the threshold signed and recorded with its event in the outbox (a second
  transaction). 1 and 4 client threads, devices spread over participants.
- ``http``: the same through identity's HTTP API, identity running as its own process (as
  ``prosum up`` runs it, SQLite, with the tansu broker), 1 and 4 client threads.

Verifying, the way metering and the orderbook do (``prosum_auth.TokenVerifier``):

- ``keys only``: signature, claims, scope and limits, with no revocation lookup;
- ``trust store``: plus the revocation and participant-status lookup in ``SqlTrustStore``
  (SQLite), as a service verifies every request.

    uv run python -m bench.identity_thresholds [--seconds 5] [--no-http]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert

from prosum_auth import KeySet, TokenVerifier
from prosum_auth.trust import SqlTrustStore, participant_status, revocations, trusted_keys
from prosum_auth.trust import tables as trust_tables
from prosum_contracts import Envelope, SchemaRegistry
from prosum_contracts.topics import LEDGER_EVENTS
from prosum_identity.adapters.crypto import CryptographyEd25519, KeySealer, minter_for
from prosum_identity.adapters.store import unit_of_work
from prosum_identity.application.devices import DeviceRegistration, Devices
from prosum_identity.application.keys import SigningKeys
from prosum_identity.application.participants import Participants, record_ledger_outcome
from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.application.thresholds import ThresholdRequest, Thresholds
from prosum_identity.domain.model import Limits
from prosum_identity.domain.participant import Participant
from prosum_platform.eventstore import EventStore, create_store_engine
from prosum_platform.eventstore import metadata as platform_tables
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import start_tansu
from prosum_platform.service.migrations import upgrade
from tests.support.kafka_io import publish
from tests.support.service_process import ServiceProcess
from tests.support.stores import postgres_server
from tests.unit.identity.harness import DeviceKey

PARTICIPANTS = 20
DEVICES_PER_PARTICIPANT = 10
# The benchmark asks each device for many challenges: lift the per-device rate limit.
POLICY = IdentityPolicy(challenge_limit=128, challenge_window_s=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def make_dact(key: DeviceKey, metering_point: str) -> dict[str, Any]:
    return {
        "dact": 1,
        "device_id": key.device_id,
        "participant_id": key.participant_id,
        "kind": "smart_meter",
        "metering_point": metering_point,
        "actions": ["ask", "bid", "submit_readings"],
        "public_key": key.public_key,
    }


def run_threads(
    threads: int, seconds: float, one: Callable[[int, int, int], None]
) -> tuple[int, float]:
    """Call ``one(worker, threads, n)`` in a loop on each thread for ``seconds``."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        n = 0
        while time.monotonic() < stop:
            one(index, threads, n)
            n += 1
            counts[index] += 1

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts), time.monotonic() - started


# -- issuing in process -------------------------------------------------------------------------


def bench_application(label: str, url: str, seconds: float) -> str:
    upgrade("prosum_identity", url)
    engine = create_store_engine(url, pool_size=8)
    store = EventStore(engine, SchemaRegistry.load())
    uow = unit_of_work(store, KeySealer([Fernet.generate_key().decode()]))
    ed25519 = CryptographyEd25519()
    keys = SigningKeys(uow, utc_now, ed25519, minter_for, POLICY)
    keys.ensure()
    participants = Participants(uow, utc_now, POLICY)
    devices = Devices(uow, utc_now)
    thresholds = Thresholds(uow, utc_now, ed25519, keys, POLICY)
    fleet: list[DeviceKey] = []
    run = uuid.uuid4().hex[:6]
    for p in range(PARTICIPANTS):
        pid = f"p-{run}-{p}"
        participants.register(f"P{p}", "prosumer", f"MP-{pid}", None, "bench", pid)
        with uow() as unit:
            participant = unit.get(Participant, pid)
            assert participant is not None
            assert participant.pending is not None
            record_ledger_outcome(
                unit,
                "ledger.command_confirmed",
                {
                    "command_id": participant.pending.command_id,
                    "command_type": "ledger.grant_permissions",
                    "participant_id": pid,
                },
                utc_now,
            )
        for d in range(DEVICES_PER_PARTICIPANT):
            key = DeviceKey(f"m-{run}-{p}-{d}", pid, Ed25519PrivateKey.generate(), {})
            key.dact = make_dact(key, f"MP-{pid}")
            devices.register(
                pid,
                DeviceRegistration(
                    key.device_id, "smart_meter", key.public_key, f"MP-{pid}", 5_000, key.dact
                ),
                "bench",
            )
            fleet.append(key)

    def one(worker: int, threads: int, n: int) -> None:
        # Threads own disjoint devices, as real devices ask for their own thresholds.
        own = fleet[worker::threads]
        key = own[n % len(own)]
        challenge = thresholds.challenge(key.device_id)
        thresholds.issue(
            ThresholdRequest(
                key.device_id, challenge.challenge_id, key.sign(challenge.message), key.dact
            )
        )

    lines = []
    for threads in (1, 4):
        total, elapsed = run_threads(threads, seconds, one)
        lines.append(
            f"issue       {label:<11} threads={threads}  thresholds={total:>6}  "
            f"{total / elapsed:>8,.0f} thresholds/s"
        )
        print(lines[-1], flush=True)
    engine.dispose()
    return "\n".join(lines)


# -- issuing through HTTP -------------------------------------------------------------------------


def bench_http(seconds: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="identity-bench-"))
    broker = start_tansu(log=folder / "tansu.log")
    secret = uuid.uuid4().hex * 2
    identity = ServiceProcess(
        "prosum_identity",
        {
            "PROSUM_ENVIRONMENT": "test",
            "PROSUM_DATA_DIR": str(folder),
            "PROSUM_DB_URL": f"sqlite:///{folder / 'identity.db'}",
            "PROSUM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "PROSUM_IDENTITY_OPS_CLIENT_SECRET": secret,
            "PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "PROSUM_IDENTITY_CHALLENGE_LIMIT": "128",
            "PROSUM_IDENTITY_CHALLENGE_WINDOW_S": "1",
            "PROSUM_LOG_LEVEL": "WARNING",
        },
        folder / "identity.log",
    )
    try:
        identity.ready(90)
        http = httpx.Client(base_url=identity.url, timeout=30)
        token = http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("ops", secret)
        ).json()["access_token"]
        ops = {"Authorization": f"Bearer {token}"}
        fleet = _http_fleet(http, ops, identity, broker.bootstrap)

        local = threading.local()

        def one(worker: int, threads: int, n: int) -> None:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=identity.url, timeout=30)
            own = fleet[worker::threads]
            key = own[n % len(own)]
            challenge = client.post(f"/devices/{key.device_id}/challenges").json()
            response = client.post(
                "/thresholds",
                json={
                    "device_id": key.device_id,
                    "challenge_id": challenge["challenge_id"],
                    "signature": key.sign(challenge["message"]),
                    "dact": key.dact,
                },
            )
            if response.status_code != 201:
                raise RuntimeError(response.text)

        for threads in (1, 4):
            total, elapsed = run_threads(threads, seconds, one)
            print(
                f"issue       http/sqlite  threads={threads}  thresholds={total:>6}  "
                f"{total / elapsed:>8,.0f} thresholds/s",
                flush=True,
            )
    finally:
        identity.stop()
        broker.stop()


def _http_fleet(
    http: httpx.Client, ops: dict[str, str], identity: ServiceProcess, bootstrap: str
) -> list[DeviceKey]:
    """Participants made active through the ledger's confirmation on Kafka, as in production."""
    run = uuid.uuid4().hex[:6]
    confirmations, fleet = [], []
    for p in range(PARTICIPANTS):
        pid = f"p-{run}-{p}"
        body = http.post(
            "/participants",
            json={
                "participant_id": pid,
                "name": f"P{p}",
                "role": "prosumer",
                "metering_point": f"MP-{pid}",
            },
            headers=ops,
        ).json()
        command = body["pending_command_id"]
        confirmations.append(
            Envelope(
                "ledger.command_confirmed",
                1,
                "ledger-adapter",
                pid,
                {
                    "command_id": command,
                    "command_type": "ledger.grant_permissions",
                    "backend": "bench",
                    "tx_id": "0x01",
                    "block": 1,
                    "fee": 0,
                    "participant_id": pid,
                },
            )
        )
        for d in range(DEVICES_PER_PARTICIPANT):
            key = DeviceKey(f"m-{run}-{p}-{d}", pid, Ed25519PrivateKey.generate(), {})
            key.dact = make_dact(key, f"MP-{pid}")
            http.post(
                f"/participants/{pid}/devices",
                json={
                    "device_id": key.device_id,
                    "kind": "smart_meter",
                    "public_key": key.public_key,
                    "metering_point": f"MP-{pid}",
                    "rating_w": 5_000,
                    "dact": key.dact,
                },
                headers=ops,
            ).raise_for_status()
            fleet.append(key)
    asyncio.run(publish(KafkaConfig(bootstrap_servers=bootstrap), LEDGER_EVENTS, confirmations))
    deadline = time.monotonic() + 90
    last = f"p-{run}-{PARTICIPANTS - 1}"
    while http.get(f"/participants/{last}", headers=ops).json()["status"] != "active":
        if time.monotonic() > deadline:
            raise TimeoutError(f"participants not activated: {identity.tail()}")
        time.sleep(0.2)
    return fleet


# -- verifying -------------------------------------------------------------------------------------


def bench_verify(seconds: float) -> None:
    private = Ed25519PrivateKey.generate()
    minter = minter_for("k-bench", private.private_bytes_raw())
    jwks = [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": DeviceKey("x", "p", private, {}).public_key,
            "kid": "k-bench",
            "use": "sig",
            "alg": "EdDSA",
        }
    ]
    keyset = KeySet.from_jwks(jwks)
    now = int(time.time())
    tokens = [
        minter.threshold(
            f"th-{i}",
            f"p-{i % 50}",
            f"m-{i}",
            "MP",
            ["ask", "bid"],
            Limits(10**5, 10**6, 10**7),
            now,
            900,
        )
        for i in range(1000)
    ]
    plain = TokenVerifier(lambda: keyset)

    folder = Path(tempfile.mkdtemp(prefix="identity-verify-"))
    engine = create_store_engine(f"sqlite:///{folder / 'trust.db'}", pool_size=8)
    platform_tables.create_all(engine)
    trust_tables.create_all(engine)
    trust = SqlTrustStore(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(trusted_keys).values(
                id="current",
                jwks=orjson.dumps(jwks).decode(),
                active_kid="k-bench",
                updated_at=utc_now(),
            )
        )
        conn.execute(
            insert(participant_status),
            [
                {"participant_id": f"p-{i}", "status": "active", "updated_at": utc_now()}
                for i in range(50)
            ],
        )
        conn.execute(
            insert(revocations),
            [
                {
                    "kind": "threshold",
                    "credential_id": f"th-old-{i}",
                    "participant_id": "p-0",
                    "revoked_at": utc_now(),
                }
                for i in range(5_000)
            ],
        )
    with_trust = TokenVerifier(trust.keys, trust)

    for label, verifier in (("keys only", plain), ("trust store", with_trust)):
        for threads in (1, 2):

            def one(worker: int, _threads: int, n: int, verifier: TokenVerifier = verifier) -> None:
                token = tokens[(worker * 997 + n) % len(tokens)]
                verifier.threshold(token, "ask", order_wh=4_000, ecoin=900)

            total, elapsed = run_threads(threads, seconds, one)
            print(
                f"verify      {label:<12} threads={threads}  verifications={total:>7}  "
                f"{total / elapsed:>9,.0f} verifications/s",
                flush=True,
            )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; {PARTICIPANTS * DEVICES_PER_PARTICIPANT} devices")
    folder = Path(tempfile.mkdtemp(prefix="identity-bench-"))
    bench_application("sqlite", f"sqlite:///{folder / 'identity.db'}", args.seconds)
    with postgres_server() as server:
        if server is None:
            print("issue       postgresql  skipped: no server reachable")
        else:
            with server.database() as url:
                bench_application("postgresql", url, args.seconds)
    if not args.no_http:
        bench_http(args.seconds)
    bench_verify(args.seconds)


if __name__ == "__main__":
    main()
