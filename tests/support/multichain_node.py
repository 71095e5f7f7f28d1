"""A MultiChain node for tests, built from the behaviour recorded in ``MULTICHAIN_RPC.md``.

No MultiChain node can be installed here, so the backend is tested against this: a small
JSON-RPC server over real HTTP (stdlib ``http.server`` in a thread, 127.0.0.1, a free port,
Basic auth) that the real Savoir client talks to. It implements exactly the calls the prosum
backend makes, plus the ones the recorded scenario used, with:

- the recorded answers and shapes, and the recorded errors (HTTP 500 with the
  ``{"result": null, "error": {"code", "message"}, "id"}`` body; HTTP 401 with an HTML page
  on a wrong password);
- quantities as 1.0.9 prints them (reals, written with 8 decimals like Bitcoin Core's
  json_spirit writer, so Python reads ``495.0``) or as 2.x does (integers when whole), chosen
  with ``version``;
- UTXO semantics sufficient for what the backend relies on: locked outputs are left out of
  balances and coin selection, exchanges are signed SINGLE|ANYONECANPAY per input and can be
  taken only once, a spent input makes a second taker fail, transactions must balance per
  asset, and send, receive and per-asset issue permissions are checked.

Where the recording is silent, the behaviour below is *assumed* and says so in a comment;
those are the places a real node could differ. The node has one wallet holding every key
(as the prosum adapter's node does), mines a block of everything in its mempool every
``block_time`` seconds (no empty blocks: assumed, MultiChain also mines empty rounds), and
keeps nothing after it stops.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from prosum_ledger.adapters.multichain.config import MultiChainConnection

Version = Literal["1.0.9", "2.x"]

_GLOBAL_PERMISSIONS = ("connect", "send", "receive", "issue", "create", "mine", "activate", "admin")
_ASSET_PERMISSIONS = ("issue", "admin")
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_END_BLOCK = 4294967295
_SINGLE = "SINGLE|ANYONECANPAY"
_ALL = "ALL"

# Bitcoin Core's answer to a bad password (MultiChain keeps Bitcoin Core's RPC server).
_UNAUTHORIZED_HTML = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN"\r\n'
    '"http://www.w3.org/TR/1999/REC-html401-19991224/loose.dtd">\r\n'
    "<HTML>\r\n<HEAD>\r\n<TITLE>Error</TITLE>\r\n"
    "<META HTTP-EQUIV='Content-Type' CONTENT='text/html; charset=ISO-8859-1'>\r\n"
    "</HEAD>\r\n<BODY><H1>401 Unauthorized.</H1></BODY>\r\n</HTML>\r\n"
)


class Fault(Exception):
    """A JSON-RPC error the node answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Real:
    """A quantity, printed the way the node's version prints it."""

    value: Decimal


@dataclass(slots=True)
class _Output:
    address: str | None  # None: a data output
    assets: dict[str, int]  # asset name -> raw units
    item: dict[str, str] | None = None  # {"stream", "key", "data"} for a stream item


@dataclass(slots=True)
class _Tx:
    txid: str
    hex: str
    doc: dict[str, Any]
    outputs: list[_Output]
    publishers: list[str]
    block: int | None = None
    issue: tuple[str, int, dict[str, str], str] | None = None  # asset, raw, details, issuer


@dataclass(slots=True)
class _Asset:
    name: str
    issuetxid: str
    multiple: int
    units: Decimal
    open: bool
    details: dict[str, str]
    assetref: str | None = None


@dataclass(slots=True)
class _Stream:
    name: str
    createtxid: str
    open: bool
    details: dict[str, str]
    subscribed: bool = False
    streamref: str | None = None


@dataclass(slots=True)
class _Block:
    hash: str
    height: int
    txids: list[str]
    time: int


@dataclass(slots=True)
class _Injected:
    code: int
    message: str
    times: int


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _encode(doc: dict[str, Any]) -> str:
    return _canonical(doc).encode().hex()


class RecordedMultiChainNode:
    """Start with ``with RecordedMultiChainNode() as node:``; connect with ``node.connection()``."""

    def __init__(
        self,
        *,
        chain_name: str = "prosum-test",
        user: str = "multichainrpc",
        password: str = "recorded-node-password",
        version: Version = "1.0.9",
        block_time: float | None = 0.01,
        max_shown_data: int = 256,
    ) -> None:
        self.chain_name = chain_name
        self.user = user
        self.password = password
        self.version: Version = version
        self.block_time = block_time
        self.max_shown_data = max_shown_data
        self.calls: list[str] = []
        self._lock = threading.RLock()
        self._injected: dict[str, list[_Injected]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._mining_paused = False
        self._connections: set[socket.socket] = set()
        self._seq = 0
        # Chain state.
        self.burn_address = self._new_address_text()
        self.admin_address = self._new_address_text()
        self.wallet: list[str] = [self.admin_address]
        self.watched: set[str] = set()
        self.permissions: dict[str, set[str]] = {self.admin_address: set(_GLOBAL_PERMISSIONS)}
        self.asset_permissions: dict[str, dict[str, set[str]]] = {}
        self.assets: dict[str, _Asset] = {}
        self.streams: dict[str, _Stream] = {}
        self.txs: dict[str, _Tx] = {}
        self.mempool: list[str] = []
        self.outs: dict[tuple[str, int], _Output] = {}  # every address output ever made
        self.spent: dict[tuple[str, int], str] = {}  # outpoint -> the transaction spending it
        self.locked: set[tuple[str, int]] = set()
        genesis = hashlib.sha256(chain_name.encode()).hexdigest()
        self.blocks: list[_Block] = [_Block(genesis, 0, [], int(time.time()))]

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> RecordedMultiChainNode:
        node = self

        class Handler(_Handler):
            pass

        Handler.node = node
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        serve = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        serve.start()
        self._threads.append(serve)
        if self.block_time is not None:
            miner = threading.Thread(target=self._mine_forever, daemon=True)
            miner.start()
            self._threads.append(miner)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        # A stopped node drops its kept-alive connections too.
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> RecordedMultiChainNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the node is not started")
        return int(self._server.server_address[1])

    def connection(self, **overrides: Any) -> MultiChainConnection:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "chain_name": self.chain_name,
            "timeout_s": 5.0,
        }
        values.update(overrides)
        return MultiChainConnection(**values)

    def _mine_forever(self) -> None:
        assert self.block_time is not None
        while not self._stopping.wait(self.block_time):
            if not self._mining_paused:
                self.mine()

    # --- test controls ----------------------------------------------------------------------

    def mine(self) -> int:
        """Put everything in the mempool into a new block; the chain height after."""
        with self._lock:
            if not self.mempool:
                return self.height
            height = self.height + 1
            block_hash = hashlib.sha256(f"{height}:{self.mempool}".encode()).hexdigest()
            for offset, txid in enumerate(self.mempool):
                tx = self.txs[txid]
                tx.block = height
                ref = f"{height}-{266 + offset * 64}-{int.from_bytes(bytes.fromhex(txid)[:2], 'little')}"
                for asset in self.assets.values():
                    if asset.issuetxid == txid:
                        asset.assetref = ref
                for stream in self.streams.values():
                    if stream.createtxid == txid:
                        stream.streamref = ref
            self.blocks.append(_Block(block_hash, height, list(self.mempool), int(time.time())))
            self.mempool.clear()
            return height

    @property
    def height(self) -> int:
        return self.blocks[-1].height

    def fail_next(self, method: str, code: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with this recorded error."""
        with self._lock:
            self._injected.setdefault(method, []).append(_Injected(code, message, times))

    def revoke_now(self, address: str, permission: str) -> None:
        """As another admin's revoke reaching this node: takes effect at once."""
        with self._lock:
            self._set_permission(address, permission, grant=False)

    def pause_mining(self) -> None:
        """Hold blocks back: transactions stay in the mempool until ``resume_mining``."""
        self._mining_paused = True

    def resume_mining(self) -> None:
        self._mining_paused = False

    @contextmanager
    def paused_mining(self) -> Iterator[None]:
        self.pause_mining()
        try:
            yield
        finally:
            self.resume_mining()

    # --- dispatch ---------------------------------------------------------------------------

    def dispatch(self, method: str, params: list[Any]) -> Any:
        with self._lock:
            self.calls.append(method)
            queued = self._injected.get(method)
            if queued:
                fault = queued[0]
                fault.times -= 1
                if fault.times <= 0:
                    queued.pop(0)
                raise Fault(fault.code, fault.message)
            handler: Callable[[list[Any]], Any] | None = getattr(self, f"rpc_{method}", None)
            if handler is None:
                raise Fault(-32601, "Method not found")
            try:
                return handler(params)
            except (
                IndexError,
                KeyError,
                TypeError,
                AttributeError,
                ValueError,
                ArithmeticError,
            ) as exc:
                # Bitcoin Core answers a wrong parameter list with -1 and the call's help text.
                raise Fault(-1, f"{method}: bad parameters ({exc})") from exc

    # --- formatting ---------------------------------------------------------------------------

    def _real(self, value: Decimal | int) -> _Real:
        return _Real(Decimal(value))

    def _qty(self, asset: str, raw: int) -> _Real:
        return _Real(Decimal(raw) / self.assets[asset].multiple)

    def _asset_list(self, amounts: dict[str, int]) -> list[dict[str, Any]]:
        return [
            {"name": name, "assetref": self.assets[name].assetref, "qty": self._qty(name, raw)}
            for name, raw in amounts.items()
            if raw
        ]

    # --- helpers --------------------------------------------------------------------------

    def _new_address_text(self) -> str:
        return "1" + "".join(secrets.choice(_BASE58) for _ in range(37))

    def _known_address(self, address: object) -> str:
        if not isinstance(address, str) or not (
            address in self.wallet
            or address in self.watched
            or address == self.burn_address
            or address in self.permissions
        ):
            # Assumed: the node can only check the format; any address it has not seen is
            # treated as malformed here.
            raise Fault(-5, f"Invalid address: {address}")
        return address

    def _own(self, address: object) -> str:
        if not isinstance(address, str) or address not in self.wallet:
            # Assumed wording.
            raise Fault(-4, "from-address is not found in this wallet")
        return address

    def _can(self, address: str | None, permission: str) -> bool:
        return address is not None and permission in self.permissions.get(address, set())

    def _can_receive(self, address: str | None) -> bool:
        # Assumed: the burn address takes anything (it is how MultiChain burns assets).
        return address == self.burn_address or self._can(address, "receive")

    def _asset(self, name: object) -> _Asset:
        if isinstance(name, str):
            for asset in self.assets.values():
                if asset.name.lower() == name.lower() or asset.issuetxid == name:
                    return asset
        raise Fault(-708, f"Issue transaction with this name not found: {name}")

    def _stream(self, name: object) -> _Stream:
        if isinstance(name, str):
            for stream in self.streams.values():
                if stream.name.lower() == name.lower() or stream.createtxid == name:
                    return stream
        # Assumed wording, modelled on the recorded asset message.
        raise Fault(-708, f"Stream with this name not found: {name}")

    def _raw(self, asset: _Asset, quantity: object) -> int:
        if isinstance(quantity, bool) or not isinstance(quantity, int | Decimal):
            raise Fault(-3, "Invalid quantity")
        raw = Decimal(quantity) * asset.multiple
        if raw < 0 or raw != raw.to_integral_value():
            # Assumed: MultiChain rounds to the asset's unit; prosum never sends finer amounts.
            raise Fault(-8, f"Invalid quantity for asset {asset.name}: {quantity}")
        return int(raw)

    def _amounts(self, assets: object) -> dict[str, int]:
        if not isinstance(assets, dict):
            raise Fault(-8, "Invalid asset quantities object")
        out: dict[str, int] = {}
        for name, quantity in assets.items():
            asset = self._asset(name)
            out[asset.name] = out.get(asset.name, 0) + self._raw(asset, quantity)
        return out

    def _item(self, data: object, what: str) -> dict[str, str]:
        if isinstance(data, str):
            self._hex(data)
            return {"stream": "", "key": "", "data": data}
        if not isinstance(data, dict) or "for" not in data:
            raise Fault(-8, f"{what}: invalid data object")
        stream = self._stream(data["for"])
        key = str(data.get("key", ""))
        if len(key.encode()) > 256:
            raise Fault(-8, "Item key is too long")
        payload = str(data.get("data", ""))
        self._hex(payload)
        return {"stream": stream.name, "key": key, "data": payload}

    def _hex(self, text: str) -> None:
        try:
            bytes.fromhex(text)
        except ValueError as exc:
            raise Fault(-8, "data should be hexadecimal string") from exc

    def _confirmations(self, tx: _Tx) -> int:
        return 0 if tx.block is None else self.height - tx.block + 1

    def _live(self, outpoint: tuple[str, int]) -> _Output | None:
        out = self.outs.get(outpoint)
        return None if out is None or outpoint in self.spent else out

    def _coins(
        self, address: str, *, minconf: int = 0, include_locked: bool = False
    ) -> Iterator[tuple[tuple[str, int], _Output]]:
        for outpoint, out in self.outs.items():
            if out.address != address or outpoint in self.spent:
                continue
            if outpoint in self.locked and not include_locked:
                continue
            if self._confirmations(self.txs[outpoint[0]]) < minconf:
                continue
            yield outpoint, out

    def _select(
        self, address: str, want: dict[str, int]
    ) -> tuple[list[tuple[str, int]], dict[str, int]]:
        """Unlocked outputs of ``address`` covering ``want``; the chosen outpoints and their sum."""
        chosen: list[tuple[str, int]] = []
        total: dict[str, int] = {}
        for outpoint, out in self._coins(address):
            if all(total.get(a, 0) >= q for a, q in want.items()):
                break
            if any(out.assets.get(a, 0) and total.get(a, 0) < q for a, q in want.items()):
                chosen.append(outpoint)
                for a, q in out.assets.items():
                    total[a] = total.get(a, 0) + q
        if any(total.get(a, 0) < q for a, q in want.items()):
            raise Fault(
                -6, "Insufficient funds" if self.version == "1.0.9" else "Insufficient funds."
            )
        return chosen, total

    def _doc(self, vin: Sequence[tuple[str, int]], vout: list[dict[str, Any]]) -> dict[str, Any]:
        self._seq += 1
        return {
            "vin": [{"txid": t, "vout": n, "sig": None} for t, n in vin],
            "vout": vout,
            "nonce": f"{self._seq}-{secrets.token_hex(4)}",
        }

    @staticmethod
    def _digest(doc: dict[str, Any], index: int, kind: str) -> str:
        if kind == _SINGLE:
            # Commits to its own input and the output at the same index only.
            vout = doc["vout"][index] if index < len(doc["vout"]) else None
            inp = doc["vin"][index]
            body: Any = {"in": [inp["txid"], inp["vout"]], "out": vout}
        else:
            body = {
                "vin": [[i["txid"], i["vout"]] for i in doc["vin"]],
                "vout": doc["vout"],
                "nonce": doc.get("nonce"),
            }
        return hashlib.sha256(_canonical(body).encode()).hexdigest()

    def _sign(self, doc: dict[str, Any], index: int, kind: str) -> None:
        outpoint = (doc["vin"][index]["txid"], doc["vin"][index]["vout"])
        owner = self.outs[outpoint].address
        doc["vin"][index]["sig"] = {
            "by": owner,
            "type": kind,
            "digest": self._digest(doc, index, kind),
        }

    def _decode(
        self, tx_hex: object, *, code: int = -22, message: str = "TX decode failed"
    ) -> dict[str, Any]:
        try:
            doc = json.loads(bytes.fromhex(str(tx_hex)), parse_float=Decimal)
        except ValueError as exc:
            raise Fault(code, message) from exc
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("vin"), list)
            or not isinstance(doc.get("vout"), list)
        ):
            raise Fault(code, message)
        return doc

    def _outputs_of(self, doc: dict[str, Any]) -> list[_Output]:
        outs = []
        for entry in doc["vout"]:
            if "data" in entry:
                outs.append(_Output(None, {}, dict(entry["data"])))
            else:
                outs.append(
                    _Output(entry["address"], {k: int(v) for k, v in entry["assets"].items()})
                )
        return outs

    def _accept(
        self,
        doc: dict[str, Any],
        publishers: Sequence[str],
        issue: tuple[str, int, dict[str, str], str] | None = None,
    ) -> str:
        tx_hex = _encode(doc)
        txid = _sha256d(bytes.fromhex(tx_hex))[::-1].hex()
        outputs = self._outputs_of(doc)
        for inp in doc["vin"]:
            self.spent[(inp["txid"], inp["vout"])] = txid
        for n, out in enumerate(outputs):
            if out.address is not None:
                self.outs[(txid, n)] = out
        self.txs[txid] = _Tx(
            txid, tx_hex, doc, outputs, list(dict.fromkeys(publishers)), issue=issue
        )
        self.mempool.append(txid)
        return txid

    def _ordered_txs(self) -> Iterator[_Tx]:
        for block in self.blocks:
            for txid in block.txids:
                yield self.txs[txid]
        for txid in self.mempool:
            yield self.txs[txid]

    def _set_permission(self, address: str, permission: str, *, grant: bool) -> None:
        if "." in permission:
            asset_name, kind = permission.split(".", 1)
            asset = self._asset(asset_name)
            if kind not in _ASSET_PERMISSIONS:
                raise Fault(-8, f"Invalid permission: {permission}")  # assumed wording
            held = self.asset_permissions.setdefault(asset.name, {}).setdefault(address, set())
        else:
            if permission not in _GLOBAL_PERMISSIONS:
                raise Fault(-8, f"Invalid permission: {permission}")  # assumed wording
            kind = permission
            held = self.permissions.setdefault(address, set())
        if grant:
            held.add(kind)
        else:
            held.discard(kind)

    # --- general --------------------------------------------------------------------------

    def rpc_getinfo(self, params: list[Any]) -> Any:
        v1 = self.version == "1.0.9"
        return {
            "version": "1.0.9" if v1 else "2.3.3",
            "nodeversion": 10009901 if v1 else 20303901,
            "protocolversion": 10011 if v1 else 20013,
            "chainname": self.chain_name,
            "description": f"MultiChain {self.chain_name}",
            "protocol": "multichain",
            "port": 7447,
            "setupblocks": 60,
            "nodeaddress": f"{self.chain_name}@127.0.0.1:7447",
            "burnaddress": self.burn_address,
            "incomingpaused": False,
            "miningpaused": False,
            "walletversion": 60000,
            "balance": self._real(0),
            "walletdbversion": 2,
            "reindex": False,
            "blocks": self.height,
            "timeoffset": 0,
            "connections": 0,
            "proxy": "",
            "difficulty": _Real(Decimal("0.00000006")),
            "testnet": False,
            "keypoololdest": self.blocks[0].time,
            "keypoolsize": 2,
            "paytxfee": self._real(0),
            "relayfee": self._real(0),
            "errors": "",
        }

    def rpc_getblockcount(self, params: list[Any]) -> Any:
        return self.height

    def rpc_getblock(self, params: list[Any]) -> Any:
        which = params[0]
        found = next((b for b in self.blocks if b.hash == which or b.height == which), None)
        if found is None:
            raise Fault(-5, "Block not found")  # Bitcoin Core's answer; assumed unchanged
        return {
            "hash": found.hash,
            "miner": self.admin_address,
            "confirmations": self.height - found.height + 1,
            "height": found.height,
            "version": 3,
            "tx": list(found.txids),
            "time": found.time,
            "previousblockhash": self.blocks[found.height - 1].hash if found.height else None,
        }

    def rpc_getrawmempool(self, params: list[Any]) -> Any:
        return list(self.mempool)

    def rpc_getrawtransaction(self, params: list[Any]) -> Any:
        tx = self.txs.get(str(params[0]))
        if tx is None:
            raise Fault(-710, "No information available about transaction")
        if not (params[1] if len(params) > 1 else 0):
            return tx.hex
        vout = []
        for n, out in enumerate(tx.outputs):
            entry: dict[str, Any] = {"value": self._real(0), "n": n}
            if out.address is None:
                entry["scriptPubKey"] = {"type": "nulldata"}
                entry["items"] = [out.item]
            else:
                entry["scriptPubKey"] = {"type": "pubkeyhash", "addresses": [out.address]}
                entry["assets"] = self._asset_list(out.assets)
            vout.append(entry)
        result: dict[str, Any] = {
            "hex": tx.hex,
            "txid": tx.txid,
            "version": 1,
            "locktime": 0,
            "vin": [{"txid": i["txid"], "vout": i["vout"]} for i in tx.doc["vin"]],
            "vout": vout,
        }
        if tx.block is not None:
            # Assumed from Bitcoin Core 0.10: a mempool transaction has no block fields at all.
            block = self.blocks[tx.block]
            result.update(
                blockhash=block.hash,
                confirmations=self._confirmations(tx),
                time=block.time,
                blocktime=block.time,
            )
        return result

    # --- wallet ---------------------------------------------------------------------------

    def rpc_getnewaddress(self, params: list[Any]) -> Any:
        address = self._new_address_text()
        self.wallet.append(address)
        self.permissions.setdefault(address, set())
        return address

    def rpc_listaddresses(self, params: list[Any]) -> Any:
        # The paper reads ``listaddresses()[0]["address"]``; the first is the genesis admin.
        mine = [{"address": a, "ismine": True} for a in self.wallet]
        return mine + [{"address": a, "ismine": False} for a in sorted(self.watched)]

    def rpc_importaddress(self, params: list[Any]) -> Any:
        self.watched.add(str(params[0]))
        return None

    # --- permissions ----------------------------------------------------------------------

    def _permission_change(self, params: list[Any], *, grant: bool) -> str:
        addresses = [a.strip() for a in str(params[0]).split(",") if a.strip()]
        wanted = [p.strip() for p in str(params[1]).split(",") if p.strip()]
        for address in addresses:
            self._known_address(address)
        for address in addresses:
            for permission in wanted:
                self._set_permission(address, permission, grant=grant)
        # Assumed: like a real grant, the transaction is signed by the node's admin address.
        return self._accept(self._doc([], []), [self.admin_address])

    def rpc_grant(self, params: list[Any]) -> Any:
        return self._permission_change(params, grant=True)

    def rpc_revoke(self, params: list[Any]) -> Any:
        return self._permission_change(params, grant=False)

    def rpc_listpermissions(self, params: list[Any]) -> Any:
        spec = str(params[0]) if params else "all"
        addresses_param = str(params[1]) if len(params) > 1 else "*"
        only = None if addresses_param == "*" else {a.strip() for a in addresses_param.split(",")}
        wanted = (
            list(_GLOBAL_PERMISSIONS) if spec == "all" else [p.strip() for p in spec.split(",")]
        )
        entries: list[dict[str, Any]] = []
        for permission in wanted:
            if "." in permission:
                asset_name, kind = permission.split(".", 1)
                asset = self._asset(asset_name)
                for address, held in self.asset_permissions.get(asset.name, {}).items():
                    if kind in held and (only is None or address in only):
                        entries.append(
                            {
                                "address": address,
                                "for": {
                                    "type": "asset",
                                    "name": asset.name,
                                    "assetref": asset.assetref,
                                    "issuetxid": asset.issuetxid,
                                },
                                "type": kind,
                                "startblock": 0,
                                "endblock": _END_BLOCK,
                            }
                        )
                continue
            for address, held in self.permissions.items():
                if permission in held and (only is None or address in only):
                    entries.append(
                        {
                            "address": address,
                            "for": None,
                            "type": permission,
                            "startblock": 0,
                            "endblock": _END_BLOCK,
                        }
                    )
        return entries

    # --- assets ---------------------------------------------------------------------------

    def rpc_issue(self, params: list[Any]) -> Any:
        address = self._own(params[0])
        spec = params[1]
        name = spec if isinstance(spec, str) else str(spec["name"])
        is_open = bool(spec.get("open", False)) if isinstance(spec, dict) else False
        units = Decimal(params[3]) if len(params) > 3 else Decimal(1)
        details = dict(params[5]) if len(params) > 5 else {}
        if not self._can(address, "issue"):
            raise Fault(-704, "Issuing assets is not allowed from this address")  # assumed wording
        if any(n.lower() == name.lower() for n in [*self.assets, *self.streams]):
            raise Fault(-705, "Asset or stream with this name already exists")  # assumed wording
        multiple = Decimal(1) / units
        if multiple != multiple.to_integral_value():
            raise Fault(-8, "Invalid asset units")  # assumed wording
        asset = _Asset(name, "", int(multiple), units, is_open, details)
        raw = self._raw(asset, params[2])
        vout = [{"address": address, "assets": {name: raw}}] if raw else []
        self.assets[name] = asset
        txid = self._accept(self._doc([], vout), [address], issue=(name, raw, details, address))
        asset.issuetxid = txid
        # MultiChain gives the first issuer the asset's own issue and admin rights.
        self.asset_permissions.setdefault(name, {})[address] = {"issue", "admin"}
        return txid

    def _issue_more(
        self, issuer: str, to: object, asset_name: object, quantity: object, details: object
    ) -> str:
        asset = self._asset(asset_name)
        if not asset.open:
            raise Fault(-8, "Issuing more units not allowed for this asset")  # assumed wording
        if "issue" not in self.asset_permissions.get(asset.name, {}).get(issuer, set()):
            # Assumed wording; the code is MultiChain's permission code.
            raise Fault(-704, "Issuing more units for this asset is not allowed from this address")
        destination = self._known_address(to)
        if not self._can_receive(destination):
            raise Fault(-704, "Destination address doesn't have receive permission")
        raw = self._raw(asset, quantity)
        if raw <= 0:
            raise Fault(-8, "Quantity must be positive")  # assumed wording
        fields = dict(details) if isinstance(details, dict) else {}
        vout = [{"address": destination, "assets": {asset.name: raw}}]
        # Assumed simplification: the issuer's signing input carries no asset and is not
        # modelled; the transaction lists the issuer as its publisher.
        return self._accept(self._doc([], vout), [issuer], issue=(asset.name, raw, fields, issuer))

    def rpc_issuemorefrom(self, params: list[Any]) -> Any:
        issuer = self._own(params[0])
        return self._issue_more(
            issuer, params[1], params[2], params[3], params[5] if len(params) > 5 else {}
        )

    def rpc_issuemore(self, params: list[Any]) -> Any:
        asset = self._asset(params[1])
        holders = self.asset_permissions.get(asset.name, {})
        # Assumed: the node issues from the first wallet address that may issue this asset.
        issuer = next((a for a in self.wallet if "issue" in holders.get(a, set())), None)
        if issuer is None:
            raise Fault(-704, "Issuing more units for this asset is not allowed from this address")
        return self._issue_more(
            issuer, params[0], params[1], params[2], params[4] if len(params) > 4 else {}
        )

    def rpc_listassets(self, params: list[Any]) -> Any:
        which = params[0] if params else "*"
        verbose = bool(params[1]) if len(params) > 1 else False
        if which == "*":
            chosen = list(self.assets.values())
        else:
            names = which if isinstance(which, list) else [which]
            chosen = [self._asset(n) for n in names]
        result = []
        for asset in chosen:
            # Assumed: issuance events are listed (and counted in issueqty) once confirmed.
            issues = [
                tx
                for tx in self._ordered_txs()
                if tx.issue and tx.issue[0] == asset.name and tx.block is not None
            ]
            raw_total = sum(tx.issue[1] for tx in issues if tx.issue)
            entry: dict[str, Any] = {
                "name": asset.name,
                "issuetxid": asset.issuetxid,
                "assetref": asset.assetref,
                "multiple": asset.multiple,
                "units": _Real(asset.units),
                "open": asset.open,
                "details": asset.details,
                "issueqty": self._qty(asset.name, raw_total),
                "issueraw": raw_total,
                "subscribed": False,
            }
            if verbose:
                entry["issues"] = [
                    {
                        "txid": tx.txid,
                        "qty": self._qty(asset.name, tx.issue[1]),
                        "raw": tx.issue[1],
                        "details": tx.issue[2],
                        "issuers": [tx.issue[3]],
                    }
                    for tx in issues
                    if tx.issue
                ]
            result.append(entry)
        return result

    def rpc_getaddressbalances(self, params: list[Any]) -> Any:
        address = str(params[0])
        minconf = int(params[1]) if len(params) > 1 else 1
        include_locked = bool(params[2]) if len(params) > 2 else False
        totals: dict[str, int] = {}
        for _outpoint, out in self._coins(address, minconf=minconf, include_locked=include_locked):
            for name, raw in out.assets.items():
                totals[name] = totals.get(name, 0) + raw
        return self._asset_list(totals)

    def rpc_getmultibalances(self, params: list[Any]) -> Any:
        # Assumed shape, from MultiChain's API documentation: an object keyed by address, plus
        # "total". The recording only says a single address's answer looks like
        # getaddressbalances' list.
        which = params[0] if params else "*"
        if which == "*":
            addresses = list(self.wallet)
        elif isinstance(which, list):
            addresses = [str(a) for a in which]
        else:
            addresses = [a.strip() for a in str(which).split(",")]
        minconf = int(params[2]) if len(params) > 2 else 1
        include_locked = bool(params[3]) if len(params) > 3 else False
        result: dict[str, Any] = {}
        grand: dict[str, int] = {}
        for address in addresses:
            totals: dict[str, int] = {}
            for _outpoint, out in self._coins(
                address, minconf=minconf, include_locked=include_locked
            ):
                for name, raw in out.assets.items():
                    totals[name] = totals.get(name, 0) + raw
                    grand[name] = grand.get(name, 0) + raw
            result[address] = self._asset_list(totals)
        result["total"] = self._asset_list(grand)
        return result

    # --- streams --------------------------------------------------------------------------

    def rpc_create(self, params: list[Any]) -> Any:
        if params[0] != "stream":
            raise Fault(-8, "Invalid entity type, should be stream")  # assumed wording
        name = str(params[1])
        if any(n.lower() == name.lower() for n in [*self.assets, *self.streams]):
            raise Fault(-705, "Asset or stream with this name already exists")  # assumed wording
        details = dict(params[3]) if len(params) > 3 else {}
        txid = self._accept(self._doc([], []), [self.admin_address])
        self.streams[name] = _Stream(name, txid, bool(params[2]), details)
        return txid

    def rpc_liststreams(self, params: list[Any]) -> Any:
        out = []
        for stream in self.streams.values():
            items = list(self._stream_items(stream.name))
            out.append(
                {
                    "name": stream.name,
                    "createtxid": stream.createtxid,
                    "streamref": stream.streamref,
                    "open": stream.open,
                    "details": stream.details,
                    "subscribed": stream.subscribed,
                    "synchronized": stream.subscribed,
                    "items": len(items),
                    "confirmed": sum(1 for tx, _n, _o in items if tx.block is not None),
                    "keys": len({o.item["key"] for _t, _n, o in items if o.item}),
                    "publishers": len({p for tx, _n, _o in items for p in tx.publishers}),
                }
            )
        return out

    def rpc_subscribe(self, params: list[Any]) -> Any:
        names = params[0] if isinstance(params[0], list) else [params[0]]
        for name in names:
            self._stream(name).subscribed = True
        return None

    def _publish(self, publisher: str, params: Sequence[Any]) -> str:
        stream = self._stream(params[0])
        if not self._can(publisher, "send"):
            raise Fault(-704, "from-address doesn't have send permission")  # assumed for publish
        item = self._item({"for": stream.name, "key": params[1], "data": params[2]}, "publish")
        return self._accept(self._doc([], [{"data": item}]), [publisher])

    def rpc_publishfrom(self, params: list[Any]) -> Any:
        return self._publish(self._own(params[0]), params[1:])

    def rpc_publish(self, params: list[Any]) -> Any:
        publisher = next((a for a in self.wallet if self._can(a, "send")), self.admin_address)
        return self._publish(publisher, params)

    def _stream_items(
        self, name: str, key: str | None = None
    ) -> Iterator[tuple[_Tx, int, _Output]]:
        for tx in self._ordered_txs():
            for n, out in enumerate(tx.outputs):
                if (
                    out.item
                    and out.item["stream"] == name
                    and (key is None or out.item["key"] == key)
                ):
                    yield tx, n, out

    def _list_items(self, stream_name: object, key: str | None, params: Sequence[Any]) -> Any:
        stream = self._stream(stream_name)
        if not stream.subscribed:
            raise Fault(-703, "Not subscribed to this stream")  # assumed wording
        count = int(params[1]) if len(params) > 1 else 10
        start = int(params[2]) if len(params) > 2 else -count
        items = list(self._stream_items(stream.name, key))
        if start < 0:
            start = max(0, len(items) + start)
        out = []
        for tx, n, output in items[start : start + count]:
            assert output.item is not None
            data_hex = output.item["data"]
            # Items larger than maxshowndata are listed by reference (read with gettxoutdata).
            data: Any = (
                data_hex
                if len(data_hex) // 2 <= self.max_shown_data
                else {"txid": tx.txid, "vout": n, "size": len(data_hex) // 2}
            )
            entry: dict[str, Any] = {"publishers": list(tx.publishers)}
            if self.version == "1.0.9":
                entry["key"] = output.item["key"]
            else:
                entry.update(keys=[output.item["key"]], offchain=False, available=True)
            entry.update(data=data, confirmations=self._confirmations(tx), txid=tx.txid)
            if tx.block is not None:
                entry["blocktime"] = self.blocks[tx.block].time
            out.append(entry)
        return out

    def rpc_liststreamitems(self, params: list[Any]) -> Any:
        return self._list_items(params[0], None, params[1:])

    def rpc_liststreamkeyitems(self, params: list[Any]) -> Any:
        return self._list_items(params[0], str(params[1]), params[2:])

    def rpc_gettxoutdata(self, params: list[Any]) -> Any:
        tx = self.txs.get(str(params[0]))
        if tx is None:
            raise Fault(-710, "No information available about transaction")
        n = int(params[1])
        if n >= len(tx.outputs) or tx.outputs[n].item is None:
            raise Fault(-8, "Output without metadata")  # assumed wording
        item = tx.outputs[n].item
        assert item is not None
        return item["data"]

    # --- sending --------------------------------------------------------------------------

    def rpc_sendwithdatafrom(self, params: list[Any]) -> Any:
        sender = self._own(params[0])
        if not self._can(sender, "send"):
            # Recorded for sendassetfrom; assumed the same for sendwithdatafrom.
            raise Fault(-704, "from-address doesn't have send permission")
        destination = self._known_address(params[1])
        if not self._can_receive(destination):
            raise Fault(-704, "Destination address doesn't have receive permission")
        want = self._amounts(params[2])
        item = self._item(params[3], "sendwithdatafrom")
        chosen, total = self._select(sender, want)
        vout: list[dict[str, Any]] = [{"address": destination, "assets": want}]
        change = {
            a: total.get(a, 0) - want.get(a, 0) for a in total if total.get(a, 0) - want.get(a, 0)
        }
        if change:
            vout.append({"address": sender, "assets": change})
        vout.append({"data": item})
        doc = self._doc(chosen, vout)
        for i in range(len(chosen)):
            self._sign(doc, i, _ALL)
        return self._accept(doc, [sender])

    # --- exchanges ------------------------------------------------------------------------

    def _prepare_lock(self, address: str, assets: object, lock: bool) -> dict[str, Any]:
        if not (self._can(address, "send") and self._can(address, "receive")):
            raise Fault(-704, "from-address must have send and receive permission")
        want = self._amounts(assets)
        chosen, total = self._select(address, want)
        vout: list[dict[str, Any]] = [{"address": address, "assets": want}]
        change = {a: total[a] - want.get(a, 0) for a in total if total[a] - want.get(a, 0)}
        if change:
            vout.append({"address": address, "assets": change})
        doc = self._doc(chosen, vout)
        for i in range(len(chosen)):
            self._sign(doc, i, _ALL)
        txid = self._accept(doc, [address])
        if lock:
            self.locked.add((txid, 0))
        return {"txid": txid, "vout": 0}

    def rpc_preparelockunspentfrom(self, params: list[Any]) -> Any:
        address = self._own(params[0])
        return self._prepare_lock(address, params[1], bool(params[2]) if len(params) > 2 else True)

    def rpc_preparelockunspent(self, params: list[Any]) -> Any:
        # Assumed: the node prepares from the first wallet address that can cover the amounts.
        want = self._amounts(params[0])
        for address in self.wallet:
            try:
                self._select(address, want)
            except Fault:
                continue
            return self._prepare_lock(
                address, params[0], bool(params[1]) if len(params) > 1 else True
            )
        raise Fault(-6, "Insufficient funds" if self.version == "1.0.9" else "Insufficient funds.")

    def rpc_lockunspent(self, params: list[Any]) -> Any:
        unlock = bool(params[0])
        outpoints = params[1] if len(params) > 1 else []
        if not outpoints and unlock:
            self.locked.clear()  # Bitcoin Core: ``lockunspent true`` alone unlocks everything
        for entry in outpoints:
            key = (str(entry["txid"]), int(entry["vout"]))
            if unlock:
                self.locked.discard(key)
            else:
                self.locked.add(key)
        return True

    def rpc_listlockunspent(self, params: list[Any]) -> Any:
        return [{"txid": t, "vout": n} for t, n in sorted(self.locked)]

    def _check_exchange_inputs(self, doc: dict[str, Any]) -> None:
        """What an exchange's existing inputs answer when they can no longer be spent."""
        for i, inp in enumerate(doc["vin"]):
            key = (inp["txid"], inp["vout"])
            if key not in self.outs:
                # Recorded: a node that has not seen the offer's lock yet answers this.
                raise Fault(-707, "Missing inputs")
            spender = self.spent.get(key)
            if spender is not None:
                if self.txs[spender].block is None:
                    # Recorded for a withdrawn offer; assumed for any spend still in the mempool.
                    raise Fault(-707, "Conflicts with in-memory transactions")
                if self.version == "1.0.9":
                    raise Fault(
                        -707, f"Input already spent; Input: {i}, txid: {key[0]}, vout: {key[1]}"
                    )
                raise Fault(-707, "Missing inputs")
            if not self._can(self.outs[key].address, "send"):
                raise Fault(
                    -707,
                    f"Address doesn't have send permission; Input: {i}, txid: {key[0]}, vout: {key[1]}",
                )

    def _exchange_input(self, txid: object, vout: object) -> tuple[tuple[str, int], _Output]:
        key = (str(txid), int(str(vout)))
        if key[0] not in self.txs:
            raise Fault(-715, "Missing inputs")
        out = self.outs.get(key)
        if out is None or key in self.spent:
            raise Fault(-715, "Input already spent")  # recorded for a bad vout
        return key, out

    def rpc_createrawexchange(self, params: list[Any]) -> Any:
        key, out = self._exchange_input(params[0], params[1])
        ask = self._amounts(params[2])
        doc = self._doc([key], [{"address": out.address, "assets": ask}])
        self._sign(doc, 0, _SINGLE)
        return _encode(doc)

    def _inputs_total(self, doc: dict[str, Any]) -> dict[str, int]:
        total: dict[str, int] = {}
        for inp in doc["vin"]:
            out = self.outs.get((inp["txid"], inp["vout"]))
            for name, raw in (out.assets if out else {}).items():
                total[name] = total.get(name, 0) + raw
        return total

    @staticmethod
    def _outputs_total(vout: Sequence[dict[str, Any]]) -> dict[str, int]:
        total: dict[str, int] = {}
        for entry in vout:
            for name, raw in entry.get("assets", {}).items():
                total[name] = total.get(name, 0) + int(raw)
        return total

    def _complete(self, doc: dict[str, Any]) -> bool:
        signed = all(inp.get("sig") for inp in doc["vin"])
        return signed and self._inputs_total(doc) == self._outputs_total(doc["vout"])

    def rpc_decoderawexchange(self, params: list[Any]) -> Any:
        doc = self._decode(params[0])
        self._check_exchange_inputs(doc)
        first = self.outs[(doc["vin"][0]["txid"], doc["vin"][0]["vout"])]
        ask = {k: int(v) for k, v in doc["vout"][0].get("assets", {}).items()}
        # Assumed meanings: the node can complete an exchange when one of its addresses holds
        # the asked assets unlocked, and can disable it when it holds the offer's key.
        can_complete = any(
            self._can(a, "send")
            and all(
                sum(o.assets.get(n, 0) for _k, o in self._coins(a)) >= q for n, q in ask.items()
            )
            for a in self.wallet
        )
        return {
            "offer": {"amount": self._real(0), "assets": self._asset_list(dict(first.assets))},
            "ask": {"assets": self._asset_list(ask)},
            "requiredfee": self._real(0),
            "candisable": first.address in self.wallet,
            "cancomplete": can_complete,
            "complete": self._complete(doc),
        }

    def rpc_appendrawexchange(self, params: list[Any]) -> Any:
        doc = self._decode(
            params[0], code=-1, message="CDataStream::read() : end of data: iostream error"
        )
        self._check_exchange_inputs(doc)
        key, out = self._exchange_input(params[1], params[2])
        if not self._can(out.address, "send"):
            raise Fault(-704, "Address of prepared output doesn't have send permission")
        ask = self._amounts(params[3])
        # Assumed reading of the recorded cases: ``complete`` says whether the inputs, with the
        # new one, cover what earlier parties asked. So locking less than asked gives false,
        # while asking for more than offered still gives true (and fails when sent).
        before = self._outputs_total(doc["vout"])
        inputs = self._inputs_total(doc)
        for name, raw in out.assets.items():
            inputs[name] = inputs.get(name, 0) + raw
        complete = all(inputs.get(n, 0) >= q for n, q in before.items())
        doc["vin"].append({"txid": key[0], "vout": key[1], "sig": None})
        doc["vout"].append({"address": out.address, "assets": ask})
        self._sign(doc, len(doc["vin"]) - 1, _SINGLE)
        return {"hex": _encode(doc), "complete": complete}

    def rpc_disablerawtransaction(self, params: list[Any]) -> Any:
        doc = self._decode(params[0])
        mine = [
            (inp["txid"], inp["vout"])
            for inp in doc["vin"]
            if self._live((inp["txid"], inp["vout"]))
            and self.outs[(inp["txid"], inp["vout"])].address in self.wallet
        ]
        if not mine:
            raise Fault(-8, "No inputs this wallet can spend")  # assumed wording
        vout = [
            {"address": self.outs[k].address, "assets": dict(self.outs[k].assets)} for k in mine
        ]
        tx = self._doc(mine, vout)
        for i in range(len(mine)):
            self._sign(tx, i, _ALL)
        return self._accept(tx, [self.outs[k].address or "" for k in mine])

    # --- raw transactions -----------------------------------------------------------------

    def rpc_createrawtransaction(self, params: list[Any]) -> Any:
        inputs = params[0]
        outputs = params[1]
        data = params[2] if len(params) > 2 else []
        action = params[3] if len(params) > 3 else ""
        if action:
            raise Fault(-8, "action is not supported by the recorded node")  # not used by prosum
        vin = [(str(i["txid"]), int(i["vout"])) for i in inputs]
        vout: list[dict[str, Any]] = []
        for address, value in outputs.items():
            self._known_address(address)
            if isinstance(value, dict):
                vout.append({"address": address, "assets": self._amounts(value)})
            elif Decimal(value) == 0:
                vout.append({"address": address, "assets": {}})
            else:
                raise Fault(-8, "This chain has no native currency")  # assumed wording
        for entry in data:
            vout.append({"data": self._item(entry, "createrawtransaction")})
        return _encode(self._doc(vin, vout))

    def rpc_appendrawdata(self, params: list[Any]) -> Any:
        doc = self._decode(params[0])
        doc["vout"].append({"data": self._item(params[1], "appendrawdata")})
        return _encode(doc)

    def rpc_signrawtransaction(self, params: list[Any]) -> Any:
        doc = self._decode(params[0])
        errors = []
        for i, inp in enumerate(doc["vin"]):
            if inp.get("sig"):
                continue
            key = (inp["txid"], inp["vout"])
            out = self._live(key)
            if out is None or out.address not in self.wallet:
                errors.append(
                    {
                        "txid": key[0],
                        "vout": key[1],
                        "scriptSig": "",
                        "sequence": _END_BLOCK,
                        "error": "Input not found or already spent",
                    }
                )
                continue
            self._sign(doc, i, _ALL)
        result: dict[str, Any] = {"hex": _encode(doc), "complete": not errors}
        if errors:
            result["errors"] = errors
        return result

    def rpc_sendrawtransaction(self, params: list[Any]) -> Any:
        doc = self._decode(params[0])
        txid = _sha256d(bytes.fromhex(_encode(doc)))[::-1].hex()
        if txid in self.txs:
            if self.txs[txid].block is not None:
                raise Fault(-27, "transaction already in block chain")
            return txid  # Bitcoin Core relays a mempool transaction again and answers its id
        owners: list[str] = []
        for inp in doc["vin"]:
            key = (inp["txid"], inp["vout"])
            if key not in self.outs:
                raise Fault(-25, "Missing inputs")  # Bitcoin Core's code; assumed unchanged
            if key in self.spent:
                raise Fault(-26, "18: bad-txns-inputs-spent")
        for i, inp in enumerate(doc["vin"]):
            key = (inp["txid"], inp["vout"])
            owner = self.outs[key].address
            sig = inp.get("sig")
            if (
                not sig
                or sig.get("by") != owner
                or sig.get("digest") != self._digest(doc, i, sig.get("type"))
            ):
                # Assumed wording (Bitcoin Core 0.10's script failure).
                raise Fault(
                    -26,
                    "16: mandatory-script-verify-flag-failed (Script evaluated without error "
                    "but finished with a false/empty top stack element)",
                )
            if not self._can(owner, "send"):
                # Recorded for an exchange whose offerer lost send permission; assumed to be
                # what sendrawtransaction says for any such input.
                raise Fault(
                    -707,
                    f"Address doesn't have send permission; Input: {i}, txid: {key[0]}, vout: {key[1]}",
                )
            owners.append(owner or "")
        for entry in doc["vout"]:
            if "address" in entry and not self._can_receive(entry["address"]):
                # Recorded message; assumed to be what a raw transaction gets too.
                raise Fault(-704, "Destination address doesn't have receive permission")
            if "data" in entry and entry["data"].get("stream"):
                self._stream(entry["data"]["stream"])
        ins = {k: v for k, v in self._inputs_total(doc).items() if v}
        outs = {k: v for k, v in self._outputs_total(doc["vout"]).items() if v}
        if ins != outs:
            raise Fault(
                -26, "64: Asset transfer script rejected - mismatch in input/output quantities"
            )
        return self._accept(doc, owners)


class _Handler(BaseHTTPRequestHandler):
    node: RecordedMultiChainNode
    protocol_version = "HTTP/1.1"  # keep-alive, as Bitcoin Core's RPC server allows
    # One segment per reply: headers and body written separately meet the client's delayed
    # ACK and cost 40 ms a call.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.node._lock:
            self.node._connections.add(self.connection)

    def finish(self) -> None:
        with self.node._lock:
            self.node._connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self._authorised():
            self._send(
                401,
                _UNAUTHORIZED_HTML.encode("latin-1"),
                "text/html",
                {"WWW-Authenticate": 'Basic realm="jsonrpc"'},
            )
            return
        request_id: Any = None
        try:
            request = json.loads(body, parse_float=Decimal)
            request_id = request.get("id")
            params = request.get("params") or []
            result = self.node.dispatch(str(request.get("method")), list(params))
        except Fault as fault:
            # Recorded: RPC errors come back with HTTP 500. Assumed from Bitcoin Core 0.10's
            # ErrorReply, which MultiChain 1.0 inherits: an unknown method gets 404.
            status = 404 if fault.code == -32601 else 500
            envelope = {
                "result": None,
                "error": {"code": fault.code, "message": fault.message},
                "id": request_id,
            }
            self._send(status, self._render(envelope).encode(), "application/json")
            return
        except ValueError:
            envelope = {
                "result": None,
                "error": {"code": -32700, "message": "Parse error"},
                "id": None,
            }
            self._send(500, self._render(envelope).encode(), "application/json")
            return
        envelope = {"result": result, "error": None, "id": request_id}
        self._send(200, self._render(envelope).encode(), "application/json")

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.node.user) and secrets.compare_digest(
            password, self.node.password
        )

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _render(self, value: Any) -> str:
        if isinstance(value, _Real):
            if self.node.version == "1.0.9":
                # Bitcoin Core's json_spirit writer, kept by MultiChain 1.0: fixed, 8 decimals.
                return format(value.value, ".8f")
            # 2.x: whole quantities as integers (recorded), others as plain decimals.
            if value.value == value.value.to_integral_value():
                return str(int(value.value))
            return format(value.value.normalize(), "f")
        if value is None or isinstance(value, bool | int | str):
            return json.dumps(value)
        if isinstance(value, Decimal):
            return format(value, "f")
        if isinstance(value, list | tuple):
            return "[" + ",".join(self._render(v) for v in value) + "]"
        if isinstance(value, dict):
            return (
                "{"
                + ",".join(json.dumps(str(k)) + ":" + self._render(v) for k, v in value.items())
                + "}"
            )
        raise TypeError(f"cannot render {value!r}")
