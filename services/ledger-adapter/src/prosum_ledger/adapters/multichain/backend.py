"""The MultiChain chain backend, following the Oh et al. paper's scenario on MultiChain.

How prosum's ledger maps onto MultiChain:

- Assets: ``energy`` (units 0.001, so one raw unit is one Wh) and ``ecoin`` (units 1) are
  issued open with quantity 0 by the admin address, as the paper's ``issuefrom`` did, so the
  total supply is exactly what was minted less what was burned.
- Participants: one ``getnewaddress`` each. The node's wallet holds the keys; which address is
  whose is kept in the state file (``state.StateFile``).
- Permissions: ``grant(addr, "connect,send,receive")`` and, for the right to be minted energy,
  the per-asset ``grant(addr, "energy.issue")``.
- Mint: ``issuemorefrom(producer, producer, "energy", kWh, 0, fields)`` (the producer issues
  its own energy, as recorded) and ``issuemorefrom(admin, participant, "ecoin", ...)``; the
  command id and the evidence hash travel in the issuance's custom fields, on chain in the
  very transaction that mints.
- Burn: ``sendwithdatafrom`` to the node's burn address.
- Settlement: a lone trade without fee goes through the paper's exchange
  (``preparelockunspentfrom`` by the seller, ``createrawexchange``, ``decoderawexchange``
  checked against the trade, ``preparelockunspentfrom`` by the buyer, ``appendrawexchange``,
  ``sendrawtransaction``). A batch is one raw transaction: each participant locks what it pays
  for the whole batch (``preparelockunspentfrom``), one ``createrawtransaction`` spends all those
  locked outputs into every leg, ``signrawtransaction`` signs the inputs of all the addresses,
  ``sendrawtransaction`` sends it. MultiChain accepts or rejects a transaction whole, so the batch
  settles all or none. A failed attempt leaves its locks in place (recorded behaviour), so every
  failure path releases them with ``lockunspent true``.

Where the chain records what each command did, so ``find_command`` and ``is_settled`` answer
from the chain and a crashed adapter can reconcile before it retries:

- a stream, ``prosum-commands``, created on setup. Its items are published *inside the
  transaction that does the work* wherever MultiChain allows: the settlement's raw transaction
  (a data output) and the exchange (``appendrawdata``), the burn (``sendwithdatafrom``), the
  anchor (the item is the anchor). So an item exists exactly when the work was done. Grants and
  revokes cannot carry an item; they publish one just after, which is safe because granting or
  revoking twice leaves the same permissions.
- the custom fields of each mint's issuance event (``listassets`` lists them), since
  ``issuemorefrom`` cannot publish to a stream.

The backend folds both into an in-memory index when it starts and keeps it current, reading
only new stream items after that. A settlement item carries its trade ids, so ``is_settled``
is a lookup in that fold (MultiChain 1.0 items have one key, and a transaction only a few data
outputs, so one item per trade is not possible).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

from prosum_ledger.adapters.multichain.amounts import (
    UnrepresentableAmount,
    to_display,
    to_units,
)
from prosum_ledger.adapters.multichain.config import MultiChainSettings
from prosum_ledger.adapters.multichain.errors import (
    AlreadyInChain,
    InsufficientFunds,
    MultiChainError,
    MultiChainRpcError,
    PermissionDenied,
    TransactionNotFound,
    UnknownEntity,
)
from prosum_ledger.adapters.multichain.rpc import (
    AssetInfo,
    MultiChainRpc,
    OutPoint,
    StreamItem,
    StreamPublish,
)
from prosum_ledger.adapters.multichain.state import Intent, StateFile
from prosum_ledger.domain.model import (
    ECOIN_ASSET,
    ECOIN_DECIMALS,
    ENERGY_ASSET,
    ENERGY_DECIMALS,
    Balances,
    BatchReceipt,
    LedgerError,
    Permission,
    ReasonCode,
    Receipt,
    SettlementTrade,
)

log = logging.getLogger(__name__)

_DECIMALS: Mapping[str, int] = {ENERGY_ASSET: ENERGY_DECIMALS, ECOIN_ASSET: ECOIN_DECIMALS}
_UNITS: Mapping[str, Decimal] = {name: Decimal(1).scaleb(-d) for name, d in _DECIMALS.items()}

# MultiChain permission strings. energy.issue is per-asset and goes in a grant of its own.
_GLOBAL_PERMISSIONS = (Permission.CONNECT, Permission.SEND, Permission.RECEIVE)
_ENERGY_ISSUE = f"{ENERGY_ASSET}.issue"

# Custom fields of a mint's issuance event.
_COMMAND_FIELD = "prosum-command"
_EVIDENCE_FIELD = "prosum-evidence"

_RECORD_VERSION = 1
_MAX_KEY_BYTES = 256  # MultiChain's limit on a stream item key
_MAX_EVIDENCE = 1024  # issuance metadata is limited to a few kilobytes in all
_PAGE = 500  # stream items read per call when catching up
_RECEIPT_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class _Record:
    """What the chain says a command did."""

    kind: str
    txid: str  # the transaction that executed it
    settled: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


class _Index:
    """The fold of the command stream and of the mints' custom fields."""

    def __init__(self) -> None:
        self.commands: dict[str, _Record] = {}
        self.trades: dict[str, str] = {}  # trade id -> the command that settled it
        self.cursor = 0  # stream items folded that are confirmed, hence will not move

    def record(self, command_id: str, record: _Record) -> None:
        self.commands.setdefault(command_id, record)
        for trade_id in record.settled:
            self.trades.setdefault(trade_id, command_id)


@contextmanager
def _ledger_errors(asset: str | None = None) -> Iterator[None]:
    """What leaves the backend is a ``LedgerError``, never a MultiChain error."""
    try:
        yield
    except MultiChainError as exc:
        raise exc.to_ledger_error(asset=asset) from exc
    except UnrepresentableAmount as exc:
        raise LedgerError(ReasonCode.INVALID_COMMAND, str(exc)) from exc


class MultiChainBackend:
    """``ChainBackend`` on a MultiChain node through Savoir. Safe to share between threads:
    commands run one at a time, as the state file and the node's locks require."""

    name = "multichain"

    def __init__(self, settings: MultiChainSettings, rpc: MultiChainRpc | None = None) -> None:
        self._settings = settings
        self._rpc = rpc if rpc is not None else MultiChainRpc(settings.connection)
        self._state = StateFile(settings.state_path, settings.connection.chain_name)
        self._lock = threading.RLock()
        self._index: _Index | None = None
        # Confirmed receipts looked up lately, so replays cost no round trips; bounded, since
        # a receipt can always be read from the chain again.
        self._receipts: OrderedDict[str, Receipt] = OrderedDict()

    def __repr__(self) -> str:
        return f"MultiChainBackend({self._rpc!r})"

    def close(self) -> None:
        self._rpc.close()

    # --- setup ---------------------------------------------------------------------------

    def setup_assets(self) -> Receipt | None:
        with self._lock, _ledger_errors():
            info = self._rpc.get_info()
            wanted = self._settings.connection.chain_name
            if info.chain_name != wanted:
                raise LedgerError(
                    ReasonCode.CHAIN_REJECTED,
                    f"the node serves chain {info.chain_name!r}, configured is {wanted!r}",
                )
            admin = self._admin()
            existing = {a.name: a for a in self._rpc.list_assets(verbose=False)}
            sent = []
            for name, units in _UNITS.items():
                if name in existing:
                    _check_asset(existing[name], units)
                else:
                    sent.append(
                        self._rpc.issue(admin, name, open=True, quantity=Decimal(0), units=units)
                    )
            if self._settings.stream not in self._rpc.list_streams():
                # Open: the items ride in settlement transactions signed by the participants'
                # addresses, which would otherwise each need a write grant. Only this adapter
                # holds those keys; the fold ignores items from addresses it does not know.
                sent.append(self._rpc.create_stream(self._settings.stream, open=True))
            # Wait for the new entities before using them.
            receipts = [self._wait_receipt(txid) for txid in sent]
            self._rpc.subscribe(self._settings.stream)
            if self._state.burn != info.burn_address:
                # Watching the burn address lets the node report what was burned. On a chain
                # that already had assets, earlier burns need a rescan to be counted.
                self._rpc.import_address(info.burn_address, rescan=bool(existing))
                self._state.burn = info.burn_address
                self._state.save()
            self._index = None  # fold again, now that the stream is there
            return receipts[0] if receipts else None

    def _admin(self) -> str:
        if self._settings.admin_address:
            return self._settings.admin_address
        if self._state.admin is None:
            addresses = self._rpc.list_addresses()
            if not addresses:
                raise LedgerError(ReasonCode.CHAIN_REJECTED, "the node's wallet has no address")
            self._state.admin = addresses[0]
            self._state.save()
        return self._state.admin

    # --- participants and permissions -----------------------------------------------------

    def register_participant(self, participant_id: str) -> str:
        if not participant_id:
            raise LedgerError(ReasonCode.INVALID_COMMAND, "participant id must not be empty")
        with self._lock, _ledger_errors():
            address = self._state.participants.get(participant_id)
            if address is None:
                address = self._rpc.get_new_address()
                self._state.participants[participant_id] = address
                self._state.save()
            return address

    def participant_of(self, address: str) -> str | None:
        with self._lock:
            for participant_id, known in self._state.participants.items():
                if known == address:
                    return participant_id
            return None

    def address_of(self, participant_id: str) -> str | None:
        with self._lock:
            return self._state.participants.get(participant_id)

    def grant(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt:
        # Granting is how a participant first reaches the chain, so it creates the address.
        self.register_participant(participant_id)
        return self._change_permissions("grant", command_id, participant_id, permissions)

    def revoke(
        self, command_id: str, participant_id: str, permissions: frozenset[Permission]
    ) -> Receipt:
        return self._change_permissions("revoke", command_id, participant_id, permissions)

    def _change_permissions(
        self,
        kind: str,
        command_id: str,
        participant_id: str,
        permissions: frozenset[Permission],
    ) -> Receipt:
        if not permissions:
            raise LedgerError(ReasonCode.INVALID_COMMAND, f"nothing to {kind}")

        def run(intent: Intent) -> _Record:
            del intent
            address = self._address(participant_id)
            change = self._rpc.grant if kind == "grant" else self._rpc.revoke
            txids = []
            common = [p.value for p in _GLOBAL_PERMISSIONS if p in permissions]
            if common:
                txids.append(change([address], ",".join(common)))
            if Permission.ISSUE_ENERGY in permissions:
                txids.append(change([address], _ENERGY_ISSUE))
            # The record follows the change (a permission transaction cannot carry a stream
            # item). Doing a grant or revoke twice leaves the same permissions, so a crash
            # between the two only means the change is made again.
            payload = {
                "kind": kind,
                "command": command_id,
                "permissions": sorted(p.value for p in permissions),
                "txids": txids,
            }
            self._rpc.publish_from(self._admin(), self._item(command_id, payload))
            return _Record(kind, txids[-1])

        with self._lock, _ledger_errors():
            return self._execute(command_id, kind, run)[1]

    def permissions(self, participant_id: str) -> frozenset[Permission]:
        """What the chain grants the participant; nothing for an id it has never seen."""
        with self._lock, _ledger_errors():
            address = self._state.participants.get(participant_id)
            if address is None:
                return frozenset()
            common = {p.value for p in _GLOBAL_PERMISSIONS}
            listed = self._rpc.list_permissions(",".join(sorted(common)), [address])
            held = {
                Permission(entry.type)
                for entry in listed
                if entry.address == address and entry.entity is None and entry.type in common
            }
            if any(
                entry.address == address and entry.type == "issue"
                for entry in self._rpc.list_permissions(_ENERGY_ISSUE, [address])
            ):
                held.add(Permission.ISSUE_ENERGY)
            return frozenset(held)

    # --- mint and burn -------------------------------------------------------------------

    def mint_energy(
        self, command_id: str, participant_id: str, amount_wh: int, evidence_hash: str
    ) -> Receipt:
        _positive(amount_wh)
        if not evidence_hash or len(evidence_hash) > _MAX_EVIDENCE:
            raise LedgerError(
                ReasonCode.INVALID_COMMAND,
                f"evidence hash must be 1 to {_MAX_EVIDENCE} characters",
            )

        def run(intent: Intent) -> _Record:
            del intent
            producer = self._address(participant_id)
            fields = {_COMMAND_FIELD: command_id, _EVIDENCE_FIELD: evidence_hash}
            quantity = to_display(amount_wh, ENERGY_DECIMALS)
            txid = self._rpc.issue_more_from(producer, producer, ENERGY_ASSET, quantity, fields)
            return _Record("mint", txid)

        with self._lock, _ledger_errors(ENERGY_ASSET):
            return self._execute(command_id, "mint", run)[1]

    def mint_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt:
        _positive(amount)

        def run(intent: Intent) -> _Record:
            del intent
            address = self._address(participant_id)
            quantity = to_display(amount, ECOIN_DECIMALS)
            fields = {_COMMAND_FIELD: command_id}
            txid = self._rpc.issue_more_from(self._admin(), address, ECOIN_ASSET, quantity, fields)
            return _Record("mint", txid)

        with self._lock, _ledger_errors(ECOIN_ASSET):
            return self._execute(command_id, "mint", run)[1]

    def burn_ecoin(self, command_id: str, participant_id: str, amount: int) -> Receipt:
        _positive(amount)

        def run(intent: Intent) -> _Record:
            del intent
            address = self._address(participant_id)
            payload = {"kind": "burn", "command": command_id, "ecoin": amount}
            txid = self._rpc.send_with_data_from(
                address,
                self._burn_address(),
                {ECOIN_ASSET: to_display(amount, ECOIN_DECIMALS)},
                self._item(command_id, payload),
            )
            return _Record("burn", txid)

        with self._lock, _ledger_errors(ECOIN_ASSET):
            return self._execute(command_id, "burn", run)[1]

    def _burn_address(self) -> str:
        if self._state.burn is None:
            self._state.burn = self._rpc.get_info().burn_address
            self._state.save()
        return self._state.burn

    # --- settlement ----------------------------------------------------------------------

    def settle_batch(
        self,
        command_id: str,
        trades: Sequence[SettlementTrade],
        fee_account: str,
    ) -> BatchReceipt:
        batch = list(trades)
        if not batch:
            raise LedgerError(ReasonCode.INVALID_COMMAND, "a settlement batch needs trades")
        seen: set[str] = set()
        for trade in batch:
            if not trade.trade_id or trade.trade_id in seen:
                raise LedgerError(
                    ReasonCode.INVALID_COMMAND,
                    f"trade id {trade.trade_id!r} is empty or repeated in the batch",
                    trade_id=trade.trade_id or None,
                )
            seen.add(trade.trade_id)
            _positive(trade.energy_wh)

        with self._lock, _ledger_errors():
            record, receipt = self._execute(
                command_id,
                "settle",
                lambda intent: self._settle(command_id, batch, fee_account, intent),
            )
            return BatchReceipt(
                receipt=receipt, settled=record.settled, already_settled=record.skipped
            )

    def is_settled(self, trade_id: str) -> bool:
        with self._lock, _ledger_errors():
            index = self._ensure_index()
            if trade_id not in index.trades:
                self._sync()
            return trade_id in index.trades

    def _settle(
        self,
        command_id: str,
        batch: list[SettlementTrade],
        fee_account: str,
        intent: Intent,
    ) -> _Record:
        self._sync()
        index = self._require_index()
        skipped = tuple(t.trade_id for t in batch if t.trade_id in index.trades)
        todo = [t for t in batch if t.trade_id not in index.trades]
        addresses = {fee_account: self._address(fee_account)}
        for trade in todo:
            addresses[trade.seller] = self._address(trade.seller, trade.trade_id)
            addresses[trade.buyer] = self._address(trade.buyer, trade.trade_id)
        payload = {
            "kind": "settle",
            "command": command_id,
            "trades": [t.trade_id for t in todo],
            "skipped": list(skipped),
        }
        item = self._item(command_id, payload)
        if not todo:
            # Nothing to move, but the command still leaves its record on chain.
            return _Record("settle", self._rpc.publish_from(self._admin(), item), (), skipped)
        lone = todo[0]
        use_exchange = (
            len(todo) == 1
            and self._settings.exchange_for_single_trade
            and lone.fee_ecoin == 0
            and lone.ecoin > 0
        )
        try:
            if use_exchange:
                txid = self._settle_exchange(lone, addresses, item, intent)
            else:
                txid = self._settle_raw(todo, addresses, addresses[fee_account], item, intent)
        except (MultiChainRpcError, LedgerError, UnrepresentableAmount) as exc:
            self._release(intent)
            raise self._explain(exc, todo, addresses, addresses[fee_account]) from exc
        return _Record("settle", txid, tuple(t.trade_id for t in todo), skipped)

    def _settle_exchange(
        self,
        trade: SettlementTrade,
        addresses: Mapping[str, str],
        item: StreamPublish,
        intent: Intent,
    ) -> str:
        energy = {ENERGY_ASSET: to_display(trade.energy_wh, ENERGY_DECIMALS)}
        price = {ECOIN_ASSET: to_display(trade.ecoin, ECOIN_DECIMALS)}
        offer = self._lock_outputs(addresses[trade.seller], energy, intent)
        offer_hex = self._rpc.create_raw_exchange(offer, price)
        # What a buyer checks before taking an offer (the paper's accept_exchange).
        decoded = self._rpc.decode_raw_exchange(offer_hex)
        if decoded.offer != energy or decoded.ask != price:
            raise LedgerError(
                ReasonCode.CHAIN_REJECTED,
                f"the offer decodes as {decoded.offer} for {decoded.ask}, not {energy} for {price}",
                trade_id=trade.trade_id,
            )
        bid = self._lock_outputs(addresses[trade.buyer], price, intent)
        taken = self._rpc.append_raw_exchange(offer_hex, bid, energy)
        if not taken.complete:
            raise LedgerError(
                ReasonCode.CHAIN_REJECTED,
                "the exchange is incomplete after the buyer's leg",
                trade_id=trade.trade_id,
            )
        # Both legs are signed SINGLE|ANYONECANPAY (each input commits to its own output), so a
        # data output can be added after them without breaking either signature.
        return self._send(self._rpc.append_raw_data(taken.hex, item), intent)

    def _settle_raw(
        self,
        todo: Sequence[SettlementTrade],
        addresses: Mapping[str, str],
        fee_address: str,
        item: StreamPublish,
        intent: Intent,
    ) -> str:
        # What each address pays for the whole batch, in the order it first appears: one lock
        # per address, holding all of it. Nothing is netted: a participant must hold what it
        # sells or pays before the batch, whatever it receives in the same batch.
        pays: dict[str, dict[str, int]] = {}
        gets: dict[str, dict[str, int]] = {}
        for trade in todo:
            seller, buyer = addresses[trade.seller], addresses[trade.buyer]
            _add(pays, seller, ENERGY_ASSET, trade.energy_wh)
            _add(gets, buyer, ENERGY_ASSET, trade.energy_wh)
            _add(pays, buyer, ECOIN_ASSET, trade.ecoin + trade.fee_ecoin)
            _add(gets, seller, ECOIN_ASSET, trade.ecoin)
            _add(gets, fee_address, ECOIN_ASSET, trade.fee_ecoin)
        for address, assets in pays.items():
            self._lock_outputs(address, _display(assets), intent)
        unsigned = self._rpc.create_raw_transaction(
            intent.locks,
            {address: _display(assets) for address, assets in gets.items()},
            [item],
        )
        signed = self._rpc.sign_raw_transaction(unsigned)
        if not signed.complete:
            raise LedgerError(
                ReasonCode.CHAIN_REJECTED,
                "the node's wallet could not sign every input of the settlement",
            )
        return self._send(signed.hex, intent)

    def _lock_outputs(
        self, address: str, assets: Mapping[str, Decimal], intent: Intent
    ) -> OutPoint:
        outpoint = self._rpc.prepare_lock_unspent_from(address, assets)
        intent.locks.append(outpoint)
        # Recorded at once: a crash from here on must not leave the output locked for good.
        self._state.save()
        return outpoint

    def _send(self, tx_hex: str, intent: Intent) -> str:
        txid = txid_of(tx_hex)
        intent.txid = txid
        intent.hex = tx_hex
        self._state.save()
        try:
            sent = self._rpc.send_raw_transaction(tx_hex)
        except AlreadyInChain:
            # This very transaction is confirmed already: a resend after a lost answer.
            return txid
        if sent != txid:
            log.warning("node named transaction %s, computed %s", sent, txid)
        return sent

    def _release(self, intent: Intent) -> None:
        """Unlock what an attempt locked; a failed attempt otherwise keeps it locked."""
        if intent.locks:
            self._rpc.lock_unspent(unlock=True, outpoints=intent.locks)
            intent.locks = []
            self._state.save()

    def _explain(
        self,
        failure: MultiChainRpcError | LedgerError | UnrepresentableAmount,
        todo: Sequence[SettlementTrade],
        addresses: Mapping[str, str],
        fee_address: str,
    ) -> LedgerError:
        """The ledger error for a failed settlement, naming the first trade that cannot settle.

        The node says *what* failed (insufficient funds, a missing permission) but not for
        which trade, so with the locks released the batch is walked in order against the
        chain's balances and permissions.
        """
        if isinstance(failure, LedgerError):
            return failure
        only = todo[0].trade_id if len(todo) == 1 else None
        if isinstance(failure, UnrepresentableAmount):
            return LedgerError(ReasonCode.INVALID_COMMAND, str(failure), trade_id=only)
        if isinstance(failure, InsufficientFunds | PermissionDenied):
            found = self._first_failing_trade(todo, addresses, fee_address)
            if found is not None:
                reason, trade_id, why = found
                return LedgerError(reason, f"{why}; {failure.chain_message}", trade_id=trade_id)
        return failure.to_ledger_error(trade_id=only)

    def _first_failing_trade(
        self,
        todo: Sequence[SettlementTrade],
        addresses: Mapping[str, str],
        fee_address: str,
    ) -> tuple[ReasonCode, str, str] | None:
        involved = list(dict.fromkeys([*addresses.values(), fee_address]))
        can_send = {e.address for e in self._rpc.list_permissions("send", involved)}
        can_receive = {e.address for e in self._rpc.list_permissions("receive", involved)}
        held: dict[str, dict[str, Decimal]] = {}
        needed: dict[tuple[str, str], int] = {}

        def short(address: str, asset: str, amount: int) -> tuple[int, int] | None:
            if address not in held:
                held[address] = self._rpc.get_address_balances(
                    address, minconf=0, include_locked=False
                )
            have = to_units(held[address].get(asset, Decimal(0)), _DECIMALS[asset], asset)
            needed[address, asset] = needed.get((address, asset), 0) + amount
            return (have, needed[address, asset]) if needed[address, asset] > have else None

        for trade in todo:
            # preparelockunspentfrom wants both send and receive of the paying address.
            for role, who in (("seller", trade.seller), ("buyer", trade.buyer)):
                address = addresses[who]
                lacking = [
                    name
                    for name, ok in (
                        ("send", address in can_send),
                        ("receive", address in can_receive),
                    )
                    if not ok
                ]
                if lacking:
                    return (
                        ReasonCode.PERMISSION_DENIED,
                        trade.trade_id,
                        f"{role} {who} lacks {' and '.join(lacking)} permission",
                    )
            if trade.fee_ecoin and fee_address not in can_receive:
                return (
                    ReasonCode.PERMISSION_DENIED,
                    trade.trade_id,
                    "the fee account lacks receive permission",
                )
            gap = short(addresses[trade.seller], ENERGY_ASSET, trade.energy_wh)
            if gap is not None:
                return (
                    ReasonCode.INSUFFICIENT_ENERGY,
                    trade.trade_id,
                    f"seller {trade.seller} holds {gap[0]} Wh; the batch needs {gap[1]} Wh "
                    "up to this trade",
                )
            pay = trade.ecoin + trade.fee_ecoin
            gap = short(addresses[trade.buyer], ECOIN_ASSET, pay) if pay else None
            if gap is not None:
                return (
                    ReasonCode.INSUFFICIENT_ECOIN,
                    trade.trade_id,
                    f"buyer {trade.buyer} holds {gap[0]} ecoin; the batch needs {gap[1]} "
                    "up to this trade",
                )
        return None

    # --- anchoring -----------------------------------------------------------------------

    def anchor(self, command_id: str, root: str, reference: str) -> Receipt:
        value = _root(root)

        def run(intent: Intent) -> _Record:
            del intent
            payload = {"kind": "anchor", "command": command_id, "reference": reference}
            # Keyed by the root, so ``anchored`` is one key look-up; the fold finds the command
            # by the id in the payload.
            item = StreamPublish(self._settings.stream, value, _encode(payload))
            return _Record("anchor", self._rpc.publish_from(self._admin(), item))

        with self._lock, _ledger_errors():
            return self._execute(command_id, "anchor", run)[1]

    def anchored(self, root: str) -> Receipt | None:
        value = _root(root)
        with self._lock, _ledger_errors():
            ours = self._our_addresses()
            items = self._rpc.list_stream_key_items(self._settings.stream, value)
            for item in items:
                payload = self._payload(item, ours)
                if payload is not None and payload.get("kind") == "anchor":
                    receipt = self._receipt_if_confirmed(item.txid)
                    if receipt is not None:
                        return receipt
            return None

    # --- queries -------------------------------------------------------------------------

    def balances(self, participant_id: str) -> Balances:
        """The participant's spendable balances; zero for an id the chain has never seen.
        Outputs locked by a settlement in progress are not spendable, so not counted."""
        with self._lock, _ledger_errors():
            address = self._state.participants.get(participant_id)
            if address is None:
                return Balances(energy_wh=0, ecoin=0)
            held = self._rpc.get_address_balances(
                address, minconf=self._settings.balance_minconf, include_locked=False
            )
            return _balances(held)

    def balances_many(self, participant_ids: Sequence[str]) -> dict[str, Balances]:
        """Many participants' spendable balances in one ``getmultibalances`` round trip."""
        with self._lock, _ledger_errors():
            out = {p: Balances(energy_wh=0, ecoin=0) for p in participant_ids}
            known = {
                p: a for p in participant_ids if (a := self._state.participants.get(p)) is not None
            }
            if not known:
                return out
            table = self._rpc.get_multi_balances(
                list(dict.fromkeys(known.values())),
                minconf=self._settings.balance_minconf,
                include_locked=False,
            )
            for participant, address in known.items():
                out[participant] = _balances(table.get(address, {}))
            return out

    def total_supply(self) -> Balances:
        """Issued (every issuance event) less what sits at the burn address."""
        with self._lock, _ledger_errors():
            issued = {
                asset.name: asset.issued
                for asset in self._rpc.list_assets([ENERGY_ASSET, ECOIN_ASSET], verbose=False)
            }
            burned = self._rpc.get_address_balances(
                self._burn_address(), minconf=0, include_locked=True
            )
            total = _balances(issued)
            gone = _balances(burned)
            return Balances(
                energy_wh=total.energy_wh - gone.energy_wh, ecoin=total.ecoin - gone.ecoin
            )

    def height(self) -> int:
        with _ledger_errors():
            return self._rpc.get_block_count()

    def find_command(self, command_id: str) -> Receipt | None:
        """Only looks: settling what an interrupted attempt left (resending it, unlocking its
        outputs) is for the command's retry, through ``_reconcile``."""
        with self._lock, _ledger_errors():
            index = self._ensure_index()
            if command_id not in index.commands:
                self._sync()
            if command_id not in index.commands and command_id in self._state.pending:
                self._scan_issues()  # an interrupted mint is found among the issuance events
            record = index.commands.get(command_id)
            return None if record is None else self._receipt_if_confirmed(record.txid)

    # --- running a command exactly once ----------------------------------------------------

    def _execute(
        self, command_id: str, kind: str, run: Callable[[Intent], _Record]
    ) -> tuple[_Record, Receipt]:
        _check_key(command_id, "command id")
        index = self._ensure_index()
        record = index.commands.get(command_id)
        if record is None and command_id in self._state.pending:
            # Started before and not seen through (a crash, a timeout): ask the chain first.
            record = self._reconcile(command_id)
        if record is None:
            intent = self._state.begin(command_id, kind)
            try:
                record = run(intent)
            except (LedgerError, MultiChainRpcError, UnrepresentableAmount):
                # Refused (by the node or before reaching it) and what was locked is released:
                # the command did nothing.
                self._state.finish(command_id)
                raise
            # Anything else (the node unreachable, no answer in time, the process dying) leaves
            # the intent in place: the next attempt reconciles with the chain before sending.
            index.record(command_id, record)
        receipt = self._wait_receipt(record.txid)
        self._forget(command_id)
        return record, receipt

    def _forget(self, command_id: str) -> None:
        intent = self._state.pending.get(command_id)
        if intent is not None and intent.locks:
            # The settlement spent its locked outputs, but a wallet keeps a lock until told
            # otherwise (as Bitcoin Core does); drop them so the node's lock list stays short.
            try:
                self._release(intent)
            except MultiChainError as exc:
                log.warning("could not unlock the spent outputs of %s: %s", command_id, exc)
        self._state.finish(command_id)

    def _reconcile(self, command_id: str) -> _Record | None:
        intent = self._state.pending[command_id]
        index = self._require_index()
        self._sync()
        if command_id not in index.commands and intent.kind == "mint":
            # Issuance events are listed once confirmed; wait for what is in flight to land.
            self._await_mempool()
            self._scan_issues()
        record = index.commands.get(command_id)
        if record is None and intent.hex is not None:
            record = self._resend(intent, intent.hex)
        if record is None:
            log.info("command %s never reached the chain; releasing what it locked", command_id)
            self._release(intent)
            self._state.finish(command_id)
        return record

    def _resend(self, intent: Intent, tx_hex: str) -> _Record | None:
        """Send a signed settlement the node has not shown us again, byte for byte.

        Building a new one instead could settle twice, should the first still arrive (an
        answer that timed out). The same transaction lands at most once: it is accepted now,
        is already known, or can never be valid (its inputs are gone), and only then is it
        safe to start over.
        """
        try:
            self._rpc.send_raw_transaction(tx_hex)
        except AlreadyInChain:
            pass
        except MultiChainRpcError as exc:
            log.info("earlier settlement %s cannot land: %s", intent.txid, exc)
            return None
        self._sync()
        return next(
            (r for r in self._require_index().commands.values() if r.txid == intent.txid), None
        )

    def _await_mempool(self) -> None:
        waiting = set(self._rpc.get_raw_mempool())
        deadline = time.monotonic() + self._settings.confirm_timeout_s
        while waiting:
            if time.monotonic() >= deadline:
                raise LedgerError(
                    ReasonCode.CHAIN_UNAVAILABLE,
                    f"{len(waiting)} transactions still unconfirmed; cannot yet tell whether an "
                    "earlier attempt ran",
                )
            time.sleep(self._settings.poll_interval_s)
            waiting &= set(self._rpc.get_raw_mempool())

    def _wait_receipt(self, txid: str) -> Receipt:
        deadline = time.monotonic() + self._settings.confirm_timeout_s
        while True:
            receipt = self._receipt_if_confirmed(txid)
            if receipt is not None:
                return receipt
            if time.monotonic() >= deadline:
                raise LedgerError(
                    ReasonCode.CHAIN_UNAVAILABLE,
                    f"transaction {txid} not confirmed within {self._settings.confirm_timeout_s}s;"
                    " it may still confirm, and a retry will find it",
                )
            time.sleep(self._settings.poll_interval_s)

    def _receipt_if_confirmed(self, txid: str) -> Receipt | None:
        cached = self._receipts.get(txid)
        if cached is not None:
            self._receipts.move_to_end(txid)
            return cached
        try:
            status = self._rpc.get_raw_transaction(txid)
        except TransactionNotFound:
            return None  # not (yet) known to this node
        if status.blockhash is None or status.confirmations < self._settings.confirmations:
            return None
        # A chain without a native currency charges no fee.
        receipt = Receipt(tx_id=txid, block=self._rpc.get_block_height(status.blockhash), fee=0)
        self._receipts[txid] = receipt
        if len(self._receipts) > _RECEIPT_CACHE:
            self._receipts.popitem(last=False)
        return receipt

    # --- the index: what the chain recorded ---------------------------------------------

    def _ensure_index(self) -> _Index:
        if self._index is None:
            index = _Index()
            self._index = index
            try:
                # The stream is listed only to a subscribed node; subscribing again is harmless.
                self._rpc.subscribe(self._settings.stream)
                self._sync()
                self._scan_issues()
            except UnknownEntity as exc:
                self._index = None
                raise LedgerError(
                    ReasonCode.UNKNOWN_ASSET,
                    f"the chain is not set up for prosum ({exc.message}): run setup_assets",
                ) from exc
            except BaseException:
                self._index = None
                raise
        return self._index

    def _require_index(self) -> _Index:
        if self._index is None:
            raise RuntimeError("the index is built by _ensure_index first")
        return self._index

    def _sync(self) -> None:
        """Fold stream items not folded yet. Unconfirmed items are folded but read again next
        time, since their place in the stream is settled only by their block."""
        index = self._require_index()
        ours = self._our_addresses()
        position = index.cursor
        while True:
            items = self._rpc.list_stream_items(self._settings.stream, start=position, count=_PAGE)
            for item in items:
                self._fold(item, ours)
                if item.confirmations > 0 and position == index.cursor:
                    index.cursor += 1
                position += 1
            if len(items) < _PAGE:
                return

    def _fold(self, item: StreamItem, ours: set[str]) -> None:
        payload = self._payload(item, ours)
        if payload is None:
            return
        command = payload.get("command")
        kind = payload.get("kind")
        if not isinstance(command, str) or not isinstance(kind, str):
            return
        index = self._require_index()
        if kind == "settle":
            index.record(
                command,
                _Record(
                    kind,
                    item.txid,
                    _strings(payload.get("trades")),
                    _strings(payload.get("skipped")),
                ),
            )
        elif kind in ("grant", "revoke"):
            txids = _strings(payload.get("txids"))
            index.record(command, _Record(kind, txids[-1] if txids else item.txid))
        else:
            index.record(command, _Record(kind, item.txid))

    def _payload(self, item: StreamItem, ours: set[str]) -> dict[str, object] | None:
        if not item.publishers or not set(item.publishers) <= ours:
            # The stream is open; an item from an address this adapter does not hold is not
            # one of its records.
            log.warning("ignoring stream item %s from %s", item.txid, item.publishers)
            return None
        data = item.data_hex
        if data is None and item.data_ref is not None:
            data = self._rpc.get_txout_data(item.data_ref)
        try:
            payload = json.loads(bytes.fromhex(data or ""))
        except ValueError:
            log.warning("ignoring stream item %s: not a prosum record", item.txid)
            return None
        if not isinstance(payload, dict) or payload.get("v") != _RECORD_VERSION:
            return None
        return payload

    def _scan_issues(self) -> None:
        index = self._require_index()
        for asset in self._rpc.list_assets([ENERGY_ASSET, ECOIN_ASSET], verbose=True):
            for event in asset.issues:
                command = event.details.get(_COMMAND_FIELD)
                if command:
                    index.record(command, _Record("mint", event.txid))

    def _our_addresses(self) -> set[str]:
        ours = set(self._state.participants.values())
        admin = self._settings.admin_address or self._state.admin
        if admin:
            ours.add(admin)
        return ours

    def _item(self, command_id: str, payload: Mapping[str, object]) -> StreamPublish:
        return StreamPublish(self._settings.stream, command_id, _encode(payload))

    def _address(self, participant_id: str, trade_id: str | None = None) -> str:
        address = self._state.participants.get(participant_id)
        if address is None:
            raise LedgerError(
                ReasonCode.UNKNOWN_PARTICIPANT,
                f"participant {participant_id!r} has no chain address",
                trade_id=trade_id,
            )
        return address


# --- helpers -------------------------------------------------------------------------------


def txid_of(tx_hex: str) -> str:
    """A transaction's id as MultiChain (like Bitcoin) computes it: double SHA-256 of the
    serialised transaction, shown byte-reversed. Known before sending, so an intent can name
    the transaction it is about to send."""
    digest = hashlib.sha256(hashlib.sha256(bytes.fromhex(tx_hex)).digest()).digest()
    return digest[::-1].hex()


def _encode(payload: Mapping[str, object]) -> str:
    document = {"v": _RECORD_VERSION, **payload}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode().hex()


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _add(table: dict[str, dict[str, int]], address: str, asset: str, amount: int) -> None:
    if amount:
        entry = table.setdefault(address, {})
        entry[asset] = entry.get(asset, 0) + amount


def _display(units: Mapping[str, int]) -> dict[str, Decimal]:
    return {asset: to_display(amount, _DECIMALS[asset]) for asset, amount in units.items()}


def _balances(quantities: Mapping[str, Decimal]) -> Balances:
    return Balances(
        energy_wh=to_units(quantities.get(ENERGY_ASSET, Decimal(0)), ENERGY_DECIMALS, "energy"),
        ecoin=to_units(quantities.get(ECOIN_ASSET, Decimal(0)), ECOIN_DECIMALS, "ecoin"),
    )


def _check_asset(asset: AssetInfo, units: Decimal) -> None:
    if asset.units != units or not asset.open:
        raise LedgerError(
            ReasonCode.CHAIN_REJECTED,
            f"asset {asset.name} exists with units {asset.units} (open: {asset.open}); "
            f"prosum needs units {units}, open",
        )


def _check_key(value: str, what: str) -> None:
    if not value or len(value.encode()) > _MAX_KEY_BYTES:
        raise LedgerError(ReasonCode.INVALID_COMMAND, f"{what} must be 1 to {_MAX_KEY_BYTES} bytes")


def _root(root: str) -> str:
    text = root.removeprefix("0x").lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise LedgerError(ReasonCode.INVALID_COMMAND, f"root {root!r} is not 32 bytes of hex")
    return text


def _positive(amount: int) -> None:
    # bool is an int in Python; a True amount is a bug upstream, not one unit.
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise LedgerError(
            ReasonCode.INVALID_COMMAND, f"amount must be a positive integer, not {amount!r}"
        )
