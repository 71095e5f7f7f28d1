"""The backend's small durable memory, in one JSON file.

The node's wallet holds every key, so nothing secret is here. What is here is what the chain
cannot tell us:

- which wallet address belongs to which participant (``getnewaddress`` hands out anonymous
  addresses);
- the admin address and the burn address in use;
- the commands in flight: written *before* anything is sent, with every output a settlement
  has locked, so that after a crash the backend asks the chain what happened, releases what a
  failed attempt left locked, and only then sends anything again.

What commands did, once done, is not kept here: the chain records that (see ``backend``).
Writes go to a temporary file that replaces the old one only once it is on disk, so a crash
mid-write leaves the previous state intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from prosum_ledger.adapters.multichain.rpc import OutPoint

_FORMAT = 1


@dataclass(slots=True)
class Intent:
    """A command that was started and has not been seen through yet."""

    kind: str
    locks: list[OutPoint] = field(default_factory=list)
    txid: str | None = None  # known once a raw transaction is signed, before it is sent
    hex: str | None = None  # that signed transaction, to send again rather than rebuild

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "locks": [[op.txid, op.vout] for op in self.locks],
            "txid": self.txid,
            "hex": self.hex,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Intent:
        locks = raw.get("locks", [])
        txid, tx_hex = raw.get("txid"), raw.get("hex")
        return cls(
            kind=str(raw["kind"]),
            locks=[OutPoint(str(t), int(v)) for t, v in locks] if isinstance(locks, list) else [],
            txid=txid if isinstance(txid, str) else None,
            hex=tx_hex if isinstance(tx_hex, str) else None,
        )


class StateFile:
    def __init__(self, path: Path, chain_name: str) -> None:
        self._path = path
        self._chain = chain_name
        self.participants: dict[str, str] = {}
        self.admin: str | None = None
        self.burn: str | None = None
        self.pending: dict[str, Intent] = {}
        if path.exists():
            self._load()

    @property
    def path(self) -> Path:
        return self._path

    def _load(self) -> None:
        raw = json.loads(self._path.read_text(encoding="utf-8"))
        if raw.get("format") != _FORMAT:
            raise ValueError(f"{self._path}: unknown state format {raw.get('format')!r}")
        if raw.get("chain") != self._chain:
            # Addresses of another chain's wallet would look valid here and be wrong.
            raise ValueError(
                f"{self._path} belongs to chain {raw.get('chain')!r}, not {self._chain!r}"
            )
        self.participants = {str(k): str(v) for k, v in raw.get("participants", {}).items()}
        self.admin = raw.get("admin")
        self.burn = raw.get("burn")
        self.pending = {str(k): Intent.from_json(v) for k, v in raw.get("pending", {}).items()}

    def save(self) -> None:
        document = {
            "format": _FORMAT,
            "chain": self._chain,
            "admin": self.admin,
            "burn": self.burn,
            "participants": self.participants,
            "pending": {command: intent.to_json() for command, intent in self.pending.items()},
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self._path.name + ".", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def begin(self, command_id: str, kind: str) -> Intent:
        intent = Intent(kind)
        self.pending[command_id] = intent
        self.save()
        return intent

    def finish(self, command_id: str) -> None:
        if self.pending.pop(command_id, None) is not None:
            self.save()
