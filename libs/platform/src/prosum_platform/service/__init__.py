"""The shared runtime of a prosum service: wiring, HTTP app, background workers, CLI."""

from prosum_platform.service.runtime import (
    ConsumerSpec,
    Platform,
    ServiceDefinition,
    ServiceParts,
    ServiceRuntime,
    build_platform,
    create_app,
)

__all__ = [
    "ConsumerSpec",
    "Platform",
    "ServiceDefinition",
    "ServiceParts",
    "ServiceRuntime",
    "build_platform",
    "create_app",
]
