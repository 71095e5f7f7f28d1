"""The settlement instruction aggregate: which failed batches count towards giving up on a trade,
and events stored before the count existed still replay."""

from __future__ import annotations

from prosum_settlement.adapters.store import CODEC
from prosum_settlement.domain.model import Instruction, InstructionRequeued

MAX_ATTEMPTS = 3


def created() -> Instruction:
    return Instruction.create(
        "t1",
        seller="s",
        buyer="b",
        quantity_wh=1_000,
        value_ecoin=250,
        fee_ecoin=3,
        market_id="m-1",
        delivery_start="2026-11-22T10:00:00Z",
    )


def replayed(instruction: Instruction) -> Instruction:
    again = Instruction(instruction.id)
    for version, event in enumerate(instruction.pending_events, start=1):
        event_type, schema_version, payload = CODEC.encode(event)
        again.replay(CODEC.decode(event_type, schema_version, payload), version)
    return again


def test_only_batches_failing_without_a_culprit_count_towards_giving_up() -> None:
    instruction = created()
    for n in range(5):  # batches failing because the chain named another trade
        instruction.batch(f"named-{n}")
        assert instruction.requeue(f"named-{n}", "batch failed: insufficient_ecoin")
    assert (instruction.attempts, instruction.failures_without_culprit) == (5, 0)
    assert not instruction.last_try_without_culprit(MAX_ATTEMPTS)
    for n in range(MAX_ATTEMPTS - 1):
        instruction.batch(f"blind-{n}")
        assert instruction.requeue(f"blind-{n}", "batch failed", without_culprit=True)
    assert instruction.failures_without_culprit == MAX_ATTEMPTS - 1
    assert instruction.last_try_without_culprit(MAX_ATTEMPTS)
    instruction.batch("last")
    assert instruction.fail("last", "permission_denied", "operator cannot receive", None)
    assert (instruction.attempts, instruction.failures_without_culprit) == (
        5 + MAX_ATTEMPTS,
        MAX_ATTEMPTS,
    )
    again = replayed(instruction)
    assert again.snapshot_state() == instruction.snapshot_state()
    restored = Instruction.from_snapshot(again.id, again.version, again.snapshot_state())
    assert restored.snapshot_state() == instruction.snapshot_state()


def test_a_trade_failing_as_the_named_culprit_does_not_count_a_failure_without_one() -> None:
    instruction = created()
    instruction.batch("b1")
    assert instruction.fail("b1", "insufficient_ecoin", "b has 0 ecoin", "t1")
    assert instruction.failures_without_culprit == 0


def test_a_requeue_stored_before_the_field_existed_replays_as_not_counted() -> None:
    old = CODEC.decode(
        "InstructionRequeued", 1, {"batch_id": "b1", "reason": "batch failed: permission_denied"}
    )
    assert old == InstructionRequeued(
        batch_id="b1", reason="batch failed: permission_denied", without_culprit=False
    )
    instruction = created()
    instruction.batch("b1")
    instruction.replay(old, instruction.version + 1)
    assert (instruction.status.value, instruction.failures_without_culprit) == ("pending", 0)


def test_a_snapshot_without_the_count_reads_as_none_counted() -> None:
    state = created().snapshot_state()
    del state["failures_without_culprit"]
    assert Instruction.from_snapshot("t1", 1, state).failures_without_culprit == 0
