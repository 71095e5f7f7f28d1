"""Conservation and no-overspend for random command sequences on the real chain (anvil)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from prosum_ledger.adapters.evm import AnvilNode, EvmBackend
from tests.support.evm import make_config
from tests.support.ledger_conservation import run_sequence, sequences


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=sequences)
def test_any_sequence_conserves_energy_and_ecoin_on_chain(
    anvil: AnvilNode, ops: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        chain = EvmBackend(make_config(anvil, Path(folder)))
        chain.setup_assets()
        run_sequence(chain, ops)
