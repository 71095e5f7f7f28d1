"""Settlement's use cases on its real store (SQLite and PostgreSQL): given trades and ledger
outcomes, then instructions, batches, commands and events."""

from __future__ import annotations

import dataclasses
import logging
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
from prosum_settlement.adapters.store import batches, unit_of_work
from prosum_settlement.application import services
from tests.support.identity_keys import IdentityStandIn

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


def _fail(
    uow: Any, batch: str | None, culprit: str | None, reason: str = "permission_denied"
) -> None:
    assert batch is not None
    with uow() as s:
        services.apply_batch_outcome(
            s,
            "ledger.command_failed",
            {
                "command_id": f"settle-{batch}",
                "reason": reason,
                "chain_message": "the chain said no",
                "trade_id": culprit,
            },
            POLICY,
        )


def test_batches_failing_for_other_trades_do_not_use_up_a_trades_attempts(
    store: EventStore,
) -> None:
    """t0 shares more batches than ``max_attempts`` with trades the chain names as culprits,
    then still gets all its ``max_attempts`` batches failing without a culprit."""
    uow = unit_of_work(store)
    culprits = 4
    with uow() as s:
        for n in range(culprits + 1):
            services.record_trade(s, trade(n, buyer="b" if n == 0 else "x"))
    for n in range(1, culprits + 1):  # [t0 t1 t2] fails for t1, [t0 t2 t3] for t2, ...
        with uow() as s:
            batch = services.open_batch(s, POLICY)
            assert batch is not None
            assert s.batch_trade_ids(batch)[:2] == ["t0", f"t{n}"]
        _fail(uow, batch, f"t{n}", "insufficient_ecoin")
    with uow() as s:
        [t0] = s.instructions_by_id(["t0"])
    assert (t0.status.value, t0.attempts, t0.failures_without_culprit) == ("pending", 4, 0)
    assert culprits > POLICY.max_attempts
    for n in range(POLICY.max_attempts):
        with uow() as s:
            batch = services.open_batch(s, POLICY)
            assert batch is not None
            assert s.batch_trade_ids(batch) == ["t0"]
        _fail(uow, batch, None)
        with uow() as s:
            [t0] = s.instructions_by_id(["t0"])
        last = n == POLICY.max_attempts - 1
        assert t0.status.value == ("failed" if last else "pending"), n
        assert t0.failures_without_culprit == n + 1
    failed = [m["data"] for m in outbox_messages(store) if m["type"] == "settlement.trade_failed"]
    assert [(f["trade_id"], f["reason"], f["failed_trade_id"]) for f in failed] == [
        *[(f"t{n}", "insufficient_ecoin", f"t{n}") for n in range(1, culprits + 1)],
        ("t0", "permission_denied", None),
    ]
    with uow() as s:
        assert services.open_batch(s, POLICY) is None
        replayed = s.instruction("t0")  # from its events, not the read model
    assert replayed is not None
    assert replayed.snapshot_state() == t0.snapshot_state()
    assert (replayed.attempts, replayed.failures_without_culprit) == (
        culprits + POLICY.max_attempts,
        POLICY.max_attempts,
    )


def test_a_batch_built_while_the_fee_account_is_not_active_is_sent_with_a_warning(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    identity = IdentityStandIn()
    uow = unit_of_work(store)
    watch = services.FeeAccountWatch(POLICY.fee_account)
    with uow() as s:
        services.record_trade(s, trade(0))
    with caplog.at_level(logging.WARNING, logger=services.__name__), uow() as s:
        batch = services.open_batch(s, POLICY, watch)
    assert batch is not None, "the batch is sent all the same"
    [warning] = caplog.records
    assert "building a batch of 1 trades" in warning.getMessage()
    assert "'operator' is unknown to settlement" in warning.getMessage()
    caplog.clear()
    _fail(uow, batch, None, "unknown_participant")
    identity.apply(store, [identity.status_event("operator", "activated")])
    with caplog.at_level(logging.INFO, logger=services.__name__), uow() as s:
        assert services.open_batch(s, POLICY, watch) is not None
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "active now" in caplog.records[0].getMessage()


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


def _balance(uow: Any, participant: str, ecoin: int, block: int) -> None:
    with uow() as s:
        services.record_balance(
            s, {"participant_id": participant, "energy_wh": 0, "ecoin": ecoin, "block": block}
        )


def test_a_payout_is_burned_then_paid(store: EventStore) -> None:
    uow = unit_of_work(store)
    _balance(uow, "s", 1_000, 3)
    with uow() as s:
        funds, _ = services.request_funds(s, "payout", "s", 700, "IBAN DE00 1234")
    with pytest.raises(DomainRuleViolation), uow() as s:
        services.mark_paid(s, funds.id, "ops-1", "WIRE-1")
    with uow() as s:
        services.decide_funds(s, funds.id, "ops-1", approve=True)
    types = [m["type"] for m in outbox_messages(store)]
    assert "ledger.burn_ecoin" not in types, "not before the order book holds the ecoin"
    held = {"request_id": funds.id, "participant_id": "s", "amount": 700}
    for _ in range(2):  # a repeat sends the same command, which the ledger executes once
        with uow() as s:
            services.payout_cover_held(s, held)
    burns = [m["data"] for m in outbox_messages(store) if m["type"] == "ledger.burn_ecoin"]
    assert [b["command_id"] for b in burns] == [f"payout-{funds.id}"] * 2
    assert burns[0]["amount"] == 700
    with uow() as s:
        services.apply_funds_outcome(
            s,
            "ledger.command_confirmed",
            {"command_id": f"payout-{funds.id}", "tx_id": "0x2", "block": 4},
        )
        services.payout_cover_held(s, held)  # late: the payout is completed, nothing sent
    with uow() as s:
        services.mark_paid(s, funds.id, "ops-1", "WIRE-1")
    types = [m["type"] for m in outbox_messages(store)]
    assert types.count("ledger.burn_ecoin") == 2
    assert types[-1] == "settlement.payout_paid"


def test_a_payout_the_order_book_cannot_hold_fails_without_a_burn(store: EventStore) -> None:
    uow = unit_of_work(store)
    _balance(uow, "b", 1_000, 3)
    with uow() as s:
        funds, _ = services.request_funds(s, "payout", "b", 800, "IBAN-9")
        services.decide_funds(s, funds.id, "ops-1", approve=True)
    with uow() as s:
        services.payout_cover_refused(
            s,
            {
                "request_id": funds.id,
                "participant_id": "b",
                "amount": 800,
                "reason": "insufficient_ecoin",
                "free_ecoin": 300,
            },
        )
        assert s.funds(funds.id).status.value == "failed"  # type: ignore[union-attr]
    [failed] = [
        m["data"] for m in outbox_messages(store) if m["type"] == "settlement.payout_failed"
    ]
    assert failed["reason"] == "insufficient_ecoin"
    assert "300 ecoin free" in failed["chain_message"]
    assert not [m for m in outbox_messages(store) if m["type"] == "ledger.burn_ecoin"]
    with uow() as s:  # failed: its 800 no longer count against the balance
        assert services.request_funds(s, "payout", "b", 900, "IBAN-10")[1]


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


def test_a_fetch_of_trades_becomes_instructions_at_once_exactly_as_one_by_one(
    store: EventStore,
) -> None:
    """The consumer applies a fetched run of trades with one call: repeats inside the run and
    trades already held are recorded once, and the instructions equal those recorded one
    by one."""
    uow = unit_of_work(store)
    with uow() as s:
        assert services.record_trade(s, trade(0))
    run = [trade(1), trade(0), trade(2), trade(1), trade(3, seller="s2")]
    with uow() as s:
        assert services.record_trades(s, run) == 3
    with uow() as s:
        assert services.record_trades(s, run) == 0
        pending = s.pending_instructions(10)
    assert sorted(i.id for i in pending) == ["t0", "t1", "t2", "t3"]
    by_id = {i.id: i for i in pending}
    assert (by_id["t3"].seller, by_id["t3"].quantity_wh) == ("s2", 1003)
    assert all(i.version == 1 for i in pending)


def test_a_fetch_of_balance_reports_keeps_each_participants_latest_block(
    store: EventStore,
) -> None:
    def report(pid: str, block: int, ecoin: int) -> dict[str, Any]:
        return {"participant_id": pid, "energy_wh": block * 10, "ecoin": ecoin, "block": block}

    uow = unit_of_work(store)
    with uow() as s:
        services.record_balance(s, report("a", 10, 100))
    with uow() as s:
        services.record_balances(
            s,
            [
                report("a", 12, 120),
                report("b", 5, 50),
                report("a", 11, 110),  # older than one already in this fetch
                report("b", 5, 51),  # the same block again: the later report wins
                report("c", 1, 1),
            ],
        )
        services.record_balances(s, [report("a", 9, 90)])  # older than the one held
    with uow() as s:
        held = s.balances()
    assert {p: (b.block, b.ecoin, b.energy_wh) for p, b in held.items()} == {
        "a": (12, 120, 120),
        "b": (5, 51, 50),
        "c": (1, 1, 10),
    }


def test_a_batch_failing_naming_a_trade_it_does_not_hold_counts_as_without_a_culprit(
    store: EventStore,
) -> None:
    """The chain names a trade that is not in the batch (a ledger fault): nobody in the batch
    is to blame, so the batch counts as failing without a culprit and its trades give up after
    max_attempts rather than going round for ever."""
    uow = unit_of_work(store)
    with uow() as s:
        services.record_trade(s, trade(0))
    for attempt in range(POLICY.max_attempts):
        with uow() as s:
            batch = services.open_batch(s, POLICY)
        assert batch is not None, attempt
        _fail(uow, batch, "t-not-in-this-batch")
    [failed] = [m["data"] for m in outbox_messages(store) if m["type"] == "settlement.trade_failed"]
    assert failed["trade_id"] == "t0"
    assert failed["failed_trade_id"] is None
    with uow() as s:
        assert services.open_batch(s, POLICY) is None
        [held] = s.instructions_by_id(["t0"])
    assert held.failures_without_culprit == POLICY.max_attempts


def _settle_commands(store: EventStore) -> list[dict[str, Any]]:
    return [m["data"] for m in outbox_messages(store) if m["type"] == "ledger.settle_trades"]


def test_a_batch_without_an_outcome_is_sent_again_unchanged_and_settles_once(
    store: EventStore,
) -> None:
    """A settle command the ledger never answered (dead-lettered, say) would leave its trades
    batched for ever, and ``max_in_flight`` such batches would stop batching. It is sent
    again, the same command, until an outcome comes back; the ledger's repeat of an outcome
    it already gave changes nothing."""
    uow = unit_of_work(store)
    with uow() as s:
        for n in range(3):
            services.record_trade(s, trade(n))
        batch = services.open_batch(s, POLICY)
    assert batch is not None
    with uow() as s:
        assert services.resend_overdue(s, POLICY) == [], "not overdue within resend_after_s"
    overdue = dataclasses.replace(POLICY, resend_after_s=0.0)
    for round_ in (1, 2):
        with uow() as s:
            assert services.resend_overdue(s, overdue) == [batch]
        with store.engine.connect() as conn:
            resends = conn.execute(
                sa.select(batches.c.resends).where(batches.c.batch_id == batch)
            ).scalar_one()
        assert resends == round_
    first, *again = _settle_commands(store)
    assert again == [first, first], "the same command id, fee account and trades"
    assert first["command_id"] == f"settle-{batch}"

    outcome = {
        "command_id": f"settle-{batch}",
        "tx_id": "0xabc",
        "block": 7,
        "settled_trades": ["t0", "t1", "t2"],
    }
    for _ in range(2):  # the outcome, then the ledger's answer to a repeat
        with uow() as s:
            services.apply_batch_outcome(s, "ledger.command_confirmed", outcome, POLICY)
    settled = [m for m in outbox_messages(store) if m["type"] == "settlement.trade_settled"]
    assert sorted(m["data"]["trade_id"] for m in settled) == ["t0", "t1", "t2"]
    with uow() as s:
        assert services.resend_overdue(s, overdue) == [], "an ended batch is not sent again"
    late_failure = {
        "command_id": f"settle-{batch}",
        "reason": "insufficient_energy",
        "chain_message": "too late",
        "trade_id": "t1",
    }
    with uow() as s:
        services.apply_batch_outcome(s, "ledger.command_failed", late_failure, POLICY)
        assert s.instruction("t1").status.value == "settled"  # type: ignore[union-attr]
    assert not [m for m in outbox_messages(store) if m["type"] == "settlement.trade_failed"]


def test_a_batch_recorded_before_commands_were_kept_is_sent_again_from_its_trades(
    store: EventStore,
) -> None:
    uow = unit_of_work(store)
    with uow() as s:
        for n in range(2):
            services.record_trade(s, trade(n))
        batch = services.open_batch(s, POLICY)
    with store.engine.begin() as conn:  # as migration settlement_0004 leaves an older row
        conn.execute(batches.update().values(command=None))
    with uow() as s:
        assert services.resend_overdue(s, dataclasses.replace(POLICY, resend_after_s=0.0)) == [
            batch
        ]
    first, again = _settle_commands(store)
    assert again == first


def test_payouts_together_never_ask_for_more_than_the_balance(store: EventStore) -> None:
    """Each payout is counted against the balance with the participant's other payouts not yet
    burned (or burned after the balance held): asked for, at approval, and until the balance
    shows the burn."""
    uow = unit_of_work(store)

    def ask(amount: int, reference: str) -> Any:
        with uow() as s:
            return services.request_funds(s, "payout", "p", amount, reference)[0]

    def refused(call: Any) -> str:
        with pytest.raises(DomainRuleViolation) as caught, uow() as s:
            call(s)
        return caught.value.reason

    assert refused(lambda s: services.request_funds(s, "payout", "p", 1, "r0")) == (
        "insufficient_ecoin"
    ), "no balance known yet"
    _balance(uow, "p", 500, 4)
    first = ask(400, "r1")
    assert refused(lambda s: services.request_funds(s, "payout", "p", 200, "r2")) == (
        "insufficient_ecoin"
    )
    second = ask(100, "r2")
    with uow() as s:
        services.decide_funds(s, first.id, "ops", approve=True)
    _balance(uow, "p", 450, 5)  # a trade paid 50 since: 400 + 100 no longer fit
    assert refused(lambda s: services.decide_funds(s, second.id, "ops", approve=True)) == (
        "insufficient_ecoin"
    )
    with uow() as s:
        services.decide_funds(s, second.id, "ops", approve=False, reason="does not fit")
        services.apply_funds_outcome(
            s,
            "ledger.command_confirmed",
            {"command_id": f"payout-{first.id}", "tx_id": "0x9", "block": 9},
        )
    # Burned in block 9; the balance held is still from block 5: the 400 still count.
    assert refused(lambda s: services.request_funds(s, "payout", "p", 100, "r3")) == (
        "insufficient_ecoin"
    )
    _balance(uow, "p", 50, 9)  # the burn, in the balance: counted once, not twice
    assert ask(50, "r3").status.value == "requested"


def test_approved_funds_without_an_outcome_are_asked_for_again(store: EventStore) -> None:
    """A mint whose outcome did not come back is sent again; a payout whose hold the order
    book never answered is put to it again. Ended ones are not."""
    uow = unit_of_work(store)
    _balance(uow, "p", 1_000, 3)
    with uow() as s:
        topup, _ = services.request_funds(s, "topup", "p", 500, "DEPOSIT-1")
        payout, _ = services.request_funds(s, "payout", "p", 300, "IBAN-1")
        done, _ = services.request_funds(s, "topup", "p", 100, "DEPOSIT-2")
        for funds in (topup, payout, done):
            services.decide_funds(s, funds.id, "ops-1", approve=True)
        services.apply_funds_outcome(
            s,
            "ledger.command_confirmed",
            {"command_id": f"topup-{done.id}", "tx_id": "0x1", "block": 4},
        )
    with uow() as s:
        assert services.resend_overdue_funds(s, POLICY) == [], "not within resend_after_s"
    overdue = dataclasses.replace(POLICY, resend_after_s=0.0)
    with uow() as s:
        assert sorted(services.resend_overdue_funds(s, overdue)) == sorted([topup.id, payout.id])
    messages = outbox_messages(store)
    mints = [m["data"]["command_id"] for m in messages if m["type"] == "ledger.mint_ecoin"]
    assert mints == [f"topup-{topup.id}", f"topup-{done.id}", f"topup-{topup.id}"]
    approvals = [m["data"] for m in messages if m["type"] == "settlement.payout_approved"]
    assert [a["request_id"] for a in approvals] == [payout.id, payout.id]
    assert approvals[1]["amount"] == 300
