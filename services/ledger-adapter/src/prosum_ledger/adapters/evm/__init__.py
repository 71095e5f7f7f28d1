"""The EVM chain backend: the ProsumLedger contract, web3.py, a key store and an anvil launcher."""

from prosum_ledger.adapters.evm.anvil import AnvilError, AnvilNode, find_anvil, start_anvil
from prosum_ledger.adapters.evm.backend import EvmBackend, EvmConfig
from prosum_ledger.adapters.evm.keystore import KeyStore, KeyStoreError, generate_encryption_key

__all__ = [
    "AnvilError",
    "AnvilNode",
    "EvmBackend",
    "EvmConfig",
    "KeyStore",
    "KeyStoreError",
    "find_anvil",
    "generate_encryption_key",
    "start_anvil",
]
