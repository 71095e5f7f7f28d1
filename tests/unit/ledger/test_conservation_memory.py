"""Conservation and no-overspend for any command sequence, on the in-memory chain."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from prosum_ledger.adapters.memory import InMemoryChain
from tests.support.ledger_conservation import run_sequence, sequences


@settings(max_examples=150, deadline=None)
@given(sequences)
def test_any_sequence_conserves_energy_and_ecoin(ops: list[tuple[Any, ...]]) -> None:
    chain = InMemoryChain()
    chain.setup_assets()
    run_sequence(chain, ops)
