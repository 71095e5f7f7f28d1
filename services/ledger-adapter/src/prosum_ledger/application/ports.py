"""The chain port: what the ledger adapter needs from any chain backend.

Every backend (EVM through web3, MultiChain through Savoir) passes the same contract test
suite. Participants are named by their prosum participant id; the backend maps each one to a
chain address whose key it holds. Operations are idempotent by ``command_id``: a command the
chain already executed is not executed again, and ``find_command`` tells what the chain recorded
for it, so an adapter that crashed after submitting can reconcile before retrying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prosum_ledger.domain.model import (
    Balances,
    BatchReceipt,
    Permission,
    Receipt,
    SettlementTrade,
)


class ChainBackend(Protocol):
    name: str

    def setup_assets(self) -> Receipt | None:
        """Register ``energy`` and ``ecoin`` on a new chain; None when they already exist."""
        ...

    def register_participant(self, participant_id: str) -> str:
        """Create (or return) the chain address of a participant; keys stay in the backend."""
        ...

    def grant(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt: ...

    def revoke(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt: ...

    def permissions(self, participant_id: str) -> frozenset[Permission]: ...

    def mint_energy(
        self, command_id: str, participant_id: str, amount_wh: int, evidence_hash: str
    ) -> Receipt: ...

    def mint_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt: ...

    def burn_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt: ...

    def settle_batch(
        self,
        command_id: str,
        trades: Sequence[SettlementTrade],
        fee_account: str,
    ) -> BatchReceipt:
        """All trades or none. Trades settled earlier are skipped and reported as such.

        Raises LedgerError with ``trade_id`` set to the first trade that cannot settle.
        """
        ...

    def anchor(self, command_id: str, root: str, reference: str) -> Receipt:
        """Record a 32-byte hex hash (a Merkle root) on chain."""
        ...

    def anchored(self, root: str) -> Receipt | None: ...

    def is_settled(self, trade_id: str) -> bool: ...

    def balances(self, participant_id: str) -> Balances: ...

    def balances_many(self, participant_ids: Sequence[str]) -> dict[str, Balances]:
        """Balances of many participants at once (one round trip where the chain allows)."""
        ...

    def total_supply(self) -> Balances: ...

    def height(self) -> int: ...

    def find_command(self, command_id: str) -> Receipt | None:
        """The confirmed transaction that executed ``command_id``, if the chain has one."""
        ...
