"""The MultiChain backend of the ledger adapter, through Savoir as in the Oh et al. paper."""

from prosum_ledger.adapters.multichain.backend import MultiChainBackend
from prosum_ledger.adapters.multichain.config import MultiChainConnection, MultiChainSettings
from prosum_ledger.adapters.multichain.errors import (
    MultiChainAuthError,
    MultiChainError,
    MultiChainProtocolError,
    MultiChainRpcError,
    MultiChainUnavailable,
)
from prosum_ledger.adapters.multichain.rpc import MultiChainRpc

__all__ = [
    "MultiChainAuthError",
    "MultiChainBackend",
    "MultiChainConnection",
    "MultiChainError",
    "MultiChainProtocolError",
    "MultiChainRpc",
    "MultiChainRpcError",
    "MultiChainSettings",
    "MultiChainUnavailable",
]
