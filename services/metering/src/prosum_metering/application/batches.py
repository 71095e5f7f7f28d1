"""Sealing readings into batches under a Merkle root, and anchoring each root on chain.

Readings are sealed by a background worker (one per database, under a lease), not per
request: a device sending one reading every 15 minutes would otherwise cost one chain
transaction per reading. Each batch takes the unsealed readings in the order they were
stored, up to a maximum, and sends one ``ledger.anchor_hash`` command for its root. The
ledger's answer comes back as ``ledger.command_confirmed`` or ``ledger.command_failed``; after
a failure ops may ask for another attempt, under a new command id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prosum_metering.application.ports import Clock, MeteringStore, UnitOfWork
from prosum_metering.domain.merkle import merkle_root
from prosum_metering.domain.model import ReadingBatch
from prosum_platform.domain import DomainRuleViolation

BATCH_SEALED = "metering.batch_sealed"
BATCH_ANCHORED = "metering.batch_anchored"
BATCH_ANCHOR_FAILED = "metering.batch_anchor_failed"
ANCHOR_HASH = "ledger.anchor_hash"
SOURCE = "metering"


def anchor_command(batch: ReadingBatch, command_id: str) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "root": batch.root,
        "reference": f"prosum:metering:batch:{batch.batch_id}",
    }


class BatchService:
    def __init__(
        self,
        unit_of_work: UnitOfWork,
        clock: Clock,
        *,
        max_leaves: int = 16384,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._uow = unit_of_work
        self._clock = clock
        self._max = max_leaves
        self._new_id = new_id

    def seal_pending(self) -> list[str]:
        """Seal every unsealed reading, ``max_leaves`` per batch; the new batches' ids."""
        sealed: list[str] = []
        while True:
            with self._uow() as store:
                batch = self._seal_one(store)
            if batch is None:
                return sealed
            sealed.append(batch.batch_id)
            if len(batch.reading_hashes) < self._max:
                return sealed

    def _seal_one(self, store: MeteringStore) -> ReadingBatch | None:
        batch_id = self._new_id()
        hashes = store.claim_unsealed(batch_id, self._max)
        if not hashes:
            return None
        root = merkle_root([bytes.fromhex(h) for h in hashes]).hex()
        sealed_at = datetime.fromtimestamp(self._clock(), UTC)
        batch = ReadingBatch.seal(batch_id, root, tuple(hashes), sealed_at)
        command_id = batch.request_anchor()
        store.save_batch(batch)
        store.publish(
            BATCH_SEALED,
            batch_id,
            {
                "batch_id": batch_id,
                "root": root,
                "leaf_count": len(hashes),
                "sealed_at": sealed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "anchor_command_id": command_id,
            },
        )
        store.publish(ANCHOR_HASH, batch_id, anchor_command(batch, command_id))
        return batch

    def retry_anchor(self, batch_id: str) -> str:
        """Anchor a batch again after the ledger refused it; the new command id."""
        with self._uow() as store:
            batch = store.batch(batch_id)
            if batch is None:
                raise DomainRuleViolation("unknown_batch", f"no batch {batch_id}")
            command_id = batch.request_anchor()
            store.save_batch(batch)
            store.publish(ANCHOR_HASH, batch_id, anchor_command(batch, command_id))
            return command_id


def apply_anchor_outcome(store: MeteringStore, confirmed: bool, data: dict[str, Any]) -> None:
    """A ledger outcome for an ``anchor:`` command; anything not ours is left alone."""
    command_id = str(data["command_id"])
    batch_id = command_id.split(":")[1] if command_id.count(":") >= 1 else ""
    batch = store.batch(batch_id)
    if batch is None:
        return
    if confirmed:
        changed = batch.anchored(
            command_id, str(data["tx_id"]), int(data["block"]), str(data["backend"])
        )
    else:
        changed = batch.anchor_failed(
            command_id, str(data["reason"]), str(data.get("chain_message", ""))
        )
    if not changed:
        return
    store.save_batch(batch)
    if confirmed:
        store.publish(
            BATCH_ANCHORED,
            batch_id,
            {
                "batch_id": batch_id,
                "root": batch.root,
                "command_id": command_id,
                "tx_id": str(data["tx_id"]),
                "block": int(data["block"]),
                "backend": str(data["backend"]),
            },
        )
    else:
        store.publish(
            BATCH_ANCHOR_FAILED,
            batch_id,
            {
                "batch_id": batch_id,
                "root": batch.root,
                "command_id": command_id,
                "reason": str(data["reason"]),
                "message": str(data.get("chain_message", ""))[:2000],
            },
        )
