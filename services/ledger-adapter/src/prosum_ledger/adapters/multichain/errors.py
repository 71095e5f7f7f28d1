"""Typed errors for a MultiChain node, and the ledger reason code each one stands for.

Savoir does not raise on an RPC error: it hands back the whole ``{"result": null, "error":
{"code", "message"}, "id"}`` envelope. The RPC wrapper turns that envelope into one of the
classes below with :func:`rpc_error`, so callers branch on a type, not on message text.

Classification goes by meaning rather than by code alone, because MultiChain reuses codes:
-707 says "input already spent" for a taken offer but also "Address doesn't have send
permission" for a revoked offerer, and -26 carries both "bad-txns-inputs-spent" (a second taker)
and "mismatch in input/output quantities" (a malformed exchange). Every code and message recorded
in ``MULTICHAIN_RPC.md`` (both the 1.0.9 and the 2.x wording) has a row in the unit tests.
"""

from __future__ import annotations

from typing import ClassVar

from prosum_ledger.domain.model import ECOIN_ASSET, ENERGY_ASSET, LedgerError, ReasonCode


class MultiChainError(Exception):
    """Anything that went wrong between this adapter and a MultiChain node."""

    reason_code: ClassVar[ReasonCode] = ReasonCode.CHAIN_REJECTED

    def reason(self, asset: str | None = None) -> ReasonCode:
        """The stable ledger reason; ``asset`` is the asset the failed call was moving."""
        del asset
        return self.reason_code

    @property
    def chain_message(self) -> str:
        return str(self)

    def to_ledger_error(
        self, *, asset: str | None = None, trade_id: str | None = None
    ) -> LedgerError:
        return LedgerError(self.reason(asset), self.chain_message, trade_id=trade_id)


class MultiChainUnavailable(MultiChainError):
    """The node could not be reached, or did not answer in time.

    ``delivered`` is True when the request may have reached the node (the answer timed out):
    whatever it asked for may have happened, so the caller must reconcile before retrying.
    """

    reason_code = ReasonCode.CHAIN_UNAVAILABLE

    def __init__(self, message: str, *, delivered: bool) -> None:
        super().__init__(message)
        self.delivered = delivered


class MultiChainAuthError(MultiChainError):
    """The node refused the RPC credentials (HTTP 401 with an HTML body).

    Savoir surfaces this as a ``JSONDecodeError`` from parsing that HTML; the chain is out of
    reach for this adapter until its configuration is fixed, hence ``chain_unavailable``.
    """

    reason_code = ReasonCode.CHAIN_UNAVAILABLE


class MultiChainProtocolError(MultiChainError):
    """The node answered, but not in the shape this adapter was written against."""


class MultiChainRpcError(MultiChainError):
    """The node answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, method: str) -> None:
        super().__init__(f"{method}: {message} (MultiChain error {code})")
        self.code = code
        self.message = message
        self.method = method

    @property
    def chain_message(self) -> str:
        return f"{self.message} (MultiChain error {self.code} from {self.method})"


class InsufficientFunds(MultiChainRpcError):
    """-6 ``Insufficient funds`` (2.x adds a full stop): the address cannot cover the amount."""

    def reason(self, asset: str | None = None) -> ReasonCode:
        if asset == ENERGY_ASSET:
            return ReasonCode.INSUFFICIENT_ENERGY
        if asset == ECOIN_ASSET:
            return ReasonCode.INSUFFICIENT_ECOIN
        # The node does not say which asset fell short; without the caller's hint neither can we.
        return ReasonCode.CHAIN_REJECTED


class PermissionDenied(MultiChainRpcError):
    """-704, and -707 ``Address doesn't have send permission``: a send, receive or issue right
    is missing."""

    reason_code = ReasonCode.PERMISSION_DENIED


class InputsUnavailable(MultiChainRpcError):
    """The outputs a transaction spends are gone: taken by another party, withdrawn, or not
    (yet) known to this node. For an exchange this means the offer was taken."""

    reason_code = ReasonCode.OFFER_TAKEN


class AlreadyInChain(MultiChainRpcError):
    """-27 ``transaction already in block chain``: this exact transaction is confirmed, so a
    resend is a success, not a failure."""

    reason_code = ReasonCode.ALREADY_SETTLED


class UnknownEntity(MultiChainRpcError):
    """-708: no asset (or stream) of that name on this chain."""

    reason_code = ReasonCode.UNKNOWN_ASSET


class TransactionNotFound(MultiChainRpcError):
    """-710 ``No information available about transaction``."""

    reason_code = ReasonCode.INVALID_COMMAND


class InvalidRequest(MultiChainRpcError):
    """Malformed input the node could not parse: bad hex (-1, -22), bad parameters."""

    reason_code = ReasonCode.INVALID_COMMAND


class MethodNotFound(MultiChainRpcError):
    """-32601: the node does not offer this call, so it runs a version this adapter does not
    support. Retrying will not help, but the command itself was fine: ``chain_rejected``."""


class NodeNotReady(MultiChainRpcError):
    """-28 (inherited from Bitcoin Core): the node is still loading its chain."""

    reason_code = ReasonCode.CHAIN_UNAVAILABLE


# Codes whose meaning is fixed whatever the message says.
_BY_CODE: dict[int, type[MultiChainRpcError]] = {
    -6: InsufficientFunds,
    -704: PermissionDenied,
    # -707 and -715 are what MultiChain answers about exchange inputs; -25 is Bitcoin Core's
    # "Missing inputs" from sendrawtransaction (assumed to survive in MultiChain, not recorded).
    -707: InputsUnavailable,
    -715: InputsUnavailable,
    -25: InputsUnavailable,
    -27: AlreadyInChain,
    -708: UnknownEntity,
    -710: TransactionNotFound,
    -32601: MethodNotFound,
    -28: NodeNotReady,
    # Bitcoin Core's parse and parameter errors, which MultiChain keeps: misc error (how
    # 1.0.9 reports a truncated hex stream), type error, invalid address, invalid parameter,
    # deserialization error, and the JSON-RPC request-level errors.
    -1: InvalidRequest,
    -3: InvalidRequest,
    -5: InvalidRequest,
    -8: InvalidRequest,
    -22: InvalidRequest,
    -32600: InvalidRequest,
    -32602: InvalidRequest,
    -32700: InvalidRequest,
}

# Messages that mean "the inputs are gone" under -707, -715, -26 and Bitcoin's -25.
_SPENT_MARKERS = (
    "input already spent",
    "bad-txns-inputs-spent",
    "missing inputs",
    "conflicts with in-memory transactions",
)


def rpc_error(code: int, message: str, method: str) -> MultiChainRpcError:
    """The typed error for a JSON-RPC error the node returned."""
    text = message.lower()
    kind: type[MultiChainRpcError]
    if "permission" in text:
        # Before the code table: -707 also reports a revoked send permission.
        kind = PermissionDenied
    elif code == -6 or text.startswith("insufficient funds"):
        kind = InsufficientFunds
    elif code == -27 or "already in block chain" in text:
        kind = AlreadyInChain
    elif any(marker in text for marker in _SPENT_MARKERS):
        kind = InputsUnavailable
    elif code in _BY_CODE:
        kind = _BY_CODE[code]
    else:
        # -26 "mismatch in input/output quantities" and whatever else a node rejects.
        kind = MultiChainRpcError
    return kind(code, message, method)
