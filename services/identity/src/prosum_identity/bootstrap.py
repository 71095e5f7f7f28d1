"""Wiring of the identity service: the one place where its parts meet the platform.

Nothing here touches the database at build time (``prosum-identity openapi`` builds the app on
an unmigrated store): the first signing key is made by the key upkeep task once the service
runs, and ``/ready`` says not ready until it exists.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from prosum_auth import TokenVerifier
from prosum_contracts.topics import LEDGER_EVENTS
from prosum_identity.adapters.crypto import (
    CryptographyEd25519,
    KeySealer,
    PublishedKeys,
    minter_for,
)
from prosum_identity.adapters.queries import IdentityQueries
from prosum_identity.adapters.settings import IdentitySettings, resolve_secrets
from prosum_identity.adapters.store import unit_of_work
from prosum_identity.adapters.tables import tables
from prosum_identity.application.clients import BootstrapClient, Clients
from prosum_identity.application.devices import Devices
from prosum_identity.application.keys import SigningKeys
from prosum_identity.application.participants import Participants
from prosum_identity.application.ports import Clock
from prosum_identity.application.thresholds import Thresholds
from prosum_identity.entrypoints.consumers import ledger_handlers
from prosum_identity.entrypoints.http import IdentityApi, routers
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def build(platform: Platform) -> ServiceParts:
    return build_identity(platform)


def build_identity(
    platform: Platform,
    settings: IdentitySettings | None = None,
    *,
    clock: Clock = utc_now,
) -> ServiceParts:
    """The service's parts; tests pass their own settings and clock."""
    settings = settings or IdentitySettings()
    runtime = platform.settings.runtime
    secrets = resolve_secrets(settings, runtime.environment, runtime.data_dir)
    policy = settings.policy()
    sealer = KeySealer(secrets.key_encryption_keys)
    uow = unit_of_work(platform.store, sealer)
    ed25519 = CryptographyEd25519()
    keys = SigningKeys(uow, clock, ed25519, minter_for, policy)
    verifier = TokenVerifier(
        PublishedKeys(keys.jwks),
        clock=lambda: clock().timestamp(),
        leeway_s=policy.verifier_leeway_s,
    )
    api = IdentityApi(
        participants=Participants(uow, clock, policy),
        devices=Devices(uow, clock),
        thresholds=Thresholds(uow, clock, ed25519, keys, policy),
        clients=Clients(
            uow,
            clock,
            keys,
            policy,
            BootstrapClient(secrets.ops_client_id, secrets.ops_client_secret),
        ),
        keys=keys,
        queries=IdentityQueries(platform.store),
        verifier=verifier,
        policy=policy,
        clock=clock,
    )

    async def key_upkeep() -> None:
        """Make the first key at first start; then activate and remove keys on time."""
        ready = False
        while True:
            try:
                if not ready:
                    if await anyio.to_thread.run_sync(keys.ensure):
                        log.info("identity: created the first signing key")
                    ready = True
                await anyio.to_thread.run_sync(keys.maintain)
            except Exception as exc:  # the database may not be there yet
                log.warning("identity: signing key upkeep failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(settings.key_maintenance_interval_s)

    async def signing_ready() -> tuple[bool, dict[str, Any]]:
        try:
            ring = await anyio.to_thread.run_sync(keys.ring)
        except Exception as exc:
            return False, {"error": f"{type(exc).__name__}: {exc}"}
        active = ring.active_at(clock()) if ring is not None else None
        if active is None:
            return False, {"error": "no signing key yet"}
        return True, {"active_kid": active.kid, "published": len(ring.published()) if ring else 0}

    return ServiceParts(
        routers=routers(api),
        consumers=[
            ConsumerSpec(
                name="identity",
                subscription=Subscription(
                    topics=(LEDGER_EVENTS,), handlers=ledger_handlers(sealer, clock)
                ),
            )
        ],
        readiness={"signing_keys": signing_ready},
        background=[key_upkeep],
        info={"token_url": "/oauth/token", "jwks_url": "/.well-known/jwks.json"},
    )


DEFINITION = ServiceDefinition(
    name="identity",
    package="prosum_identity",
    title="prosum identity",
    description="Participants, roles, devices (IDoT), registered DACTs, thresholds and access "
    "tokens: the certification node. Ops and partner systems authenticate with OAuth2 client "
    "credentials (POST /oauth/token); devices prove themselves with their Ed25519 key over a "
    "challenge and their DACT, and get thresholds (POST /thresholds) that every other service "
    "verifies offline with the keys at /.well-known/jwks.json. Refusals answer 4xx with "
    '{"detail": {"reason": <stable code>, "message": ...}}.',
    default_port=8101,
    build=build,
    tables=tables,
)
