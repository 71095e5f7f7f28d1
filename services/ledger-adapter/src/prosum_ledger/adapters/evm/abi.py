"""The compiled ProsumLedger contract and a small ABI codec over it.

The codec encodes calls and decodes results, custom errors and logs with ``eth_abi`` directly
rather than through web3 contract objects: web3 validates and normalises every argument on
every call, which costs milliseconds for a 500-trade batch, and its error parsing differs
between web3 versions and between nodes. The ABI itself comes from the committed artifact
(``artifacts/ProsumLedger.json``, rebuilt by ``npm run build:contracts``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

ARTIFACT_NAME = "ProsumLedger.json"

# Solidity's built-in revert payloads, next to the contract's own custom errors.
_ERROR_STRING_SELECTOR = keccak(text="Error(string)")[:4]
_PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]


@dataclass(frozen=True, slots=True)
class ContractArtifact:
    abi: tuple[Mapping[str, Any], ...]
    bytecode: bytes
    deployed_bytecode: bytes
    compiler_version: str
    source_sha256: str


@cache
def load_artifact() -> ContractArtifact:
    raw = resources.files(__package__).joinpath("artifacts", ARTIFACT_NAME).read_text("utf-8")
    data = json.loads(raw)
    return ContractArtifact(
        abi=tuple(data["abi"]),
        bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")),
        deployed_bytecode=bytes.fromhex(data["deployedBytecode"].removeprefix("0x")),
        compiler_version=data["compiler"]["version"],
        source_sha256=data["sourceSha256"],
    )


def abi_type(param: Mapping[str, Any]) -> str:
    """The canonical type string of an ABI parameter, tuples spelled out as ``(t1,t2)[]``."""
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _normalise(value: Any, kind: str) -> Any:
    # eth_abi returns lower-case addresses; everything else here compares checksummed ones.
    if kind == "address":
        return to_checksum_address(value)
    return value


@dataclass(frozen=True, slots=True)
class DecodedError:
    name: str
    args: dict[str, Any]

    def describe(self) -> str:
        inner = ", ".join(f"{k}={_show(v)}" for k, v in self.args.items())
        return f"{self.name}({inner})"


@dataclass(frozen=True, slots=True)
class DecodedLog:
    event: str
    args: dict[str, Any]
    tx_hash: str
    block: int
    log_index: int


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


@dataclass(frozen=True, slots=True)
class _Function:
    selector: bytes
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Error:
    name: str
    names: tuple[str, ...]
    types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Event:
    name: str
    topic: bytes
    indexed: tuple[tuple[str, str], ...]
    data_names: tuple[str, ...]
    data_types: tuple[str, ...]


class LedgerAbi:
    """Encodes and decodes what crosses the JSON-RPC boundary for one contract ABI."""

    def __init__(self, abi: Sequence[Mapping[str, Any]]) -> None:
        self._functions: dict[str, _Function] = {}
        self._errors: dict[bytes, _Error] = {}
        self._events: dict[bytes, _Event] = {}
        self._event_topics: dict[str, bytes] = {}
        for item in abi:
            kind = item.get("type")
            inputs = item.get("inputs", [])
            types = tuple(abi_type(p) for p in inputs)
            if kind == "function":
                sig = f"{item['name']}({','.join(types)})"
                self._functions[item["name"]] = _Function(
                    selector=keccak(text=sig)[:4],
                    input_types=types,
                    output_types=tuple(abi_type(p) for p in item.get("outputs", [])),
                )
            elif kind == "error":
                sig = f"{item['name']}({','.join(types)})"
                self._errors[keccak(text=sig)[:4]] = _Error(
                    name=item["name"], names=tuple(p["name"] for p in inputs), types=types
                )
            elif kind == "event":
                sig = f"{item['name']}({','.join(types)})"
                topic = keccak(text=sig)
                self._event_topics[item["name"]] = topic
                self._events[topic] = _Event(
                    name=item["name"],
                    topic=topic,
                    indexed=tuple(
                        (p["name"], abi_type(p)) for p in inputs if p.get("indexed", False)
                    ),
                    data_names=tuple(p["name"] for p in inputs if not p.get("indexed", False)),
                    data_types=tuple(abi_type(p) for p in inputs if not p.get("indexed", False)),
                )

    def encode_call(self, function: str, *args: Any) -> bytes:
        fn = self._functions[function]
        return fn.selector + encode(fn.input_types, args)

    def decode_result(self, function: str, data: bytes) -> tuple[Any, ...]:
        fn = self._functions[function]
        return tuple(
            _normalise(value, kind)
            for kind, value in zip(fn.output_types, decode(fn.output_types, data), strict=True)
        )

    def event_topic(self, event: str) -> bytes:
        return self._event_topics[event]

    def decode_error(self, data: bytes) -> DecodedError | None:
        """A revert payload as the error it names; None when it is empty or unknown."""
        if len(data) < 4:
            return None
        selector, body = data[:4], data[4:]
        try:
            if selector == _ERROR_STRING_SELECTOR:
                (message,) = decode(["string"], body)
                return DecodedError("Error", {"message": message})
            if selector == _PANIC_SELECTOR:
                (code,) = decode(["uint256"], body)
                return DecodedError("Panic", {"code": code})
            error = self._errors.get(selector)
            if error is None:
                return None
            values = decode(error.types, body)
        except DecodingError:
            return None
        return DecodedError(
            error.name,
            {n: _normalise(v, t) for n, t, v in zip(error.names, error.types, values, strict=True)},
        )

    def decode_log(self, log: Mapping[str, Any]) -> DecodedLog | None:
        """A JSON-RPC log object as its event; None for logs of other events or contracts."""
        topics = [as_bytes(t) for t in log["topics"]]
        if not topics:
            return None
        event = self._events.get(topics[0])
        if event is None or len(topics) != len(event.indexed) + 1:
            return None
        args: dict[str, Any] = {}
        for (name, kind), topic in zip(event.indexed, topics[1:], strict=True):
            # Indexed dynamic values are stored as their hash; this contract indexes none.
            (args[name],) = decode([kind], topic)
            args[name] = _normalise(args[name], kind)
        values = decode(event.data_types, as_bytes(log["data"]))
        for name, kind, value in zip(event.data_names, event.data_types, values, strict=True):
            args[name] = _normalise(value, kind)
        return DecodedLog(
            event=event.name,
            args=args,
            tx_hash=as_hex(log["transactionHash"]),
            block=as_int(log["blockNumber"]),
            log_index=as_int(log["logIndex"]),
        )


def as_bytes(value: str | bytes) -> bytes:
    """JSON-RPC hex data (or bytes already) as bytes."""
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(value.removeprefix("0x"))


def as_hex(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def as_int(value: str | int) -> int:
    if isinstance(value, int):
        return value
    return int(value, 16)
