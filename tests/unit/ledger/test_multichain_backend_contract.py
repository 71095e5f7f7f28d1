"""The MultiChain backend passes the backend contract, against the node that answers as the
recorded MultiChain 1.0.9 and 2.x nodes did (tests/support/multichain_node.py), driven through
the real Savoir client over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prosum_ledger.adapters.multichain.backend import MultiChainBackend
from prosum_ledger.adapters.multichain.config import MultiChainSettings
from tests.support.ledger_contract import ChainBackendContract
from tests.support.multichain_node import RecordedMultiChainNode


@pytest.fixture(params=["1.0.9", "2.x"])
def node(request: pytest.FixtureRequest) -> Iterator[RecordedMultiChainNode]:
    with RecordedMultiChainNode(version=request.param) as started:
        yield started


class TestMultiChainBackend(ChainBackendContract):
    @pytest.fixture
    def backend(self, node: RecordedMultiChainNode, tmp_path: Path) -> Iterator[MultiChainBackend]:
        backend = MultiChainBackend(
            MultiChainSettings(
                connection=node.connection(),
                state_path=tmp_path / "multichain-state.json",
                poll_interval_s=0.003,
                confirm_timeout_s=10.0,
            )
        )
        yield backend
        backend.close()


def test_the_adapter_reaches_a_multichain_node_by_configuration_alone(
    node: RecordedMultiChainNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prosum_ledger.adapters.chain_config import ChainSettings, build_backend

    connection = node.connection()
    monkeypatch.setenv("PROSUM_CHAIN_BACKEND", "multichain")
    monkeypatch.setenv("PROSUM_CHAIN_MULTICHAIN_HOST", connection.host)
    monkeypatch.setenv("PROSUM_CHAIN_MULTICHAIN_PORT", str(connection.port))
    monkeypatch.setenv("PROSUM_CHAIN_MULTICHAIN_USER", connection.user)
    monkeypatch.setenv("PROSUM_CHAIN_MULTICHAIN_PASSWORD", connection.password)
    monkeypatch.setenv("PROSUM_CHAIN_MULTICHAIN_CHAIN", connection.chain_name)
    backend = build_backend(ChainSettings(), "production", tmp_path)
    assert isinstance(backend, MultiChainBackend)
    try:
        backend.setup_assets()
        backend.register_participant("p-1")
        assert backend.balances("p-1").ecoin == 0
        assert backend.height() >= 1
    finally:
        backend.close()
    monkeypatch.delenv("PROSUM_CHAIN_MULTICHAIN_PASSWORD")
    with pytest.raises(ValueError, match="PASSWORD"):
        build_backend(ChainSettings(), "production", tmp_path)


def test_production_refuses_development_chain_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prosum_ledger.adapters.chain_config import ChainSettings, build_backend

    monkeypatch.setenv("PROSUM_CHAIN_BACKEND", "evm")
    with pytest.raises(ValueError, match="must be set"):
        build_backend(ChainSettings(), "production", tmp_path)
    monkeypatch.setenv("PROSUM_CHAIN_KEYSTORE_KEY", "x" * 44)
    monkeypatch.setenv(
        "PROSUM_CHAIN_EVM_OPERATOR_KEY",
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    )
    with pytest.raises(ValueError, match="well-known"):
        build_backend(ChainSettings(), "production", tmp_path)
    monkeypatch.setenv("PROSUM_CHAIN_BACKEND", "memory")
    with pytest.raises(ValueError, match="development"):
        build_backend(ChainSettings(), "production", tmp_path)
