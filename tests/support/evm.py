"""An anvil node for the tests (one per session: anvil slows as its chain grows) and backend
configurations that deploy a fresh ledger contract on it, so tests share no ledger state."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from prosum_ledger.adapters.evm import (
    AnvilError,
    AnvilNode,
    EvmConfig,
    find_anvil,
    generate_encryption_key,
)


def anvil_or_skip() -> None:
    try:
        find_anvil(Path(__file__).resolve().parent)
    except AnvilError as exc:
        pytest.skip(str(exc))


def make_config(node: AnvilNode, folder: Path, **overrides: object) -> EvmConfig:
    settings: dict[str, object] = {
        "rpc_url": node.rpc_url,
        "chain_id": node.chain_id,
        # Gas is free on the dev chain, so a fresh, unfunded operator key works.
        "operator_private_key": "0x" + bytes(Account.create().key).hex(),
        "keystore_path": folder / "keys" / "participants.keys",
        "keystore_key": generate_encryption_key(),
    }
    settings.update(overrides)
    return EvmConfig(**settings)  # type: ignore[arg-type]
