"""The five services the embedded platform runs, and where each listens.

The CLI starts services by package name as separate processes; it never imports them, so the
command stays fast and does not depend on their code being importable in its own process.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_PORT = 8100
DEFAULT_KAFKA_PORT = 19092
DEFAULT_CHAIN_PORT = 18545

# The development chain: anvil, run by the ledger adapter's launcher with its state in a folder
# of the data dir. It always listens on the loopback interface.
CHAIN_MODULE = "prosum_ledger.entrypoints.devchain"
CHAIN_HOST = "127.0.0.1"
DEV_CHAIN_ID = 31337


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    package: str
    offset: int
    uses_chain: bool = False
    """Gets the development chain's address in its environment."""

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
    ServiceSpec("ledger-adapter", "prosum_ledger", 5, uses_chain=True),
)

SERVICE_NAMES: tuple[str, ...] = tuple(spec.name for spec in SERVICES)
