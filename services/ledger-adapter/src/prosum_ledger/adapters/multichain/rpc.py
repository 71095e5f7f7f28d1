"""A typed wrapper around Savoir, the Python JSON-RPC client the Oh et al. paper used.

What Savoir does on its own, and what this wrapper makes of it:

- On an RPC error (HTTP 500, or 404 for an unknown method) Savoir *returns* the whole error
  envelope instead of raising. The wrapper raises the typed error from ``errors.rpc_error``.
- On a wrong password the node answers HTTP 401 with an HTML page and Savoir raises requests'
  ``JSONDecodeError`` while parsing it. The wrapper raises ``MultiChainAuthError``.
- Savoir has no timeout and opens a connection per call. The wrapper stands in for the one
  ``requests.post`` call Savoir makes (see ``_SavoirTransport``), adding a timeout and a
  kept-alive session; a refused or timed-out connection raises ``MultiChainUnavailable``.
- Savoir's request id counter is a class attribute bumped without a lock, so every call through
  one wrapper is serialised. (Two wrappers may still share an id; that is harmless, because
  each request has its own HTTP exchange and the id is never used to match an answer.)
- ``rpcport`` must be a str for Savoir; ``MultiChainConnection`` takes an int or a str.

Everything Savoir returns is untyped JSON. It stays inside this module: each method below
checks the shape it gets and returns typed values, with quantities as exact ``Decimal``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import requests
import urllib3.exceptions
from Savoir import Savoir

from prosum_ledger.adapters.multichain.amounts import exact_decimal, wire_number
from prosum_ledger.adapters.multichain.config import MultiChainConnection
from prosum_ledger.adapters.multichain.errors import (
    MultiChainAuthError,
    MultiChainError,
    MultiChainProtocolError,
    MultiChainUnavailable,
    rpc_error,
)

log = logging.getLogger(__name__)


# --- typed answers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutPoint:
    """One transaction output, as ``preparelockunspentfrom`` names it."""

    txid: str
    vout: int

    def to_json(self) -> dict[str, object]:
        return {"txid": self.txid, "vout": self.vout}


@dataclass(frozen=True, slots=True)
class StreamPublish:
    """A stream item to publish inside another transaction (``{"for", "key", "data"}``)."""

    stream: str
    key: str
    data_hex: str

    def to_json(self) -> dict[str, object]:
        return {"for": self.stream, "key": self.key, "data": self.data_hex}


@dataclass(frozen=True, slots=True)
class NodeInfo:
    chain_name: str
    version: str
    burn_address: str
    blocks: int


@dataclass(frozen=True, slots=True)
class RawTx:
    hex: str
    complete: bool


@dataclass(frozen=True, slots=True)
class ExchangeDetails:
    """What ``decoderawexchange`` says an exchange offers and asks, in display units."""

    offer: dict[str, Decimal]
    ask: dict[str, Decimal]
    can_complete: bool
    complete: bool


@dataclass(frozen=True, slots=True)
class IssueEvent:
    txid: str
    quantity: Decimal
    details: dict[str, str]


@dataclass(frozen=True, slots=True)
class AssetInfo:
    name: str
    issue_txid: str
    units: Decimal
    open: bool
    issued: Decimal  # ``issueqty``: the total of all issuance events
    issues: tuple[IssueEvent, ...]  # only when listed verbosely


@dataclass(frozen=True, slots=True)
class PermissionEntry:
    address: str
    type: str
    entity: str | None  # the asset a per-asset permission is for (``energy`` of energy.issue)


@dataclass(frozen=True, slots=True)
class StreamItem:
    txid: str
    keys: tuple[str, ...]
    publishers: tuple[str, ...]
    data_hex: str | None
    # Items larger than the node's ``maxshowndata`` are listed by reference only; read them
    # with ``get_txout_data``.
    data_ref: OutPoint | None
    confirmations: int


@dataclass(frozen=True, slots=True)
class TxStatus:
    txid: str
    blockhash: str | None
    confirmations: int


# --- the transport Savoir uses --------------------------------------------------------------


class _Exchange:
    """One call's HTTP facts, shared between the wrapper and the transport."""

    __slots__ = ("session", "status", "timeout")

    def __init__(self, session: requests.Session, timeout: float) -> None:
        self.session = session
        self.timeout = timeout
        self.status: int | None = None


class _SavoirTransport:
    """Stands in for the ``requests`` module inside Savoir's module.

    Savoir's only use of requests is ``requests.post(url, data=..., headers=...)``, with no
    timeout, and it hides the HTTP status. Replacing that one name lets the wrapper add a
    timeout and a kept-alive session and see the status, without copying or altering Savoir's
    own request code. A call made outside a wrapper goes to requests exactly as before.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def bound(self, exchange: _Exchange) -> Iterator[_Exchange]:
        previous = getattr(self._local, "exchange", None)
        self._local.exchange = exchange
        try:
            yield exchange
        finally:
            self._local.exchange = previous

    def post(
        self,
        url: str,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        exchange: _Exchange | None = getattr(self._local, "exchange", None)
        if exchange is None:
            return requests.post(url, data=data, headers=headers, **kwargs)  # noqa: S113
        response = exchange.session.post(url, data=data, headers=headers, timeout=exchange.timeout)
        exchange.status = response.status_code
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)


_install_lock = threading.Lock()


def _savoir_transport() -> _SavoirTransport:
    # Done on first use, not at import: importing this module changes nothing.
    module = importlib.import_module("Savoir.Savoir")
    with _install_lock:
        current = module.__dict__.get("requests")
        if isinstance(current, _SavoirTransport):
            return current
        transport = _SavoirTransport()
        module.__dict__["requests"] = transport
        # Savoir logs every RPC error at ERROR level; with no handler configured, logging's
        # last resort prints that to stderr. The wrapper reports those errors itself.
        logging.getLogger("Savoir").addHandler(logging.NullHandler())
        return transport


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


# --- the wrapper ---------------------------------------------------------------------------


class MultiChainRpc:
    """Typed MultiChain JSON-RPC through Savoir. Safe to share between threads."""

    def __init__(self, connection: MultiChainConnection) -> None:
        self._connection = connection
        self._transport = _savoir_transport()
        self._client = Savoir(
            connection.user,
            connection.password,
            connection.host,
            connection.rpc_port,
            connection.chain_name,
        )
        self._session = requests.Session()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        c = self._connection
        return f"MultiChainRpc({c.host}:{c.port}, chain={c.chain_name!r})"

    @property
    def connection(self) -> MultiChainConnection:
        return self._connection

    def close(self) -> None:
        self._session.close()

    def call(self, method: str, *params: object) -> object:
        """Call ``method``; its JSON result, or a ``MultiChainError``."""
        exchange = _Exchange(self._session, self._connection.timeout_s)
        where = f"{self._connection.host}:{self._connection.port}"
        with self._lock, self._transport.bound(exchange):
            try:
                answer = getattr(self._client, method)(*params)
            except requests.exceptions.ConnectTimeout as exc:
                raise MultiChainUnavailable(
                    f"{method}: could not connect to {where}", delivered=False
                ) from exc
            except requests.exceptions.Timeout as exc:
                raise MultiChainUnavailable(
                    f"{method}: no answer from {where} within {self._connection.timeout_s}s",
                    delivered=True,
                ) from exc
            except requests.exceptions.ConnectionError as exc:
                raise MultiChainUnavailable(
                    f"{method}: connection to {where} failed: {exc}",
                    delivered=not _never_connected(exc),
                ) from exc
            except ValueError as exc:
                # Savoir parsing a body that is not JSON (requests' JSONDecodeError).
                if exchange.status is None:
                    raise
                if exchange.status in (401, 403):
                    raise MultiChainAuthError(
                        f"the node at {where} refused the RPC credentials of user "
                        f"{self._connection.user!r} (HTTP {exchange.status})"
                    ) from exc
                raise MultiChainProtocolError(
                    f"{method}: HTTP {exchange.status} with a body that is not JSON"
                ) from exc
        if exchange.status != 200:
            raise _error_from(method, answer, exchange.status)
        return cast(object, answer)

    # --- node and wallet ----------------------------------------------------------------

    def get_info(self) -> NodeInfo:
        info = _dict(self.call("getinfo"), "getinfo")
        return NodeInfo(
            chain_name=_str(info.get("chainname"), "getinfo.chainname"),
            version=str(info.get("version", "")),
            burn_address=_str(info.get("burnaddress"), "getinfo.burnaddress"),
            blocks=_int(info.get("blocks"), "getinfo.blocks"),
        )

    def get_block_count(self) -> int:
        return _int(self.call("getblockcount"), "getblockcount")

    def get_block_height(self, blockhash: str) -> int:
        block = _dict(self.call("getblock", blockhash), "getblock")
        return _int(block.get("height"), "getblock.height")

    def list_addresses(self) -> list[str]:
        # The paper reads ``listaddresses()[0]["address"]``; accept plain strings as well.
        out = []
        for entry in _list(self.call("listaddresses"), "listaddresses"):
            if isinstance(entry, str):
                out.append(entry)
            else:
                out.append(_str(_dict(entry, "listaddresses[]").get("address"), "address"))
        return out

    def get_new_address(self) -> str:
        return _str(self.call("getnewaddress"), "getnewaddress")

    def import_address(self, address: str, *, rescan: bool) -> None:
        self.call("importaddress", address, "", rescan)

    # --- permissions ------------------------------------------------------------------

    def grant(self, addresses: Sequence[str], permissions: str) -> str:
        return _str(self.call("grant", ",".join(addresses), permissions), "grant")

    def revoke(self, addresses: Sequence[str], permissions: str) -> str:
        return _str(self.call("revoke", ",".join(addresses), permissions), "revoke")

    def list_permissions(self, permissions: str, addresses: Sequence[str]) -> list[PermissionEntry]:
        raw = _list(
            self.call("listpermissions", permissions, ",".join(addresses)), "listpermissions"
        )
        out = []
        for entry in raw:
            item = _dict(entry, "listpermissions[]")
            target = item.get("for")
            entity = None
            if isinstance(target, dict):
                entity = _str(target.get("name"), "listpermissions[].for.name")
            out.append(
                PermissionEntry(
                    address=_str(item.get("address"), "listpermissions[].address"),
                    type=_str(item.get("type"), "listpermissions[].type"),
                    entity=entity,
                )
            )
        return out

    # --- assets ---------------------------------------------------------------------------

    def issue(
        self, address: str, name: str, *, open: bool, quantity: Decimal, units: Decimal
    ) -> str:
        params = {"name": name, "open": open}
        answer = self.call("issue", address, params, wire_number(quantity), wire_number(units))
        return _str(answer, "issue")

    def issue_more_from(
        self,
        from_address: str,
        to_address: str,
        asset: str,
        quantity: Decimal,
        custom_fields: Mapping[str, str],
    ) -> str:
        # Native amount 0: prosum's chain has no native currency (as in the paper's scenario).
        answer = self.call(
            "issuemorefrom",
            from_address,
            to_address,
            asset,
            wire_number(quantity),
            0,
            dict(custom_fields),
        )
        return _str(answer, "issuemorefrom")

    def list_assets(self, names: Sequence[str] | None = None, *, verbose: bool) -> list[AssetInfo]:
        which: object = list(names) if names else "*"
        raw = _list(self.call("listassets", which, verbose), "listassets")
        return [_asset(_dict(entry, "listassets[]")) for entry in raw]

    def get_address_balances(
        self, address: str, *, minconf: int, include_locked: bool
    ) -> dict[str, Decimal]:
        raw = self.call("getaddressbalances", address, minconf, include_locked)
        return _quantities(raw, "getaddressbalances")

    def get_multi_balances(
        self, addresses: Sequence[str], *, minconf: int, include_locked: bool
    ) -> dict[str, dict[str, Decimal]]:
        """Balances of many addresses in one call: ``{address: [{"name", "qty"}...],
        "total": [...]}``. An address without balances may be left out; it holds nothing."""
        raw = self.call("getmultibalances", list(addresses), "*", minconf, include_locked)
        if isinstance(raw, list) and len(addresses) == 1:
            # The recording shows a single address's answer as a bare list.
            return {addresses[0]: _quantities(raw, "getmultibalances")}
        table = _dict(raw, "getmultibalances")
        return {
            address: _quantities(table[address], f"getmultibalances[{address}]")
            for address in addresses
            if address in table
        }

    # --- streams --------------------------------------------------------------------------

    def create_stream(self, name: str, *, open: bool) -> str:
        return _str(self.call("create", "stream", name, open), "create")

    def list_streams(self) -> list[str]:
        raw = _list(self.call("liststreams"), "liststreams")
        return [_str(_dict(entry, "liststreams[]").get("name"), "stream name") for entry in raw]

    def subscribe(self, stream: str) -> None:
        self.call("subscribe", stream)

    def publish_from(self, from_address: str, item: StreamPublish) -> str:
        answer = self.call("publishfrom", from_address, item.stream, item.key, item.data_hex)
        return _str(answer, "publishfrom")

    def list_stream_items(self, stream: str, *, start: int, count: int) -> list[StreamItem]:
        raw = self.call("liststreamitems", stream, False, count, start)
        return [_stream_item(entry) for entry in _list(raw, "liststreamitems")]

    def list_stream_key_items(
        self, stream: str, key: str, *, start: int = 0, count: int = 100
    ) -> list[StreamItem]:
        raw = self.call("liststreamkeyitems", stream, key, False, count, start)
        return [_stream_item(entry) for entry in _list(raw, "liststreamkeyitems")]

    def get_txout_data(self, outpoint: OutPoint) -> str:
        return _str(self.call("gettxoutdata", outpoint.txid, outpoint.vout), "gettxoutdata")

    def send_with_data_from(
        self,
        from_address: str,
        to_address: str,
        assets: Mapping[str, Decimal],
        item: StreamPublish,
    ) -> str:
        answer = self.call(
            "sendwithdatafrom", from_address, to_address, _assets(assets), item.to_json()
        )
        return _str(answer, "sendwithdatafrom")

    # --- exchanges and raw transactions -----------------------------------------------

    def prepare_lock_unspent_from(self, address: str, assets: Mapping[str, Decimal]) -> OutPoint:
        raw = self.call("preparelockunspentfrom", address, _assets(assets), True)
        return _outpoint(raw, "preparelockunspentfrom")

    def lock_unspent(self, *, unlock: bool, outpoints: Sequence[OutPoint]) -> None:
        self.call("lockunspent", unlock, [op.to_json() for op in outpoints])

    def create_raw_exchange(self, offer: OutPoint, ask: Mapping[str, Decimal]) -> str:
        raw = self.call("createrawexchange", offer.txid, offer.vout, _assets(ask))
        return _str(raw, "createrawexchange")

    def decode_raw_exchange(self, tx_hex: str) -> ExchangeDetails:
        raw = _dict(self.call("decoderawexchange", tx_hex), "decoderawexchange")
        offer = _dict(raw.get("offer"), "decoderawexchange.offer")
        ask = _dict(raw.get("ask"), "decoderawexchange.ask")
        return ExchangeDetails(
            offer=_quantities(offer.get("assets", []), "decoderawexchange.offer.assets"),
            ask=_quantities(ask.get("assets", []), "decoderawexchange.ask.assets"),
            can_complete=_bool(raw.get("cancomplete"), "decoderawexchange.cancomplete"),
            complete=_bool(raw.get("complete"), "decoderawexchange.complete"),
        )

    def append_raw_exchange(self, tx_hex: str, bid: OutPoint, ask: Mapping[str, Decimal]) -> RawTx:
        raw = self.call("appendrawexchange", tx_hex, bid.txid, bid.vout, _assets(ask))
        return _raw_tx(raw, "appendrawexchange")

    def append_raw_data(self, tx_hex: str, item: StreamPublish) -> str:
        return _str(self.call("appendrawdata", tx_hex, item.to_json()), "appendrawdata")

    def create_raw_transaction(
        self,
        inputs: Sequence[OutPoint],
        outputs: Mapping[str, Mapping[str, Decimal]],
        data: Sequence[StreamPublish] = (),
    ) -> str:
        raw = self.call(
            "createrawtransaction",
            [op.to_json() for op in inputs],
            {address: _assets(assets) for address, assets in outputs.items()},
            [item.to_json() for item in data],
        )
        return _str(raw, "createrawtransaction")

    def sign_raw_transaction(self, tx_hex: str) -> RawTx:
        return _raw_tx(self.call("signrawtransaction", tx_hex), "signrawtransaction")

    def send_raw_transaction(self, tx_hex: str) -> str:
        return _str(self.call("sendrawtransaction", tx_hex), "sendrawtransaction")

    def get_raw_transaction(self, txid: str) -> TxStatus:
        raw = _dict(self.call("getrawtransaction", txid, 1), "getrawtransaction")
        blockhash = raw.get("blockhash")
        confirmations = raw.get("confirmations", 0)
        return TxStatus(
            txid=_str(raw.get("txid"), "getrawtransaction.txid"),
            blockhash=blockhash if isinstance(blockhash, str) else None,
            confirmations=_int(confirmations, "getrawtransaction.confirmations"),
        )

    def get_raw_mempool(self) -> list[str]:
        return [_str(t, "getrawmempool[]") for t in _list(self.call("getrawmempool"), "mempool")]


# --- shape checks --------------------------------------------------------------------------


def _error_from(method: str, answer: object, status: int | None) -> MultiChainError:
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            if isinstance(code, int) and isinstance(message, str):
                return rpc_error(code, message, method)
    return MultiChainProtocolError(
        f"{method}: HTTP {status} without a JSON-RPC error in the body: {answer!r:.200}"
    )


def _dict(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise MultiChainProtocolError(f"{what}: expected an object, got {value!r:.200}")
    return cast(dict[str, object], value)


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise MultiChainProtocolError(f"{what}: expected a list, got {value!r:.200}")
    return cast(list[object], value)


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MultiChainProtocolError(f"{what}: expected a string, got {value!r:.200}")
    return value


def _int(value: object, what: str) -> int:
    # 1.0.9 may print a count as a real (``3.0``); a whole real is still a count.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MultiChainProtocolError(f"{what}: expected an integer, got {value!r:.200}")
    return value


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise MultiChainProtocolError(f"{what}: expected true or false, got {value!r:.200}")
    return value


def _assets(assets: Mapping[str, Decimal]) -> dict[str, int | float]:
    return {name: wire_number(quantity) for name, quantity in assets.items()}


def _quantities(value: object, what: str) -> dict[str, Decimal]:
    """``[{"name": ..., "qty": ...}, ...]`` as exact quantities per asset name."""
    out: dict[str, Decimal] = {}
    for entry in _list(value, what):
        item = _dict(entry, what + "[]")
        name = item.get("name")
        if not isinstance(name, str):
            continue  # the native currency, when a chain has one, is listed without a name
        quantity = exact_decimal(item.get("qty"), f"{what}[{name}].qty")
        out[name] = out.get(name, Decimal(0)) + quantity
    return out


def _outpoint(value: object, what: str) -> OutPoint:
    item = _dict(value, what)
    return OutPoint(_str(item.get("txid"), what + ".txid"), _int(item.get("vout"), what + ".vout"))


def _raw_tx(value: object, what: str) -> RawTx:
    item = _dict(value, what)
    return RawTx(_str(item.get("hex"), what + ".hex"), _bool(item.get("complete"), what))


def _asset(item: dict[str, object]) -> AssetInfo:
    name = _str(item.get("name"), "listassets[].name")
    issues = []
    for entry in _list(item.get("issues", []), f"listassets[{name}].issues"):
        issue = _dict(entry, f"listassets[{name}].issues[]")
        details = issue.get("details", {})
        fields = {
            key: value
            for key, value in (details.items() if isinstance(details, dict) else ())
            if isinstance(key, str) and isinstance(value, str)
        }
        issues.append(
            IssueEvent(
                txid=_str(issue.get("txid"), f"listassets[{name}].issues[].txid"),
                quantity=exact_decimal(issue.get("qty"), f"listassets[{name}].issues[].qty"),
                details=fields,
            )
        )
    return AssetInfo(
        name=name,
        issue_txid=_str(item.get("issuetxid"), f"listassets[{name}].issuetxid"),
        units=exact_decimal(item.get("units"), f"listassets[{name}].units"),
        open=_bool(item.get("open"), f"listassets[{name}].open"),
        issued=exact_decimal(item.get("issueqty"), f"listassets[{name}].issueqty"),
        issues=tuple(issues),
    )


def _stream_item(value: object) -> StreamItem:
    item = _dict(value, "stream item")
    # 1.0.9 lists one ``key``; 2.x lists ``keys``.
    keys_value = item.get("keys")
    if isinstance(keys_value, list):
        keys = tuple(_str(k, "stream item key") for k in keys_value)
    else:
        keys = (_str(item.get("key"), "stream item key"),)
    data = item.get("data")
    data_hex = data if isinstance(data, str) else None
    data_ref = None
    if isinstance(data, dict) and "txid" in data:
        data_ref = _outpoint(data, "stream item data reference")
    return StreamItem(
        txid=_str(item.get("txid"), "stream item txid"),
        keys=keys,
        publishers=tuple(_str(p, "publisher") for p in _list(item.get("publishers", []), "pub")),
        data_hex=data_hex,
        data_ref=data_ref,
        confirmations=_int(item.get("confirmations", 0), "stream item confirmations"),
    )
