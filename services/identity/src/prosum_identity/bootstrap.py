"""Wiring of the identity service: the one place where its parts meet the platform."""

from __future__ import annotations

from prosum_contracts.topics import LEDGER_EVENTS
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts


def build(platform: Platform) -> ServiceParts:
    return ServiceParts(
        consumers=[
            ConsumerSpec(
                name="identity",
                subscription=Subscription(topics=(LEDGER_EVENTS,), handlers={}),
            )
        ],
    )


DEFINITION = ServiceDefinition(
    name="identity",
    package="prosum_identity",
    title="prosum identity",
    description="Participants, roles, devices (IDoT), registered DACTs, thresholds and access tokens: the certification node.",
    default_port=8101,
    build=build,
)
