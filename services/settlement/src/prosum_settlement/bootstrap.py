"""Wiring of the settlement service: the one place where its parts meet the platform."""

from __future__ import annotations

from prosum_contracts.topics import LEDGER_EVENTS, ORDERBOOK_EVENTS
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts


def build(platform: Platform) -> ServiceParts:
    return ServiceParts(
        consumers=[
            ConsumerSpec(
                name="settlement",
                subscription=Subscription(
                    topics=(
                        ORDERBOOK_EVENTS,
                        LEDGER_EVENTS,
                    ),
                    handlers={},
                ),
            )
        ],
    )


DEFINITION = ServiceDefinition(
    name="settlement",
    package="prosum_settlement",
    title="prosum settlement",
    description="Settlement instructions and their life cycle, ecoin top-ups and payouts, fees, reconciliation.",
    default_port=8104,
    build=build,
)
