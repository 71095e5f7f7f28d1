"""The EVM chain backend: the ProsumLedger contract on any EVM JSON-RPC node, through web3.py.

How prosum's names become chain values:
- a command id and a trade id become ``keccak256(utf8(id))``: fixed 32 bytes whatever the id's
  form, and the same on every retry;
- a participant id becomes an address whose key is generated here and kept in the encrypted key
  store; the operator key (from configuration) signs every transaction;
- an anchored root must be 32 bytes of hex; an energy evidence hash is taken as is when it is
  32 bytes of hex and hashed with keccak256 otherwise (it is a reference, not a proof).

Speed: transactions are signed locally with explicit gas, gas price and nonce, sent and polled
through the raw provider (no middleware, no gas estimation), and receipts are polled every
20 ms, so a command costs about two round trips to the node plus its block time.

Idempotency: the contract records every command id it executed and turns a second execution
into a no-op that emits ``CommandReplayed``. This backend also asks the chain first
(``find_command``) and then returns the original outcome without sending anything. Either way
a command re-delivered after a crash gets the receipt of the transaction that executed it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import HTTPProvider
from web3.exceptions import ProviderConnectionError
from web3.types import RPCEndpoint

from prosum_ledger.adapters.evm.abi import (
    DecodedError,
    DecodedLog,
    LedgerAbi,
    as_bytes,
    as_int,
    load_artifact,
)
from prosum_ledger.adapters.evm.keystore import KeyStore
from prosum_ledger.adapters.evm.nonces import NonceManager, NonceTooLowError
from prosum_ledger.domain.model import (
    Balances,
    BatchReceipt,
    LedgerError,
    Permission,
    ReasonCode,
    Receipt,
    SettlementTrade,
)

log = logging.getLogger(__name__)

# The contract's permission bitmask (ProsumLedger.sol: CONNECT, SEND, RECEIVE, ISSUE_ENERGY).
PERMISSION_BITS: Mapping[Permission, int] = {
    Permission.CONNECT: 1,
    Permission.SEND: 2,
    Permission.RECEIVE: 4,
    Permission.ISSUE_ENERGY: 8,
}

_REASONS: Mapping[str, ReasonCode] = {
    "InsufficientEnergy": ReasonCode.INSUFFICIENT_ENERGY,
    "InsufficientEcoin": ReasonCode.INSUFFICIENT_ECOIN,
    "PermissionDenied": ReasonCode.PERMISSION_DENIED,
    "NotOperator": ReasonCode.PERMISSION_DENIED,
    "UnknownParticipant": ReasonCode.UNKNOWN_PARTICIPANT,
    "InvalidCommand": ReasonCode.INVALID_COMMAND,
    "InvalidAmount": ReasonCode.INVALID_COMMAND,
    "InvalidTrade": ReasonCode.INVALID_COMMAND,
    "AmountOverflow": ReasonCode.INVALID_COMMAND,
    # Checked arithmetic failed: amounts the contract cannot represent.
    "Panic": ReasonCode.INVALID_COMMAND,
    "Error": ReasonCode.CHAIN_REJECTED,
}

# Node messages meaning "that nonce is used": another sender, or a send we lost track of.
_NONCE_USED = (
    "nonce too low",
    "nonce has already been used",
    "replacement transaction underpriced",
)


@dataclass(frozen=True, slots=True)
class EvmConfig:
    """How to reach the chain and where the keys are. Secrets never appear in ``repr``."""

    rpc_url: str
    chain_id: int
    operator_private_key: str = field(repr=False)
    keystore_path: Path
    keystore_key: str = field(repr=False)  # a Fernet key: keystore.generate_encryption_key()
    contract_address: str | None = None  # attach to this deployment instead of deploying
    state_path: Path | None = None  # where the deployed address is kept; default: by the keys
    gas_price_wei: int | None = None  # None: twice the node's eth_gasPrice, refreshed
    receipt_poll_s: float = 0.02  # the longest pause between receipt polls
    receipt_timeout_s: float = 60.0
    rpc_timeout_s: float = 30.0
    command_gas: int = 250_000
    deploy_gas: int = 5_000_000
    # Measured about 30k gas per trade with warm accounts; 50k covers two cold accounts and
    # a full calldata word per field, so a batch does not run out of gas.
    settle_gas_base: int = 120_000
    settle_gas_per_trade: int = 50_000

    def __post_init__(self) -> None:
        if self.chain_id <= 0:
            raise ValueError("chain_id must be positive")
        if self.receipt_poll_s <= 0 or self.receipt_timeout_s <= 0:
            raise ValueError("receipt polling interval and timeout must be positive")

    @property
    def resolved_state_path(self) -> Path:
        return self.state_path or self.keystore_path.with_name("evm-ledger.json")


class _RpcError(Exception):
    def __init__(self, method: str, code: int, message: str, data: Any) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class _Rpc:
    """Raw JSON-RPC over web3's HTTP provider, errors as exceptions."""

    def __init__(self, url: str, timeout_s: float) -> None:
        # No automatic retries: a retried eth_sendRawTransaction could hide a lost outcome,
        # and reconciliation is done deliberately with find_command instead.
        self._provider = HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )

    def __call__(self, method: str, *params: Any) -> Any:
        try:
            response = self._provider.make_request(RPCEndpoint(method), list(params))
        except (OSError, ProviderConnectionError) as exc:
            raise LedgerError(
                ReasonCode.CHAIN_UNAVAILABLE, f"{method}: {type(exc).__name__}: {exc}"
            ) from exc
        error = response.get("error")
        if error is not None:
            if isinstance(error, str):
                raise _RpcError(method, 0, error, None)
            raise _RpcError(
                method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data")
            )
        return response.get("result")

    def batch(self, method: str, params: Sequence[Sequence[Any]]) -> list[Any]:
        """Many calls of one method in one HTTP round trip; results in order."""
        requests = [(RPCEndpoint(method), list(p)) for p in params]
        try:
            responses = self._provider.make_batch_request(requests)
        except (OSError, ProviderConnectionError) as exc:
            raise LedgerError(
                ReasonCode.CHAIN_UNAVAILABLE, f"{method} batch: {type(exc).__name__}: {exc}"
            ) from exc
        raw: Any = responses
        if isinstance(raw, dict):  # the node refused the batch as a whole
            raise _RpcError(method, 0, str(raw.get("error")), None)
        results = []
        for response in sorted(raw, key=lambda r: int(r["id"])):
            error: Any = response.get("error")
            if error is not None:
                message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
                raise _RpcError(method, 0, message, None)
            results.append(response.get("result"))
        return results


@dataclass(frozen=True, slots=True)
class _Sent:
    tx_hash: str
    data: bytes
    gas: int
    to: str | None


def command_key(command_id: str) -> bytes:
    return keccak(text=command_id)


def trade_key(trade_id: str) -> bytes:
    return keccak(text=trade_id)


def _hash32(value: str) -> bytes | None:
    text = value.removeprefix("0x")
    if len(text) != 64:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


class EvmBackend:
    """``ChainBackend`` on the ProsumLedger contract. Safe to share between threads."""

    name = "evm"

    def __init__(self, config: EvmConfig) -> None:
        self._config = config
        self._abi = LedgerAbi(load_artifact().abi)
        self._rpc = _Rpc(config.rpc_url, config.rpc_timeout_s)
        try:
            self._operator: LocalAccount = Account.from_key(config.operator_private_key)
        except (ValueError, TypeError):
            # Not chained: the original message could quote the key.
            raise ValueError("operator_private_key is not a valid private key") from None
        self._keys = KeyStore(config.keystore_path, config.keystore_key)
        self._nonces = NonceManager(self._pending_nonce)
        self._setup_lock = threading.Lock()
        self._checked_chain = False
        self._contract: ChecksumAddress | None = (
            to_checksum_address(config.contract_address) if config.contract_address else None
        )
        self._contract_verified = False
        self._block_gas_limit: int | None = None
        self._gas_price: tuple[int, float] | None = None
        self._gas_price_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EvmBackend(rpc_url={self._config.rpc_url!r}, contract={self._contract})"

    @property
    def operator_address(self) -> ChecksumAddress:
        return self._operator.address

    @property
    def contract_address(self) -> ChecksumAddress | None:
        return self._contract

    # --- setup -------------------------------------------------------------------------

    def setup_assets(self) -> Receipt | None:
        """Deploy the contract (which defines both assets) unless one is already there."""
        with self._setup_lock:
            self._check_chain()
            if self._attach():
                return None
            return self._deploy()

    def _check_chain(self) -> None:
        if self._checked_chain:
            return
        chain_id = as_int(self._call_rpc("eth_chainId"))
        if chain_id != self._config.chain_id:
            raise LedgerError(
                ReasonCode.CHAIN_REJECTED,
                f"node at {self._config.rpc_url} is chain {chain_id}, "
                f"configured chain is {self._config.chain_id}",
            )
        block = self._call_rpc("eth_getBlockByNumber", "latest", False)
        self._block_gas_limit = as_int(block["gasLimit"])
        self._checked_chain = True

    def _attach(self) -> bool:
        """Use the configured or remembered deployment when its code is there."""
        address = self._contract or self._remembered_address()
        if address is None:
            return False
        code = as_bytes(self._call_rpc("eth_getCode", address, "latest"))
        if not code:
            if self._config.contract_address:
                raise LedgerError(
                    ReasonCode.UNKNOWN_ASSET, f"no contract at configured address {address}"
                )
            # The remembered chain is gone (a fresh dev chain): deploy anew.
            log.warning("no contract at remembered address %s; deploying a new ledger", address)
            self._contract = None
            return False
        if code != load_artifact().deployed_bytecode:
            raise LedgerError(
                ReasonCode.CHAIN_REJECTED,
                f"the contract at {address} is not this build of ProsumLedger "
                f"(source sha256 {load_artifact().source_sha256[:12]})",
            )
        self._contract = address
        self._contract_verified = True
        return True

    def _remembered_address(self) -> ChecksumAddress | None:
        path = self._config.resolved_state_path
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        if state.get("chain_id") != self._config.chain_id:
            return None
        return to_checksum_address(state["contract"])

    def _deploy(self) -> Receipt:
        sent = self._send(load_artifact().bytecode, self._config.deploy_gas, to=None)
        receipt = self._wait(sent)
        address = to_checksum_address(receipt["contractAddress"])
        self._contract = address
        self._contract_verified = True
        self._remember_address(address, receipt)
        log.info("deployed ProsumLedger at %s in block %s", address, as_int(receipt["blockNumber"]))
        return self._receipt(receipt)

    def _remember_address(self, address: str, receipt: Mapping[str, Any]) -> None:
        path = self._config.resolved_state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "chain_id": self._config.chain_id,
            "contract": address,
            "deploy_tx": receipt["transactionHash"],
            "deploy_block": as_int(receipt["blockNumber"]),
            "source_sha256": load_artifact().source_sha256,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)

    def _ledger(self) -> ChecksumAddress:
        if self._contract_verified and self._contract is not None:
            return self._contract
        with self._setup_lock:
            self._check_chain()
            if not self._attach() or self._contract is None:
                raise LedgerError(
                    ReasonCode.UNKNOWN_ASSET,
                    "the ledger contract is not deployed on this chain: run setup_assets first",
                )
            return self._contract

    # --- participants and permissions -----------------------------------------------------

    def register_participant(self, participant_id: str) -> str:
        return self._keys.create(participant_id)

    def participant_of(self, address: str) -> str | None:
        return self._keys.participant_of(address)

    def _address(self, participant_id: str, trade_id: str | None = None) -> ChecksumAddress:
        address = self._keys.address(participant_id)
        if address is None:
            raise LedgerError(
                ReasonCode.UNKNOWN_PARTICIPANT,
                f"participant {participant_id!r} has no chain address",
                trade_id=trade_id,
            )
        return address

    def grant(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt:
        # Granting is how a participant first reaches the chain, so it creates the address.
        address = self._keys.create(participant_id)
        return self._command(command_id, "grant", address, _bits(permissions)).receipt

    def revoke(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt:
        address = self._address(participant_id)
        return self._command(command_id, "revoke", address, _bits(permissions)).receipt

    def permissions(self, participant_id: str) -> frozenset[Permission]:
        """What the chain grants the participant; nothing for an id it has never seen."""
        address = self._keys.address(participant_id)
        if address is None:
            return frozenset()
        _registered, bits = self._view("permissionsOf", address)
        return frozenset(p for p, bit in PERMISSION_BITS.items() if bits & bit)

    # --- mint and burn -------------------------------------------------------------------

    def mint_energy(
        self, command_id: str, participant_id: str, amount_wh: int, evidence_hash: str
    ) -> Receipt:
        _positive(amount_wh)
        address = self._address(participant_id)
        evidence = _hash32(evidence_hash) or keccak(text=evidence_hash)
        return self._command(command_id, "mintEnergy", address, amount_wh, evidence).receipt

    def mint_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt:
        _positive(amount)
        address = self._address(participant_id)
        return self._command(command_id, "mintEcoin", address, amount).receipt

    def burn_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt:
        _positive(amount)
        address = self._address(participant_id)
        return self._command(command_id, "burnEcoin", address, amount).receipt

    # --- settlement ----------------------------------------------------------------------

    def settle_batch(
        self,
        command_id: str,
        trades: Sequence[SettlementTrade],
        fee_account: str,
    ) -> BatchReceipt:
        if not trades:
            raise LedgerError(ReasonCode.INVALID_COMMAND, "a settlement batch needs trades")
        fee_address = self._address(fee_account)
        encoded = []
        names: dict[bytes, str] = {}
        for t in trades:
            key = trade_key(t.trade_id)
            names[key] = t.trade_id
            encoded.append(
                (
                    key,
                    self._address(t.seller, t.trade_id),
                    self._address(t.buyer, t.trade_id),
                    t.energy_wh,
                    t.ecoin,
                    t.fee_ecoin,
                )
            )
        gas = self._config.settle_gas_base + self._config.settle_gas_per_trade * len(trades)
        if self._block_gas_limit is not None:
            gas = min(gas, self._block_gas_limit)
        outcome = self._command(
            command_id, "settleBatch", encoded, fee_address, gas=gas, trade_names=names
        )
        settled: list[str] = []
        skipped: list[str] = []
        for entry in outcome.logs:
            if entry.event == "Settled":
                settled.append(names.get(entry.args["tradeId"], _hex(entry.args["tradeId"])))
            elif entry.event == "TradeAlreadySettled":
                skipped.append(names.get(entry.args["tradeId"], _hex(entry.args["tradeId"])))
        return BatchReceipt(
            receipt=outcome.receipt, settled=tuple(settled), already_settled=tuple(skipped)
        )

    def is_settled(self, trade_id: str) -> bool:
        (block,) = self._view("settledIn", trade_key(trade_id))
        return bool(block)

    # --- anchoring -----------------------------------------------------------------------

    def anchor(self, command_id: str, root: str, reference: str) -> Receipt:
        value = _hash32(root)
        if value is None:
            raise LedgerError(ReasonCode.INVALID_COMMAND, f"root {root!r} is not 32 bytes of hex")
        return self._command(command_id, "anchor", value, reference).receipt

    def anchored(self, root: str) -> Receipt | None:
        value = _hash32(root)
        if value is None:
            raise LedgerError(ReasonCode.INVALID_COMMAND, f"root {root!r} is not 32 bytes of hex")
        (block,) = self._view("anchoredIn", value)
        if not block:
            return None
        topics = [_hex(self._abi.event_topic("Anchored")), None, _hex(value)]
        return self._receipt_from_logs(block, topics)

    # --- queries -------------------------------------------------------------------------

    def balances(self, participant_id: str) -> Balances:
        """The participant's balances; zero for an id the chain has never seen."""
        address = self._keys.address(participant_id)
        if address is None:
            return Balances(energy_wh=0, ecoin=0)
        energy, ecoin = self._view("balanceOf", address)
        return Balances(energy_wh=energy, ecoin=ecoin)

    def balances_many(self, participant_ids: Sequence[str]) -> dict[str, Balances]:
        """One JSON-RPC batch of ``balanceOf`` calls instead of a round trip per participant."""
        out = {p: Balances(energy_wh=0, ecoin=0) for p in participant_ids}
        known = [(p, a) for p in participant_ids if (a := self._keys.address(p)) is not None]
        if not known:
            return out
        ledger = self._ledger()
        calls = [
            [{"to": ledger, "data": _hex(self._abi.encode_call("balanceOf", a))}, "latest"]
            for _p, a in known
        ]
        for attempt in range(3):
            try:
                results = self._rpc.batch("eth_call", calls)
                break
            except _RpcError as exc:
                if "BlockOutOfRange" not in exc.message or attempt == 2:
                    raise LedgerError(ReasonCode.CHAIN_REJECTED, exc.message) from exc
        for (participant, _address), result in zip(known, results, strict=True):
            energy, ecoin = self._abi.decode_result("balanceOf", as_bytes(result))
            out[participant] = Balances(energy_wh=energy, ecoin=ecoin)
        return out

    def total_supply(self) -> Balances:
        energy, ecoin = self._view("totalSupply")
        return Balances(energy_wh=energy, ecoin=ecoin)

    def height(self) -> int:
        return as_int(self._call_rpc("eth_blockNumber"))

    def ledger_events(self, from_block: int = 0, to_block: int | None = None) -> list[DecodedLog]:
        """The contract's events in a block range, oldest first: what the chain says happened,
        to check projections (and conservation) against."""
        raw = self._call_rpc(
            "eth_getLogs",
            {
                "address": self._ledger(),
                "fromBlock": hex(from_block),
                "toBlock": "latest" if to_block is None else hex(to_block),
            },
        )
        return self._decode_logs(raw)

    def find_command(self, command_id: str) -> Receipt | None:
        outcome = self._find(command_key(command_id))
        return outcome.receipt if outcome else None

    # --- command execution -------------------------------------------------------------------

    def _command(
        self,
        command_id: str,
        function: str,
        *args: Any,
        gas: int | None = None,
        trade_names: Mapping[bytes, str] | None = None,
    ) -> _Outcome:
        if not command_id:
            raise LedgerError(ReasonCode.INVALID_COMMAND, "command id must not be empty")
        key = command_key(command_id)
        contract = self._ledger()
        # Ask first: a re-delivered command then costs one call and sends nothing.
        earlier = self._find(key)
        if earlier is not None:
            return earlier
        data = self._abi.encode_call(function, key, *args)
        sent = self._send(data, gas or self._config.command_gas, to=contract)
        receipt = self._wait(sent)
        if as_int(receipt["status"]) != 1:
            raise self._explain_failure(sent, receipt, (key, command_id), trade_names or {})
        logs = self._decode_logs(receipt["logs"])
        if any(entry.event == "CommandReplayed" for entry in logs):
            # Another sender executed it between our look-up and our transaction.
            replayed = self._find(key)
            if replayed is not None:
                return replayed
        return _Outcome(self._receipt(receipt), logs)

    def _find(self, key: bytes) -> _Outcome | None:
        (block,) = self._view("commandBlock", key)
        if not block:
            return None
        # Every event a command emits carries its id as the first indexed topic.
        return self._outcome_from_logs(block, [None, _hex(key)])

    def _outcome_from_logs(self, block: int, topics: list[str | None]) -> _Outcome:
        raw = self._call_rpc(
            "eth_getLogs",
            {
                "address": self._ledger(),
                "fromBlock": hex(block),
                "toBlock": hex(block),
                "topics": topics,
            },
        )
        replay_topic = self._abi.event_topic("CommandReplayed")
        first = next((entry for entry in raw if as_bytes(entry["topics"][0]) != replay_topic), None)
        if first is None:
            # The node keeps state but not this block's logs: the block is all we can say.
            return _Outcome(Receipt(tx_id="", block=block, fee=0), [])
        receipt = self._call_rpc("eth_getTransactionReceipt", first["transactionHash"])
        return _Outcome(self._receipt(receipt), self._decode_logs(receipt["logs"]))

    def _receipt_from_logs(self, block: int, topics: list[str | None]) -> Receipt:
        return self._outcome_from_logs(block, topics).receipt

    def _decode_logs(self, raw: Sequence[Mapping[str, Any]]) -> list[DecodedLog]:
        contract = (self._contract or "").lower()
        decoded = []
        for entry in raw:
            if str(entry["address"]).lower() != contract:
                continue
            item = self._abi.decode_log(entry)
            if item is not None:
                decoded.append(item)
        return decoded

    def _view(self, function: str, *args: Any) -> tuple[Any, ...]:
        call = {"to": self._ledger(), "data": _hex(self._abi.encode_call(function, *args))}
        for attempt in range(3):
            try:
                result = self._rpc("eth_call", call, "latest")
                break
            except _RpcError as exc:
                # anvil keeping no old states can resolve "latest" to a block whose state a
                # block mined meanwhile has just pruned; asking again gets the new one.
                if "BlockOutOfRange" not in exc.message or attempt == 2:
                    raise LedgerError(ReasonCode.CHAIN_REJECTED, exc.message) from exc
        return self._abi.decode_result(function, as_bytes(result))

    def _call_rpc(self, method: str, *params: Any) -> Any:
        try:
            return self._rpc(method, *params)
        except _RpcError as exc:
            raise LedgerError(ReasonCode.CHAIN_REJECTED, exc.message) from exc

    # --- sending ---------------------------------------------------------------------------

    def _pending_nonce(self) -> int:
        return as_int(self._call_rpc("eth_getTransactionCount", self._operator.address, "pending"))

    def _current_gas_price(self) -> int:
        if self._config.gas_price_wei is not None:
            return self._config.gas_price_wei
        with self._gas_price_lock:
            now = time.monotonic()
            if self._gas_price is None or now - self._gas_price[1] > 10.0:
                # Twice the suggestion: the base fee may rise before the transaction is mined.
                self._gas_price = (2 * as_int(self._call_rpc("eth_gasPrice")), now)
            return self._gas_price[0]

    def _send(self, data: bytes, gas: int, *, to: str | None) -> _Sent:
        gas_price = self._current_gas_price()

        def attempt(nonce: int) -> _Sent:
            tx: dict[str, Any] = {
                "nonce": nonce,
                "gas": gas,
                "gasPrice": gas_price,
                "value": 0,
                "data": data,
                "chainId": self._config.chain_id,
            }
            if to is not None:
                tx["to"] = to
            signed = self._operator.sign_transaction(tx)
            tx_hash = _hex(bytes(signed.hash))
            try:
                self._rpc("eth_sendRawTransaction", _hex(bytes(signed.raw_transaction)))
            except _RpcError as exc:
                message = exc.message.lower()
                if "already known" in message:
                    # This very transaction (same nonce, same bytes) is already in the pool.
                    return _Sent(tx_hash, data, gas, to)
                if any(marker in message for marker in _NONCE_USED):
                    raise NonceTooLowError(exc.message) from exc
                raise LedgerError(ReasonCode.CHAIN_REJECTED, exc.message) from exc
            except LedgerError as exc:
                raise LedgerError(
                    exc.reason,
                    f"{exc.chain_message}; transaction {tx_hash} may or may not have been "
                    "received: reconcile with find_command before retrying",
                ) from exc
            return _Sent(tx_hash, data, gas, to)

        try:
            return self._nonces.submit(attempt)
        except NonceTooLowError as exc:
            # Transient: another sender holds the operator key busy; nothing was executed.
            raise LedgerError(
                ReasonCode.CHAIN_UNAVAILABLE,
                f"{exc}: another sender is using the operator account",
            ) from exc

    def _wait(self, sent: _Sent) -> Mapping[str, Any]:
        deadline = time.monotonic() + self._config.receipt_timeout_s
        # A dev chain mines within a millisecond or a few of the send; a fixed 20 ms step would
        # then cost most of a command's latency. Start at 1 ms and double up to the interval.
        pause = min(0.001, self._config.receipt_poll_s)
        while True:
            receipt = self._call_rpc("eth_getTransactionReceipt", sent.tx_hash)
            if receipt is not None:
                return dict(receipt)
            if time.monotonic() >= deadline:
                raise LedgerError(
                    ReasonCode.CHAIN_UNAVAILABLE,
                    f"no receipt for transaction {sent.tx_hash} after "
                    f"{self._config.receipt_timeout_s} s: outcome unknown, reconcile with "
                    "find_command before retrying",
                )
            time.sleep(pause)
            pause = min(pause * 2, self._config.receipt_poll_s)

    @staticmethod
    def _receipt(receipt: Mapping[str, Any]) -> Receipt:
        return Receipt(
            tx_id=str(receipt["transactionHash"]),
            block=as_int(receipt["blockNumber"]),
            fee=as_int(receipt["gasUsed"]),
        )

    # --- failures --------------------------------------------------------------------------

    def _explain_failure(
        self,
        sent: _Sent,
        receipt: Mapping[str, Any],
        command: tuple[bytes, str],
        trade_names: Mapping[bytes, str],
    ) -> LedgerError:
        """Why a mined transaction reverted. Receipts carry no revert data, so the call is
        replayed: on the state before its block when the node still has it, else on the
        latest state (which, with one transaction per block, is the same state)."""
        block = as_int(receipt["blockNumber"])
        if as_int(receipt["gasUsed"]) >= sent.gas:
            return LedgerError(
                ReasonCode.CHAIN_REJECTED,
                f"transaction {sent.tx_hash} ran out of gas ({sent.gas} given)",
            )
        call = {"from": self._operator.address, "to": sent.to, "data": _hex(sent.data)}
        call["gas"] = hex(sent.gas)
        for at in (hex(block - 1), "latest"):
            try:
                self._rpc("eth_call", call, at)
            except _RpcError as exc:
                revert = _revert_data(exc.data)
                if revert is None:
                    continue  # e.g. the old state is pruned: try the latest
                decoded = self._abi.decode_error(revert)
                if decoded is None:
                    return LedgerError(
                        ReasonCode.CHAIN_REJECTED,
                        f"{exc.message} (transaction {sent.tx_hash}, revert data {_hex(revert)})",
                    )
                return self._ledger_error(decoded, exc.message, command, trade_names)
        return LedgerError(
            ReasonCode.CHAIN_REJECTED,
            f"transaction {sent.tx_hash} reverted in block {block}; replaying it no longer "
            "reverts, so the state it failed on has changed",
        )

    def _ledger_error(
        self,
        error: DecodedError,
        node_message: str,
        command: tuple[bytes, str],
        trade_names: Mapping[bytes, str],
    ) -> LedgerError:
        trade_id: str | None = None
        shown: list[str] = []
        for name, value in error.args.items():
            if value == command[0]:
                shown.append(f"{name}=command {command[1]!r}")
            elif isinstance(value, bytes) and value in trade_names:
                trade_id = trade_id or trade_names[value]
                shown.append(f"{name}={trade_names[value]!r}")
            elif isinstance(value, str) and value.startswith("0x") and len(value) == 42:
                who = self._keys.participant_of(value)
                shown.append(f"{name}={who!r} ({value})" if who else f"{name}={value}")
            elif name == "permission" and isinstance(value, int):
                labels = [p.value for p, bit in PERMISSION_BITS.items() if value & bit]
                shown.append(f"{name}={'+'.join(labels) or value}")
            elif isinstance(value, bytes):
                shown.append(f"{name}={_hex(value)}")
            else:
                shown.append(f"{name}={value}")
        reason = _REASONS.get(error.name, ReasonCode.CHAIN_REJECTED)
        # anvil appends the raw revert data ("custom error 0x...: 00..."); the decoded form
        # below says the same thing readably.
        prefix = node_message.split(": custom error", 1)[0]
        return LedgerError(reason, f"{prefix}: {error.name}({', '.join(shown)})", trade_id=trade_id)


@dataclass(frozen=True, slots=True)
class _Outcome:
    receipt: Receipt
    logs: list[DecodedLog]


def _revert_data(data: Any) -> bytes | None:
    # Nodes put revert data in error.data as hex, some nest it in an object.
    if isinstance(data, Mapping):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


def _bits(permissions: frozenset[Permission]) -> int:
    bits = 0
    for permission in permissions:
        bits |= PERMISSION_BITS[permission]
    return bits


def _positive(amount: int) -> None:
    # bool is an int in Python; a True amount is a bug upstream, not one unit.
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise LedgerError(
            ReasonCode.INVALID_COMMAND, f"amount must be a positive integer, not {amount!r}"
        )
