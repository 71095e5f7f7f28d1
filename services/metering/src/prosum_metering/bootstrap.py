"""Wiring of the metering service: the one place where its parts meet the platform."""

from __future__ import annotations

from prosum_contracts.topics import IDENTITY_EVENTS
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts


def build(platform: Platform) -> ServiceParts:
    return ServiceParts(
        consumers=[
            ConsumerSpec(
                name="metering",
                subscription=Subscription(topics=(IDENTITY_EVENTS,), handlers={}),
            )
        ],
    )


DEFINITION = ServiceDefinition(
    name="metering",
    package="prosum_metering",
    title="prosum metering",
    description="Signed meter readings, per-interval import and export, verified surplus, reading batches and their Merkle roots.",
    default_port=8102,
    build=build,
)
