"""The five services the embedded platform runs, and where each listens.

The CLI starts services by package name as separate processes; it never imports them, so the
command stays fast and does not depend on their code being importable in its own process.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_PORT = 8100
DEFAULT_KAFKA_PORT = 19092


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    package: str
    offset: int

    @property
    def default_port(self) -> int:
        return DEFAULT_BASE_PORT + self.offset

    def port(self, base_port: int) -> int:
        return base_port + self.offset


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("identity", "prosum_identity", 1),
    ServiceSpec("metering", "prosum_metering", 2),
    ServiceSpec("orderbook", "prosum_orderbook", 3),
    ServiceSpec("settlement", "prosum_settlement", 4),
    ServiceSpec("ledger-adapter", "prosum_ledger", 5),
)

SERVICE_NAMES: tuple[str, ...] = tuple(spec.name for spec in SERVICES)
