"""Wiring of the metering service: the one place where its parts meet the platform."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import timedelta

import anyio.to_thread

from prosum_auth import TokenVerifier
from prosum_auth.trust import SqlTrustStore
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_EVENTS, ORDERBOOK_EVENTS
from prosum_metering.adapters.settings import MeteringSettings
from prosum_metering.adapters.signatures import PooledVerifier, build_verifier
from prosum_metering.adapters.store import read_view, unit_of_work
from prosum_metering.adapters.tables import tables
from prosum_metering.application.batches import BatchService
from prosum_metering.application.corrections import CorrectionService
from prosum_metering.application.ingest import IngestService
from prosum_metering.application.queries import DataService
from prosum_metering.entrypoints.consumers import metering_handlers
from prosum_metering.entrypoints.http import MeteringApi, build_router
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts

log = logging.getLogger(__name__)

SEALER_LEASE = "metering-sealer"

DESCRIPTION = (
    "Signed meter readings in, verified surplus out, data shared by hash. Devices send "
    "Ed25519-signed cumulative register readings (OBIS 1-0:1.8.0 import, 1-0:2.8.0 export) "
    "every 15 minutes; metering verifies them, measures each interval's import, export and "
    "net surplus, asks the ledger to mint the surplus once per metering point and interval, "
    "seals readings into Merkle-rooted batches anchored on chain, and serves readings by hash "
    "to their owner, their trade counterparties and ops. The reading format is described "
    "under `POST /v1/readings`."
)


def build(platform: Platform) -> ServiceParts:
    settings = MeteringSettings()
    store = platform.store
    trust = SqlTrustStore(platform.engine)
    verifier = build_verifier(settings.verify_workers)
    uow, view = unit_of_work(store), read_view(store)
    batches = BatchService(uow, time.time, max_leaves=settings.seal_max_leaves)
    api = MeteringApi(
        ingest=IngestService(uow, view, verifier, time.time, clock_skew_s=settings.clock_skew_s),
        data=DataService(view),
        batches=batches,
        corrections=CorrectionService(uow, time.time),
        verifier=TokenVerifier(trust.keys, trust),
        max_request_bytes=settings.max_request_bytes,
        max_readings=settings.max_readings_per_request,
    )

    async def seal_batches() -> None:
        await _run_sealer(platform, batches, settings.seal_interval_s)

    async def warm_verifier() -> None:
        if isinstance(verifier, PooledVerifier):
            await anyio.to_thread.run_sync(verifier.warm_up)

    async def close_verifier() -> None:
        await anyio.to_thread.run_sync(verifier.close)

    return ServiceParts(
        routers=[build_router(api)],
        consumers=[
            ConsumerSpec(
                name="metering",
                subscription=Subscription(
                    topics=(IDENTITY_EVENTS, ORDERBOOK_EVENTS, LEDGER_EVENTS),
                    handlers=metering_handlers(),
                ),
            )
        ],
        background=[seal_batches, warm_verifier],
        on_stop=[close_verifier],
        info={
            "verify_workers": getattr(verifier, "workers", 0),
            "seal_interval_s": settings.seal_interval_s,
        },
    )


async def _run_sealer(platform: Platform, batches: BatchService, interval_s: float) -> None:
    """Seal unsealed readings every ``interval_s``; one sealer per database holds the lease."""
    holder = f"{socket.gethostname()}:{os.getpid()}"
    ttl = timedelta(seconds=max(15.0, interval_s * 3))
    while True:
        await asyncio.sleep(interval_s)
        try:
            if not await anyio.to_thread.run_sync(
                platform.store.acquire_lease, SEALER_LEASE, holder, ttl
            ):
                continue
            sealed = await anyio.to_thread.run_sync(batches.seal_pending)
            if sealed:
                log.info("metering: sealed %d batch(es)", len(sealed))
        except Exception as exc:
            log.warning("metering: sealing failed (%s); retrying", exc)


DEFINITION = ServiceDefinition(
    name="metering",
    package="prosum_metering",
    title="prosum metering",
    description=DESCRIPTION,
    default_port=8102,
    build=build,
    tables=tables,
)
