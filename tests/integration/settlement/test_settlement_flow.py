"""Settlement's use cases on its real store (SQLite and PostgreSQL): given trades and ledger
outcomes, then instructions, batches, commands and events."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from prosum_contracts import SchemaRegistry
from prosum_platform.domain import DomainRuleViolation
from prosum_platform.eventstore import EventStore, create_store_engine
from prosum_platform.eventstore.schema import outbox
from prosum_platform.service.migrations import upgrade
from prosum_settlement.adapters.store import unit_of_work
from prosum_settlement.application import services

POLICY = services.BatchPolicy(
    max_trades=3, window_s=0.0, max_in_flight=2, max_attempts=2, fee_account="operator"
)


@pytest.fixture
def store(store_url: str, registry: SchemaRegistry) -> EventStore:
    upgrade("prosum_settlement", store_url)
    return EventStore(create_store_engine(store_url), registry)


def outbox_messages(store: EventStore) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(outbox.c.payload).order_by(outbox.c.id))
        return [orjson.loads(row[0]) for row in rows]


def trade(n: int, seller: str = "s", buyer: str = "b") -> dict[str, Any]:
    return {
        "trade_id": f"t{n}",
        "market_id": "m-1",
        "delivery_start": "2026-11-22T10:00:00Z",
        "seller": seller,
        "buyer": buyer,
        "quantity_wh": 1000 + n,
        "value_ecoin": 250,
        "fee_ecoin": 3,
    }


def test_trades_become_instructions_once_and_batches_carry_them_to_the_ledger(
    store: EventStore,
) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        for n in range(5):
            assert services.record_trade(s, trade(n))
        assert not services.record_trade(s, trade(0)), "a redelivered trade is recorded once"
    with uow() as s:
        first = services.open_batch(s, POLICY)
    with uow() as s:
        second = services.open_batch(s, POLICY)
    with uow() as s:
        assert services.open_batch(s, POLICY) is None, "nothing left pending"
    commands = [m for m in outbox_messages(store) if m["type"] == "ledger.settle_trades"]
    assert [c["data"]["command_id"] for c in commands] == [f"settle-{first}", f"settle-{second}"]
    assert [len(c["data"]["trades"]) for c in commands] == [3, 2]
    assert {c["subject"] for c in commands} == {services.BATCH_KEY}
    assert commands[0]["data"]["trades"][0] == {
        "trade_id": "t0",
        "seller": "s",
        "buyer": "b",
        "energy_wh": 1000,
        "ecoin": 250,
        "fee_ecoin": 3,
    }


def test_confirmed_batches_settle_their_trades_and_repeats_change_nothing(
    store: EventStore,
) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        for n in range(2):
            services.record_trade(s, trade(n))
        batch = services.open_batch(s, POLICY)
    outcome = {
        "command_id": f"settle-{batch}",
        "tx_id": "0xabc",
        "block": 7,
        "settled_trades": ["t0", "t1"],
    }
    for _ in range(2):
        with uow() as s:
            services.apply_batch_outcome(s, "ledger.command_confirmed", outcome, POLICY)
    settled = [m for m in outbox_messages(store) if m["type"] == "settlement.trade_settled"]
    assert sorted(m["data"]["trade_id"] for m in settled) == ["t0", "t1"]
    assert settled[0]["data"]["tx_id"] == "0xabc"
    with uow() as s:
        assert s.instruction("t0").status.value == "settled"  # type: ignore[union-attr]


def test_a_failed_batch_fails_the_named_trade_and_requeues_the_rest(store: EventStore) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        for n in range(3):
            services.record_trade(s, trade(n))
        batch = services.open_batch(s, POLICY)
    failure = {
        "command_id": f"settle-{batch}",
        "reason": "insufficient_energy",
        "chain_message": "s has 0 Wh",
        "trade_id": "t1",
    }
    with uow() as s:
        services.apply_batch_outcome(s, "ledger.command_failed", failure, POLICY)
    failed = [m["data"] for m in outbox_messages(store) if m["type"] == "settlement.trade_failed"]
    assert [(f["trade_id"], f["reason"], f["failed_trade_id"]) for f in failed] == [
        ("t1", "insufficient_energy", "t1")
    ]
    with uow() as s:
        retry = services.open_batch(s, POLICY)
    command = [m for m in outbox_messages(store) if m["type"] == "ledger.settle_trades"][-1]
    assert command["data"]["command_id"] == f"settle-{retry}"
    assert [t["trade_id"] for t in command["data"]["trades"]] == ["t0", "t2"]


def test_a_batch_failing_without_a_culprit_gives_up_after_the_attempts(store: EventStore) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        services.record_trade(s, trade(0))
    for attempt in range(POLICY.max_attempts):
        with uow() as s:
            batch = services.open_batch(s, POLICY)
        assert batch is not None, attempt
        with uow() as s:
            services.apply_batch_outcome(
                s,
                "ledger.command_failed",
                {
                    "command_id": f"settle-{batch}",
                    "reason": "permission_denied",
                    "chain_message": "operator cannot receive",
                    "trade_id": None,
                },
                POLICY,
            )
    [failed] = [m["data"] for m in outbox_messages(store) if m["type"] == "settlement.trade_failed"]
    assert failed["reason"] == "permission_denied"
    with uow() as s:
        assert services.open_batch(s, POLICY) is None


def test_top_up_request_approval_and_mint_outcome(store: EventStore) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        funds, created = services.request_funds(s, "topup", "b", 5_000, "BANK-123")
    assert created
    with uow() as s:
        again, created = services.request_funds(s, "topup", "b", 5_000, "BANK-123")
    assert (again.id, created) == (funds.id, False)
    with pytest.raises(DomainRuleViolation) as reused, uow() as s:
        services.request_funds(s, "topup", "b", 9_999, "BANK-123")
    assert reused.value.reason == "reference_reused"
    with uow() as s:
        services.decide_funds(s, funds.id, "ops-1", approve=True)
    with pytest.raises(DomainRuleViolation), uow() as s:
        services.decide_funds(s, funds.id, "ops-1", approve=True)
    with uow() as s:
        services.apply_funds_outcome(
            s,
            "ledger.command_confirmed",
            {"command_id": f"topup-{funds.id}", "tx_id": "0x1", "block": 3},
        )
    types = [m["type"] for m in outbox_messages(store)]
    assert types == [
        "settlement.topup_requested",
        "ledger.mint_ecoin",
        "settlement.topup_approved",
        "settlement.topup_completed",
    ]
    mint = outbox_messages(store)[1]["data"]
    assert (mint["command_id"], mint["participant_id"], mint["amount"]) == (
        f"topup-{funds.id}",
        "b",
        5_000,
    )


def test_a_payout_is_burned_then_paid(store: EventStore) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        funds, _ = services.request_funds(s, "payout", "s", 700, "IBAN DE00 1234")
    with pytest.raises(DomainRuleViolation), uow() as s:
        services.mark_paid(s, funds.id, "ops-1", "WIRE-1")
    with uow() as s:
        services.decide_funds(s, funds.id, "ops-1", approve=True)
        services.apply_funds_outcome(
            s,
            "ledger.command_confirmed",
            {"command_id": f"payout-{funds.id}", "tx_id": "0x2", "block": 4},
        )
    with uow() as s:
        services.mark_paid(s, funds.id, "ops-1", "WIRE-1")
    types = [m["type"] for m in outbox_messages(store)]
    assert "ledger.burn_ecoin" in types
    assert types[-1] == "settlement.payout_paid"


def test_reconciliation_reports_differences_with_the_chain(store: EventStore) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        services.record_balance(s, {"participant_id": "a", "energy_wh": 10, "ecoin": 5, "block": 9})
        services.record_balance(s, {"participant_id": "b", "energy_wh": 0, "ecoin": 7, "block": 9})
        services.record_balance(
            s, {"participant_id": "a", "energy_wh": 99, "ecoin": 99, "block": 3}
        )  # stale
        run = services.start_reconciliation(s)
    report = {
        "command_id": f"reconcile-{run}",
        "block": 9,
        "balances": [
            {"participant_id": "a", "energy_wh": 10, "ecoin": 5},
            {"participant_id": "b", "energy_wh": 0, "ecoin": 8},
        ],
        "total_supply": {"energy_wh": 10, "ecoin": 13},
    }
    with uow() as s:
        services.finish_reconciliation(s, report)
    [done] = [
        m["data"]
        for m in outbox_messages(store)
        if m["type"] == "settlement.reconciliation_completed"
    ]
    assert done["checked"] == 2
    assert done["differences"] == [
        {
            "participant_id": "b",
            "projected_energy_wh": 0,
            "projected_ecoin": 7,
            "chain_energy_wh": 0,
            "chain_ecoin": 8,
        }
    ]
    request = next(m for m in outbox_messages(store) if m["type"] == "ledger.report_balances")
    assert request["data"]["participant_ids"] == ["a", "b"]
    assert uuid.UUID(run)
