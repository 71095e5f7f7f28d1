"""Readings sealed under Merkle roots, anchored through the ledger, and proven: a proof verifies
against the anchored root and a changed reading fails it (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import datetime
from typing import Any

import pytest

from prosum_metering.application.access import Requester
from prosum_platform.domain import DomainRuleViolation
from tests.integration.metering.conftest import DAY_START
from tests.integration.metering.harness import Clock, Metering, ledger_outcome
from tests.unit.metering.meters import Meter, day_readings, onboarding, signed_bytes

OPS = Requester("ops:test", ops=True)


def leaf_of(reading: dict[str, Any]) -> bytes:
    """The reading hash, computed by a client from the reading it holds."""
    end = int(datetime.fromisoformat(reading["interval_end"].replace("Z", "+00:00")).timestamp())
    message = signed_bytes(
        reading["device_id"],
        reading["metering_point"],
        end,
        reading["import_wh"],
        reading["export_wh"],
    )
    signature = base64.urlsafe_b64decode(reading["signature"] + "==")
    return hashlib.sha256(b"\x00" + message + signature).digest()


def fold(leaf: bytes, path: list[dict[str, str]]) -> str:
    current = leaf
    for step in path:
        sibling = bytes.fromhex(step["hash"])
        pair = sibling + current if step["side"] == "left" else current + sibling
        current = hashlib.sha256(b"\x01" + pair).digest()
    return current.hex()


def test_a_proof_verifies_against_the_anchored_root_and_a_changed_reading_fails(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    day = list(day_readings(producer, DAY_START))
    hashes = [r.reading_hash for r in metering.submit(producer, day).results]
    [batch_id] = metering.batches.seal_pending()
    assert metering.batches.seal_pending() == [], "nothing left to seal"

    [sealed] = metering.published("metering.batch_sealed")
    [anchor] = metering.published("ledger.anchor_hash")
    assert sealed.data["leaf_count"] == 97
    assert anchor.data == {
        "command_id": f"anchor:{batch_id}",
        "root": sealed.data["root"],
        "reference": f"prosum:metering:batch:{batch_id}",
    }
    metering.deliver(ledger_outcome(f"anchor:{batch_id}", tx_id="0xfeed", block=7))
    [anchored] = metering.published("metering.batch_anchored")
    assert (anchored.data["tx_id"], anchored.data["block"]) == ("0xfeed", 7)

    for k in (0, 41, 96):
        reading_hash = hashes[k]
        assert reading_hash is not None
        proof = metering.data.proof(reading_hash)
        assert proof["root"] == sealed.data["root"]
        assert proof["anchor"] == {
            "status": "confirmed",
            "command_id": f"anchor:{batch_id}",
            "tx_id": "0xfeed",
            "block": 7,
            "backend": "evm",
            "reason": None,
        }
        served = metering.data.reading(OPS, reading_hash)
        assert leaf_of(served).hex() == reading_hash
        assert fold(leaf_of(served), proof["path"]) == proof["root"]
        changed = served | {"export_wh": served["export_wh"] + 1}
        assert fold(leaf_of(changed), proof["path"]) != proof["root"]


def test_batches_hold_at_most_their_size_and_new_readings_go_to_new_batches(
    store_url: str, clock: Clock, producer: Meter
) -> None:
    metering = Metering(store_url, clock, max_leaves=40)
    try:
        metering.deliver(*onboarding(producer))
        day = list(day_readings(producer, DAY_START))
        metering.submit(producer, day[:90])
        sealed = metering.batches.seal_pending()
        assert len(sealed) == 3
        metering.submit(producer, day[90:])
        assert len(metering.batches.seal_pending()) == 1
        counts = [e.data["leaf_count"] for e in metering.published("metering.batch_sealed")]
        assert counts == [40, 40, 10, 7]
    finally:
        metering.close()


def test_a_failed_anchor_is_reported_and_can_be_tried_again(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    result = metering.submit(producer, list(day_readings(producer, DAY_START))[:5])
    [batch_id] = metering.batches.seal_pending()
    with pytest.raises(DomainRuleViolation):
        metering.batches.retry_anchor(batch_id)  # still pending
    failure = ledger_outcome(f"anchor:{batch_id}", confirmed=False)
    assert metering.deliver(failure, failure) == [True, False]
    [failed] = metering.published("metering.batch_anchor_failed")
    assert failed.data["reason"] == "chain_unavailable"
    assert metering.batches.retry_anchor(batch_id) == f"anchor:{batch_id}:2"
    assert [e.data["command_id"] for e in metering.published("ledger.anchor_hash")] == [
        f"anchor:{batch_id}",
        f"anchor:{batch_id}:2",
    ]
    metering.deliver(ledger_outcome(f"anchor:{batch_id}:2"))
    hash_ = result.results[0].reading_hash
    assert hash_ is not None
    assert metering.data.proof(hash_)["anchor"]["status"] == "confirmed"
    assert metering.data.batch(batch_id)["anchor"]["command_id"] == f"anchor:{batch_id}:2"


def test_two_sealers_at_once_put_each_reading_in_exactly_one_batch(
    store_url: str, clock: Clock, producer: Meter
) -> None:
    metering = Metering(store_url, clock, max_leaves=7)
    try:
        metering.deliver(*onboarding(producer))
        result = metering.submit(producer, list(day_readings(producer, DAY_START)))
        sealed: list[list[str]] = []
        sealers = [
            threading.Thread(target=lambda: sealed.append(metering.batches.seal_pending()))
            for _ in range(2)
        ]
        for sealer in sealers:
            sealer.start()
        for sealer in sealers:
            sealer.join()
        batches = [metering.data.batch(b) for run in sealed for b in run]
        assert sum(b["leaf_count"] for b in batches) == 97
        for r in result.results:
            assert r.reading_hash is not None
            proof = metering.data.proof(r.reading_hash)
            assert proof["leaf_count"] <= 7
    finally:
        metering.close()
