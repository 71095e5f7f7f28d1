"""When surplus is minted, and the command id that makes it happen once; the aggregates' rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from prosum_metering.domain.minting import mint_command_id, mint_decision
from prosum_metering.domain.model import (
    AnchorStatus,
    ConflictRecorded,
    Decision,
    MintStatus,
    ReadingBatch,
    ReadingConflict,
)
from prosum_platform.domain import DomainRuleViolation

NOON = 1_780_000_200


@pytest.mark.parametrize(
    ("surplus", "role", "status", "decision"),
    [
        (0, "producer", "active", MintStatus.NONE),
        (10, "producer", "active", MintStatus.ISSUED),
        (10, "prosumer", "active", MintStatus.ISSUED),
        (10, "consumer", "active", MintStatus.NOT_ELIGIBLE),
        (10, "producer", "closed", MintStatus.NOT_ELIGIBLE),
        (10, "producer", "pending", MintStatus.DEFERRED),
        (10, "producer", "suspended", MintStatus.DEFERRED),
        (10, None, None, MintStatus.DEFERRED),
    ],
)
def test_mint_decisions(
    surplus: int, role: str | None, status: str | None, decision: MintStatus
) -> None:
    assert mint_decision(surplus, role, status) is decision


def test_the_mint_command_id_names_the_metering_point_and_interval() -> None:
    assert mint_command_id("MP-0001", NOON) == "mint:MP-0001:20260528T2030Z"
    odd = mint_command_id("DE 0001/ä", NOON)
    assert odd.startswith("mint:h") and odd.endswith(":20260528T2030Z")
    assert odd == mint_command_id("DE 0001/ä", NOON)
    assert len(mint_command_id("x" * 64, NOON)) <= 128


def test_a_batch_is_anchored_once_and_again_only_after_a_failure() -> None:
    batch = ReadingBatch.seal("b1", "ab" * 32, ("cd" * 32,), datetime.now(UTC))
    first = batch.request_anchor()
    assert first == "anchor:b1"
    with pytest.raises(DomainRuleViolation):
        batch.request_anchor()
    assert not batch.anchored("anchor:other", "0x1", 5, "evm")
    assert batch.anchor_failed(first, "chain_unavailable", "down")
    second = batch.request_anchor()
    assert second == "anchor:b1:2"
    assert not batch.anchored(first, "0x1", 5, "evm"), "a late answer to the first try is ignored"
    assert batch.anchored(second, "0x2", 6, "evm")
    assert batch.status is AnchorStatus.CONFIRMED
    assert not batch.anchored(second, "0x2", 6, "evm")
    with pytest.raises(DomainRuleViolation):
        batch.request_anchor()


def test_a_conflict_is_resolved_once() -> None:
    conflict = ReadingConflict.open(
        ConflictRecorded(
            conflict_id="aa" * 32,
            metering_point="MP-1",
            interval_end="2026-05-28T20:30:00Z",
            held_hash="bb" * 32,
            submitted={},
            submitted_hash="aa" * 32,
            submission_id="s" * 32,
            participant_id="p-1",
        )
    )
    conflict.resolve(Decision.KEEP_HELD, "ops", "")
    with pytest.raises(DomainRuleViolation):
        conflict.resolve(Decision.TAKE_SUBMITTED, "ops", "")
