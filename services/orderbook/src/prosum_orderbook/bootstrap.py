"""Wiring of the orderbook service: the one place where its parts meet the platform."""

from __future__ import annotations

from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_EVENTS, SETTLEMENT_EVENTS
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts


def build(platform: Platform) -> ServiceParts:
    return ServiceParts(
        consumers=[
            ConsumerSpec(
                name="orderbook",
                subscription=Subscription(
                    topics=(
                        IDENTITY_EVENTS,
                        LEDGER_EVENTS,
                        SETTLEMENT_EVENTS,
                    ),
                    handlers={},
                ),
            )
        ],
    )


DEFINITION = ServiceDefinition(
    name="orderbook",
    package="prosum_orderbook",
    title="prosum orderbook",
    description="Markets per delivery interval, orders, continuous matching and call auctions, trades and reservations.",
    default_port=8103,
    build=build,
)
