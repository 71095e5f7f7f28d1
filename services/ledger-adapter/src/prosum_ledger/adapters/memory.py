"""An in-memory chain with the semantics every backend must have.

It is the fake for unit tests of the ledger adapter's application code, and it passes the same
backend contract suite as the EVM and MultiChain backends, so tests that use it test what the
real chains do.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from prosum_ledger.domain.model import (
    Balances,
    BatchReceipt,
    LedgerError,
    Permission,
    ReasonCode,
    Receipt,
    SettlementTrade,
)


class InMemoryChain:
    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assets = False
        self._height = 0
        self._addresses: dict[str, str] = {}
        self._permissions: dict[str, set[Permission]] = {}
        self._energy: dict[str, int] = {}
        self._ecoin: dict[str, int] = {}
        self._supply = Balances(0, 0)
        self._commands: dict[str, Receipt] = {}
        self._settled: set[str] = set()
        self._anchors: dict[str, Receipt] = {}
        self._batches: dict[str, BatchReceipt] = {}

    # -- helpers ---------------------------------------------------------------------------
    def _receipt(self, command_id: str) -> Receipt:
        self._height += 1
        tx = hashlib.sha256(f"{command_id}:{self._height}".encode()).hexdigest()
        receipt = Receipt(tx_id=f"0x{tx}", block=self._height, fee=0)
        self._commands[command_id] = receipt
        return receipt

    def _known(self, participant_id: str) -> None:
        if participant_id not in self._addresses:
            raise LedgerError(
                ReasonCode.UNKNOWN_PARTICIPANT, f"no chain address for {participant_id}"
            )

    def _require(self, participant_id: str, permission: Permission, what: str) -> None:
        self._known(participant_id)
        if permission not in self._permissions[participant_id]:
            raise LedgerError(
                ReasonCode.PERMISSION_DENIED,
                f"{participant_id} lacks {permission.value} permission ({what})",
            )

    def _assets_ready(self) -> None:
        if not self._assets:
            raise LedgerError(ReasonCode.UNKNOWN_ASSET, "assets energy and ecoin not set up")

    # -- ChainBackend ------------------------------------------------------------------------
    def setup_assets(self) -> Receipt | None:
        with self._lock:
            if self._assets:
                return None
            self._assets = True
            return self._receipt("setup-assets")

    def register_participant(self, participant_id: str) -> str:
        with self._lock:
            if participant_id not in self._addresses:
                digest = hashlib.sha256(participant_id.encode()).hexdigest()[:40]
                self._addresses[participant_id] = f"0x{digest}"
                self._permissions[participant_id] = set()
                self._energy[participant_id] = 0
                self._ecoin[participant_id] = 0
            return self._addresses[participant_id]

    def grant(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt:
        with self._lock:
            if command_id in self._commands:
                return self._commands[command_id]
            self._known(participant_id)
            self._permissions[participant_id] |= permissions
            return self._receipt(command_id)

    def revoke(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt:
        with self._lock:
            if command_id in self._commands:
                return self._commands[command_id]
            self._known(participant_id)
            self._permissions[participant_id] -= permissions
            return self._receipt(command_id)

    def permissions(self, participant_id: str) -> frozenset[Permission]:
        with self._lock:
            self._known(participant_id)
            return frozenset(self._permissions[participant_id])

    def mint_energy(
        self, command_id: str, participant_id: str, amount_wh: int, evidence_hash: str
    ) -> Receipt:
        with self._lock:
            if command_id in self._commands:
                return self._commands[command_id]
            self._assets_ready()
            _positive(amount_wh)
            self._require(participant_id, Permission.RECEIVE, "receive minted energy")
            self._require(participant_id, Permission.ISSUE_ENERGY, "receive minted energy")
            self._energy[participant_id] += amount_wh
            self._supply = Balances(self._supply.energy_wh + amount_wh, self._supply.ecoin)
            return self._receipt(command_id)

    def mint_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt:
        with self._lock:
            if command_id in self._commands:
                return self._commands[command_id]
            self._assets_ready()
            _positive(amount)
            self._require(participant_id, Permission.RECEIVE, "receive ecoin")
            self._ecoin[participant_id] += amount
            self._supply = Balances(self._supply.energy_wh, self._supply.ecoin + amount)
            return self._receipt(command_id)

    def burn_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt:
        with self._lock:
            if command_id in self._commands:
                return self._commands[command_id]
            self._assets_ready()
            _positive(amount)
            self._require(participant_id, Permission.SEND, "burn ecoin")
            if self._ecoin[participant_id] < amount:
                raise LedgerError(
                    ReasonCode.INSUFFICIENT_ECOIN,
                    f"{participant_id} has {self._ecoin[participant_id]}, burning {amount}",
                )
            self._ecoin[participant_id] -= amount
            self._supply = Balances(self._supply.energy_wh, self._supply.ecoin - amount)
            return self._receipt(command_id)

    def settle_batch(
        self, command_id: str, trades: Sequence[SettlementTrade], fee_account: str
    ) -> BatchReceipt:
        with self._lock:
            if command_id in self._batches:
                return self._batches[command_id]
            self._assets_ready()
            energy = dict(self._energy)
            ecoin = dict(self._ecoin)
            settled: list[str] = []
            skipped: list[str] = []
            self._require(fee_account, Permission.RECEIVE, "receive fees")
            for trade in trades:
                if trade.trade_id in self._settled or trade.trade_id in settled:
                    skipped.append(trade.trade_id)
                    continue
                try:
                    self._require(trade.seller, Permission.SEND, "sell energy")
                    self._require(trade.seller, Permission.RECEIVE, "be paid")
                    self._require(trade.buyer, Permission.SEND, "pay ecoin")
                    self._require(trade.buyer, Permission.RECEIVE, "receive energy")
                except LedgerError as error:
                    raise LedgerError(
                        error.reason, error.chain_message, trade_id=trade.trade_id
                    ) from None
                if energy[trade.seller] < trade.energy_wh:
                    raise LedgerError(
                        ReasonCode.INSUFFICIENT_ENERGY,
                        f"{trade.seller} has {energy[trade.seller]} Wh, selling {trade.energy_wh}",
                        trade_id=trade.trade_id,
                    )
                cost = trade.ecoin + trade.fee_ecoin
                if ecoin[trade.buyer] < cost:
                    raise LedgerError(
                        ReasonCode.INSUFFICIENT_ECOIN,
                        f"{trade.buyer} has {ecoin[trade.buyer]} ecoin, paying {cost}",
                        trade_id=trade.trade_id,
                    )
                energy[trade.seller] -= trade.energy_wh
                energy[trade.buyer] += trade.energy_wh
                ecoin[trade.buyer] -= cost
                ecoin[trade.seller] += trade.ecoin
                ecoin[fee_account] += trade.fee_ecoin
                settled.append(trade.trade_id)
            self._energy, self._ecoin = energy, ecoin
            self._settled.update(settled)
            batch = BatchReceipt(self._receipt(command_id), tuple(settled), tuple(skipped))
            self._batches[command_id] = batch
            return batch

    def anchor(self, command_id: str, root: str, reference: str) -> Receipt:
        with self._lock:
            if command_id in self._commands:
                return self._commands[command_id]
            key = root.lower().removeprefix("0x")
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                raise LedgerError(ReasonCode.INVALID_COMMAND, f"not a 32-byte hex hash: {root}")
            receipt = self._receipt(command_id)
            self._anchors.setdefault(key, receipt)
            return receipt

    def anchored(self, root: str) -> Receipt | None:
        with self._lock:
            return self._anchors.get(root.lower().removeprefix("0x"))

    def is_settled(self, trade_id: str) -> bool:
        with self._lock:
            return trade_id in self._settled

    def balances(self, participant_id: str) -> Balances:
        """Zero for an id the chain has never seen, as on the real chains."""
        with self._lock:
            return Balances(self._energy.get(participant_id, 0), self._ecoin.get(participant_id, 0))

    def balances_many(self, participant_ids: Sequence[str]) -> dict[str, Balances]:
        return {p: self.balances(p) for p in participant_ids}

    def total_supply(self) -> Balances:
        with self._lock:
            return self._supply

    def height(self) -> int:
        with self._lock:
            return self._height

    def find_command(self, command_id: str) -> Receipt | None:
        with self._lock:
            return self._commands.get(command_id)


def _positive(amount: int) -> None:
    if amount <= 0:
        raise LedgerError(ReasonCode.INVALID_COMMAND, f"amount must be positive, got {amount}")
