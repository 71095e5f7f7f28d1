"""How to reach a MultiChain node, and how the backend behaves on it.

Everything a real node needs is here (host, port, RPC user and password, chain name), so the
backend moves from the recorded test node to a real one by configuration alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class MultiChainConnection:
    """The node's JSON-RPC endpoint. The password never appears in ``repr``.

    ``port`` may be given as an int or a numeric string; Savoir needs a string and raises a
    ``TypeError`` deep inside a call on an int, so it is normalised here once.
    """

    host: str
    port: int | str
    user: str
    password: str = field(repr=False)
    chain_name: str
    timeout_s: float = 30.0  # per RPC call; Savoir itself would wait forever

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError("the MultiChain host must not be empty")
        if not self.chain_name.strip():
            raise ValueError("the MultiChain chain name must not be empty")
        try:
            port = int(self.port)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"the MultiChain RPC port must be a number, not {self.port!r}"
            ) from exc
        if not 0 < port < 65536:
            raise ValueError(f"the MultiChain RPC port {port} is out of range")
        object.__setattr__(self, "port", port)
        if self.timeout_s <= 0:
            raise ValueError("the RPC timeout must be positive")

    @property
    def rpc_port(self) -> str:
        return str(self.port)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, prefix: str = "PROSUM_MULTICHAIN_"
    ) -> MultiChainConnection:
        """Read ``{prefix}HOST``, ``PORT``, ``USER``, ``PASSWORD``, ``CHAIN`` and optional
        ``TIMEOUT_S`` (the values a node writes to ``~/.multichain/<chain>/multichain.conf``)."""
        env = os.environ if environ is None else environ
        missing = [
            name for name in ("PORT", "USER", "PASSWORD", "CHAIN") if not env.get(prefix + name)
        ]
        if missing:
            raise ValueError("missing settings: " + ", ".join(prefix + name for name in missing))
        return cls(
            host=env.get(prefix + "HOST", "127.0.0.1"),
            port=env[prefix + "PORT"],
            user=env[prefix + "USER"],
            password=env[prefix + "PASSWORD"],
            chain_name=env[prefix + "CHAIN"],
            timeout_s=float(env.get(prefix + "TIMEOUT_S", "30")),
        )


@dataclass(frozen=True, slots=True)
class MultiChainSettings:
    """The backend's settings on top of the connection.

    ``state_path`` is a small JSON file holding what the chain cannot tell us: which wallet
    address belongs to which participant, and the commands in flight (so a restart can
    reconcile them with the chain before anything is sent again).
    """

    connection: MultiChainConnection
    state_path: Path
    # The address that issues assets and publishes records; default: the node's first address,
    # which on the node that created the chain is the genesis admin (as in the paper).
    admin_address: str | None = None
    stream: str = "prosum-commands"
    confirmations: int = 1
    confirm_timeout_s: float = 60.0
    poll_interval_s: float = 0.1
    # Settle a lone trade without fee through the paper's exchange calls; batches, and trades
    # with a fee (which an exchange has no leg for), always go as one raw transaction.
    exchange_for_single_trade: bool = True
    # Balances count unconfirmed outputs: every transaction here is the node's own, and the
    # backend waits for confirmation before it reports a command done anyway.
    balance_minconf: int = 0

    def __post_init__(self) -> None:
        if self.confirmations < 1:
            raise ValueError("confirmations must be at least 1: a receipt names its block")
        if self.confirm_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ValueError("timeouts and poll intervals must be positive")
        if not self.stream:
            raise ValueError("the command stream needs a name")
