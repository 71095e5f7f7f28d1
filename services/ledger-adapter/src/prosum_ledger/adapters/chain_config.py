"""Which chain the ledger adapter talks to, and with which keys.

``PROSUM_CHAIN_BACKEND`` picks the backend: ``evm`` (any EVM JSON-RPC node; anvil in
development), ``multichain`` (a MultiChain node through Savoir, as in the Oh et al. paper) or
``none`` (commands are kept until a chain is configured). In development, keys that are not
configured are generated once and kept in the data folder; outside development they must be
given, and the well-known development keys are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from eth_account import Account
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from prosum_ledger.adapters.evm import EvmBackend, EvmConfig, generate_encryption_key
from prosum_ledger.adapters.memory import InMemoryChain
from prosum_ledger.adapters.multichain.backend import MultiChainBackend
from prosum_ledger.adapters.multichain.config import MultiChainConnection, MultiChainSettings
from prosum_ledger.application.ports import ChainBackend

# anvil's and hardhat's first accounts: public knowledge, never acceptable outside development.
WELL_KNOWN_DEV_KEYS = frozenset(
    {
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    }
)


class ChainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_CHAIN_", extra="ignore")

    backend: Literal["none", "evm", "multichain", "memory"] = "none"
    keystore_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting participant keys at rest"
    )
    evm_rpc_url: str = "http://127.0.0.1:18545"
    evm_chain_id: int = Field(default=31337, ge=1)
    evm_operator_key: SecretStr | None = None
    evm_contract_address: str | None = None
    multichain_host: str = "127.0.0.1"
    multichain_port: int = Field(default=4770, ge=1, le=65535)
    multichain_user: str = "multichainrpc"
    multichain_password: SecretStr | None = None
    multichain_chain: str = "prosum"


def _dev_secrets(folder: Path) -> dict[str, str]:
    """Development keys, made once and kept (mode 0600) so a restart finds its chain state."""
    path = folder / "dev-secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    folder.mkdir(parents=True, exist_ok=True)
    secrets = {
        "evm_operator_key": "0x" + bytes(Account.create().key).hex(),
        "keystore_key": generate_encryption_key(),
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(secrets, handle)
    return secrets


def build_backend(settings: ChainSettings, environment: str, data_dir: Path) -> ChainBackend | None:
    """The configured backend, or None when no chain is configured."""
    folder = data_dir / "ledger"
    development = environment != "production"
    if settings.backend == "none":
        return None
    if settings.backend == "memory":
        if not development:
            raise ValueError("the in-memory chain is for development and tests only")
        return InMemoryChain()
    dev = _dev_secrets(folder) if development else {}
    keystore_key = _secret(settings.keystore_key) or dev.get("keystore_key")
    if settings.backend == "evm":
        operator = _secret(settings.evm_operator_key) or dev.get("evm_operator_key")
        if not operator or not keystore_key:
            raise ValueError(
                "PROSUM_CHAIN_EVM_OPERATOR_KEY and PROSUM_CHAIN_KEYSTORE_KEY must be set"
            )
        if not development and operator.lower() in WELL_KNOWN_DEV_KEYS:
            raise ValueError("a well-known development key cannot be the operator key")
        return EvmBackend(
            EvmConfig(
                rpc_url=settings.evm_rpc_url,
                chain_id=settings.evm_chain_id,
                operator_private_key=operator,
                keystore_path=folder / "keys" / "participants.keys",
                keystore_key=keystore_key,
                contract_address=settings.evm_contract_address,
            )
        )
    password = _secret(settings.multichain_password)
    if not password:
        raise ValueError("PROSUM_CHAIN_MULTICHAIN_PASSWORD must be set")
    return MultiChainBackend(
        MultiChainSettings(
            connection=MultiChainConnection(
                host=settings.multichain_host,
                port=settings.multichain_port,
                user=settings.multichain_user,
                password=password,
                chain_name=settings.multichain_chain,
            ),
            state_path=folder / "multichain-state.json",
        )
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
