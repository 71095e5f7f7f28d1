"""What the ledger is about, independent of any chain. Standard library only.

Amounts are exact integers of the smallest unit: energy in Wh (0.001 kWh, the ``energy``
asset's resolution) and ecoin in its unit of 1 (KRW in the Oh et al. paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ENERGY_ASSET = "energy"
ECOIN_ASSET = "ecoin"
ENERGY_DECIMALS = 3  # 1 energy unit on chain = 1 Wh = 0.001 kWh
ECOIN_DECIMALS = 0


class Permission(StrEnum):
    CONNECT = "connect"
    SEND = "send"
    RECEIVE = "receive"
    # The right to be minted energy (MultiChain: the producer's ``energy.issue`` grant).
    ISSUE_ENERGY = "energy.issue"


PARTICIPANT_PERMISSIONS = frozenset({Permission.CONNECT, Permission.SEND, Permission.RECEIVE})
PRODUCER_PERMISSIONS = PARTICIPANT_PERMISSIONS | {Permission.ISSUE_ENERGY}


class ReasonCode(StrEnum):
    """Stable reasons a ledger command failed; clients and other services branch on these."""

    INSUFFICIENT_ENERGY = "insufficient_energy"
    INSUFFICIENT_ECOIN = "insufficient_ecoin"
    PERMISSION_DENIED = "permission_denied"
    UNKNOWN_PARTICIPANT = "unknown_participant"
    UNKNOWN_ASSET = "unknown_asset"
    ALREADY_SETTLED = "already_settled"
    OFFER_TAKEN = "offer_taken"
    INVALID_COMMAND = "invalid_command"
    CHAIN_REJECTED = "chain_rejected"
    CHAIN_UNAVAILABLE = "chain_unavailable"


@dataclass(frozen=True, slots=True)
class SettlementTrade:
    """One matched trade: the seller's energy goes to the buyer, the buyer's ecoin to the
    seller, and the fee (also paid by the buyer) to the operator."""

    trade_id: str
    seller: str
    buyer: str
    energy_wh: int
    ecoin: int
    fee_ecoin: int = 0

    def __post_init__(self) -> None:
        if self.energy_wh <= 0:
            raise ValueError(f"trade {self.trade_id}: energy must be positive")
        if self.ecoin < 0 or self.fee_ecoin < 0:
            raise ValueError(f"trade {self.trade_id}: amounts cannot be negative")
        if self.seller == self.buyer:
            raise ValueError(f"trade {self.trade_id}: seller and buyer are the same")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A confirmed chain transaction."""

    tx_id: str
    block: int
    fee: int  # gas used on an EVM chain, the native fee on MultiChain (0 when free)


@dataclass(frozen=True, slots=True)
class BatchReceipt:
    receipt: Receipt
    settled: tuple[str, ...]  # trade ids settled by this transaction
    already_settled: tuple[str, ...]  # trade ids found settled before, left untouched


@dataclass(frozen=True, slots=True)
class Balances:
    energy_wh: int
    ecoin: int


class LedgerError(Exception):
    """A ledger operation failed; ``reason`` is stable, ``chain_message`` is the chain's text."""

    def __init__(
        self, reason: ReasonCode, chain_message: str, *, trade_id: str | None = None
    ) -> None:
        super().__init__(f"{reason}: {chain_message}")
        self.reason = reason
        self.chain_message = chain_message
        self.trade_id = trade_id
