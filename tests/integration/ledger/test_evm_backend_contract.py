"""The EVM backend passes the backend contract against a real anvil node."""

from __future__ import annotations

from pathlib import Path

import pytest

from prosum_ledger.adapters.evm import AnvilNode, EvmBackend
from tests.support.evm import make_config
from tests.support.ledger_contract import ChainBackendContract


class TestEvmBackendOnAnvil(ChainBackendContract):
    @pytest.fixture
    def backend(self, anvil: AnvilNode, tmp_path: Path) -> EvmBackend:
        return EvmBackend(make_config(anvil, tmp_path))
