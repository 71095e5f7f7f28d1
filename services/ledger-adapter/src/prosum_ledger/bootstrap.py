"""Wiring of the ledger-adapter service: the one place where its parts meet the platform."""

from __future__ import annotations

from typing import Any

from prosum_contracts.topics import LEDGER_COMMANDS
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts


def build(platform: Platform) -> ServiceParts:
    return ServiceParts(
        consumers=[
            ConsumerSpec(
                name="ledger-adapter",
                subscription=Subscription(topics=(LEDGER_COMMANDS,), handlers={}),
            )
        ],
        readiness={"chain": _chain_status},
    )


DEFINITION = ServiceDefinition(
    name="ledger-adapter",
    package="prosum_ledger",
    title="prosum ledger adapter",
    description="The only door to the chain: executes ledger commands and reports what the chain did.",
    default_port=8105,
    build=build,
)


async def _chain_status() -> tuple[bool, dict[str, Any]]:
    # No chain backend is wired in yet: the adapter consumes ledger commands but cannot
    # execute them, and says so here rather than pretending a chain is there.
    return True, {"status": "not_configured", "detail": "no chain backend configured"}
