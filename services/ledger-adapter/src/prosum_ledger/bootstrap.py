"""Wiring of the ledger adapter: the one place where its parts meet the platform."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta
from typing import Any

import anyio.to_thread

from prosum_contracts import Envelope
from prosum_contracts.topics import LEDGER_COMMANDS
from prosum_ledger.adapters.chain_config import ChainSettings, build_backend
from prosum_ledger.adapters.store import SqlCommandLog, tables, unit_of_work
from prosum_ledger.application.commands import CommandExecutor, accept_command
from prosum_ledger.application.ports import ChainBackend
from prosum_ledger.domain.commands import CommandKind
from prosum_platform.eventstore import Transaction
from prosum_platform.faults import crash_point
from prosum_platform.messaging import EventHandler, Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts

log = logging.getLogger(__name__)

EXECUTOR_LEASE = "ledger-executor"


def _accept(kind: CommandKind, backend: str) -> EventHandler:
    def handle(envelope: Envelope, tx: Transaction) -> None:
        outcome = accept_command(SqlCommandLog(tx), kind, envelope.data, envelope.source, backend)
        if not outcome.accepted:
            log.info(
                "ledger: command %s not queued: %s", envelope.data["command_id"], outcome.reason
            )

    return handle


def build(platform: Platform) -> ServiceParts:
    settings = ChainSettings()
    backend = build_backend(
        settings, platform.settings.runtime.environment, platform.settings.runtime.data_dir
    )
    backend_name = backend.name if backend is not None else "none"
    handlers = {kind.value: _accept(kind, backend_name) for kind in CommandKind}
    parts = ServiceParts(
        consumers=[
            ConsumerSpec(
                name="ledger-adapter", subscription=Subscription((LEDGER_COMMANDS,), handlers)
            )
        ],
        readiness={"chain": lambda: _chain_status(backend)},
        info={"chain_backend": settings.backend},
    )
    if backend is not None:
        executor = CommandExecutor(
            unit_of_work(platform.store),
            backend,
            after_submit=lambda: crash_point("ledger.after_submit"),
        )
        parts.background.append(lambda: _run_executor(platform, backend, executor))
    return parts


async def _run_executor(
    platform: Platform, backend: ChainBackend, executor: CommandExecutor
) -> None:
    """Execute open commands; one executor per ledger database holds the lease."""
    holder = f"{socket.gethostname()}:{os.getpid()}"
    ttl = timedelta(seconds=15)
    assets_ready = False
    while True:
        try:
            if not await anyio.to_thread.run_sync(
                platform.store.acquire_lease, EXECUTOR_LEASE, holder, ttl
            ):
                await asyncio.sleep(2.0)
                continue
            if not assets_ready:
                await anyio.to_thread.run_sync(backend.setup_assets)
                assets_ready = True
            ended = await anyio.to_thread.run_sync(executor.run_open, 200)
        except Exception as exc:
            log.warning("ledger: executor round failed (%s); retrying", exc)
            await asyncio.sleep(1.0)
            continue
        if ended == 0:
            # An idle poll is one indexed SELECT; it keeps command-to-chain latency low.
            await asyncio.sleep(0.05)


async def _chain_status(backend: ChainBackend | None) -> tuple[bool, dict[str, Any]]:
    if backend is None:
        return True, {"status": "not_configured", "detail": "no chain backend configured"}
    try:
        height = await asyncio.wait_for(anyio.to_thread.run_sync(backend.height), 3.0)
    except Exception as exc:
        return False, {"backend": backend.name, "error": f"{type(exc).__name__}: {exc}"}
    return True, {"backend": backend.name, "status": "connected", "height": height}


DEFINITION = ServiceDefinition(
    name="ledger-adapter",
    package="prosum_ledger",
    title="prosum ledger adapter",
    description="The only door to the chain: executes ledger commands and reports what the chain did.",
    default_port=8105,
    build=build,
    tables=tables,
)
