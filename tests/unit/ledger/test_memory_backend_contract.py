"""The in-memory chain (the unit-test fake) passes the backend contract."""

from __future__ import annotations

import pytest

from prosum_ledger.adapters.memory import InMemoryChain
from tests.support.ledger_contract import ChainBackendContract


class TestInMemoryChain(ChainBackendContract):
    @pytest.fixture
    def backend(self) -> InMemoryChain:
        return InMemoryChain()
