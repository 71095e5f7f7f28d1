"""The read side: readings by hash, proofs, evidence, intervals, gaps, batches, conflicts."""

from __future__ import annotations

from typing import Any

from prosum_metering.application.access import InvalidQuery, NotFound, Requester, require
from prosum_metering.application.ports import (
    BatchView,
    IntervalRecord,
    ReadView,
    StoredReading,
)
from prosum_metering.domain.merkle import merkle_proof
from prosum_metering.domain.readings import INTERVAL_S, format_utc, reading_as_dict

HASHING = (
    "leaf = SHA-256(0x00 || canonical reading bytes || 64-byte signature) (the reading hash); "
    "node = SHA-256(0x01 || left || right); an odd node at the end of a level is carried up "
    "unchanged. Fold the path from the leaf: side 'left' means node = SHA-256(0x01 || sibling "
    "|| current), 'right' means SHA-256(0x01 || current || sibling)."
)

MAX_INTERVALS = 96 * 31
"""Most intervals one query returns (a month of a metering point)."""


def anchor_view(batch: BatchView) -> dict[str, Any]:
    return {
        "status": batch.anchor_status,
        "command_id": batch.anchor_command_id,
        "tx_id": batch.anchor_tx_id,
        "block": batch.anchor_block,
        "backend": batch.anchor_backend,
        "reason": batch.anchor_reason,
    }


def batch_view(batch: BatchView) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "root": batch.root,
        "leaf_count": len(batch.leaves),
        "sealed_at": batch.sealed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "anchor": anchor_view(batch),
    }


def reading_view(stored: StoredReading) -> dict[str, Any]:
    return {
        **reading_as_dict(stored.reading),
        "reading_hash": stored.reading_hash,
        "participant_id": stored.participant_id,
        "batch_id": stored.batch_id,
        "superseded": stored.superseded,
        "received_at": stored.received_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def interval_view(record: IntervalRecord) -> dict[str, Any]:
    return {
        "metering_point": record.metering_point,
        "interval_start": format_utc(record.interval_start),
        "interval_end": format_utc(record.interval_start + INTERVAL_S),
        "import_wh": record.import_wh,
        "export_wh": record.export_wh,
        "surplus_wh": record.surplus_wh,
        "consumption_wh": record.consumption_wh,
        "evidence_hash": record.evidence_hash,
        "start_reading_hash": record.start_hash,
        "end_reading_hash": record.end_hash,
        "mint": {
            "status": record.mint_status,
            "command_id": record.mint_command_id,
            "amount_wh": record.mint_wh,
            "evidence_hash": record.mint_evidence_hash,
            "tx_id": record.mint_tx_id,
            "block": record.mint_block,
            "reason": record.mint_reason,
        },
        "adjustment_wh": record.adjustment_wh,
    }


class DataService:
    def __init__(self, read_view: ReadView) -> None:
        self._read = read_view

    def reading(self, requester: Requester, reading_hash: str) -> dict[str, Any]:
        with self._read() as q:
            stored = q.reading(reading_hash.lower())
            if stored is None:
                raise NotFound("unknown_reading", f"no reading {reading_hash}")
            end = stored.reading.interval_end
            # A reading bounds the interval before it and the one after it.
            why = require(q, requester, stored.participant_id, end - INTERVAL_S, end + INTERVAL_S)
        return {**reading_view(stored), "access": why}

    def proof(self, reading_hash: str) -> dict[str, Any]:
        with self._read() as q:
            stored = q.reading(reading_hash.lower())
            if stored is None:
                raise NotFound("unknown_reading", f"no reading {reading_hash}")
            if stored.batch_id is None:
                raise NotFound("not_sealed", "the reading is not in a sealed batch yet")
            batch = q.batch_view(stored.batch_id)
        if batch is None:  # pragma: no cover - the batch row is written with the seal
            raise NotFound("unknown_batch", f"no batch {stored.batch_id}")
        index = batch.leaves.index(stored.reading_hash)
        steps = merkle_proof([bytes.fromhex(h) for h in batch.leaves], index)
        return {
            "reading_hash": stored.reading_hash,
            "batch_id": batch.batch_id,
            "leaf_index": index,
            "leaf_count": len(batch.leaves),
            "root": batch.root,
            "path": [{"side": s.side, "hash": s.sibling.hex()} for s in steps],
            "hashing": HASHING,
            "anchor": anchor_view(batch),
        }

    def batch(self, batch_id: str) -> dict[str, Any]:
        with self._read() as q:
            batch = q.batch_view(batch_id)
        if batch is None:
            raise NotFound("unknown_batch", f"no batch {batch_id}")
        return batch_view(batch)

    def evidence(self, requester: Requester, evidence_hash: str) -> dict[str, Any]:
        with self._read() as q:
            found = q.evidence(evidence_hash.lower())
            if found is None:
                raise NotFound("unknown_evidence", f"no evidence {evidence_hash}")
            start = found.interval_start
            why = require(q, requester, found.participant_id, start, start + INTERVAL_S)
            readings = [q.reading(found.start_hash), q.reading(found.end_hash)]
        return {
            "evidence_hash": found.evidence_hash,
            "current": found.current,
            "participant_id": found.participant_id,
            "metering_point": found.metering_point,
            "interval_start": format_utc(start),
            "interval_end": format_utc(start + INTERVAL_S),
            "import_wh": found.import_wh,
            "export_wh": found.export_wh,
            "surplus_wh": found.surplus_wh,
            "readings": [reading_view(r) for r in readings if r is not None],
            "hashing": "evidence = SHA-256(0x02 || start reading hash || end reading hash)",
            "access": why,
        }

    def intervals(
        self, requester: Requester, metering_point: str, start: int, end: int
    ) -> dict[str, Any]:
        if end <= start or (end - start) // INTERVAL_S > MAX_INTERVALS:
            raise InvalidQuery(
                "invalid_range", f"ask for 1 to {MAX_INTERVALS} intervals (end after start)"
            )
        with self._read() as q:
            owner = q.series_owner(metering_point)
            if owner is None:
                raise NotFound("unknown_metering_point", f"no metering point {metering_point}")
            if requester.ops or requester.participant_id == owner:
                records = q.intervals(metering_point, start, end - INTERVAL_S)
                why = "ops" if requester.ops else "owner"
            else:
                windows = (
                    q.traded_windows(owner, requester.participant_id, start, end)
                    if requester.participant_id
                    else []
                )
                if not windows:
                    require(q, requester, owner, start, end)  # refuses: no trade, no access
                records = [
                    r
                    for r in q.intervals(metering_point, start, end - INTERVAL_S)
                    if any(
                        a < r.interval_start + INTERVAL_S and r.interval_start < b
                        for a, b in windows
                    )
                ]
                why = "counterparty"
        return {
            "metering_point": metering_point,
            "participant_id": owner,
            "from": format_utc(start),
            "to": format_utc(end),
            "access": why,
            "intervals": [interval_view(r) for r in records],
        }

    def gaps(self, requester: Requester, metering_point: str) -> dict[str, Any]:
        with self._read() as q:
            owner = q.series_owner(metering_point)
            if owner is None:
                raise NotFound("unknown_metering_point", f"no metering point {metering_point}")
            if not (requester.ops or requester.participant_id == owner):
                require(q, requester, owner, 0, 0)
            gaps = q.gaps(metering_point)
        return {
            "metering_point": metering_point,
            "gaps": [
                {
                    "gap_start": format_utc(g.gap_start),
                    "gap_end": format_utc(g.gap_end),
                    "unmeasured_intervals": (g.gap_end - g.gap_start) // INTERVAL_S,
                    "import_wh": g.import_wh,
                    "export_wh": g.export_wh,
                    "status": g.status,
                }
                for g in gaps
            ],
        }

    def conflicts(self, status: str | None) -> dict[str, Any]:
        with self._read() as q:
            found = q.conflicts(status)
        return {
            "conflicts": [
                {
                    "conflict_id": c.conflict_id,
                    "participant_id": c.participant_id,
                    "metering_point": c.metering_point,
                    "interval_end": format_utc(c.interval_end),
                    "held_reading_hash": c.held_hash,
                    "submitted_reading_hash": c.submitted_hash,
                    "submitted": c.submitted,
                    "status": c.status,
                    "detected_at": c.detected_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                }
                for c in found
            ]
        }
