"""The ledger adapter's command handling: given commands, when executed, then outcome events.

The command log is a fake (a class, in memory) and the chain is the in-memory backend that
passes the backend contract suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from prosum_ledger.adapters.memory import InMemoryChain
from prosum_ledger.application.commands import (
    BALANCE_CHANGED,
    CONFIRMED,
    FAILED,
    CommandExecutor,
    accept_command,
)
from prosum_ledger.domain.commands import CommandKind, CommandStatus
from prosum_ledger.domain.model import LedgerError, ReasonCode
from tests.support.fakes import FakeCommandLog

HASH = "cd" * 32


@pytest.fixture
def log() -> FakeCommandLog:
    return FakeCommandLog()


@pytest.fixture
def chain() -> InMemoryChain:
    chain = InMemoryChain()
    chain.setup_assets()
    return chain


def send(log: FakeCommandLog, kind: CommandKind, **data: Any) -> str:
    with log.unit() as unit:
        accept_command(unit, kind, data, "settlement")
    return str(data["command_id"])


def onboard(log: FakeCommandLog, name: str, *, producer: bool = False) -> None:
    permissions = ["connect", "send", "receive"] + (["energy.issue"] if producer else [])
    send(
        log,
        CommandKind.GRANT_PERMISSIONS,
        command_id=f"grant-{name}",
        participant_id=name,
        permissions=permissions,
    )


def test_commands_execute_in_order_and_each_ends_in_one_confirmation(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    onboard(log, "seller", producer=True)
    onboard(log, "buyer")
    onboard(log, "operator")
    send(
        log,
        CommandKind.MINT_ENERGY,
        command_id="mint-1",
        participant_id="seller",
        amount_wh=5000,
        evidence_hash=HASH,
    )
    send(log, CommandKind.MINT_ECOIN, command_id="topup-1", participant_id="buyer", amount=10_000)
    send(
        log,
        CommandKind.SETTLE_TRADES,
        command_id="settle-1",
        fee_account="operator",
        trades=[
            {
                "trade_id": "t-1",
                "seller": "seller",
                "buyer": "buyer",
                "energy_wh": 2000,
                "ecoin": 400,
                "fee_ecoin": 4,
            }
        ],
    )
    executor = CommandExecutor(log.unit, chain)
    assert executor.run_open() == 6
    assert executor.run_open() == 0
    for command_id in ("grant-seller", "mint-1", "topup-1", "settle-1"):
        assert [kind for kind, _ in log.outcomes(command_id)] == [CONFIRMED]
    settled = log.outcomes("settle-1")[0][1]
    assert settled["settled_trades"] == ["t-1"]
    balances = {
        data["participant_id"]: data for kind, _s, data in log.published if kind == BALANCE_CHANGED
    }
    assert (balances["seller"]["energy_wh"], balances["seller"]["ecoin"]) == (3000, 400)
    assert (balances["buyer"]["energy_wh"], balances["buyer"]["ecoin"]) == (2000, 10_000 - 404)
    assert balances["operator"]["ecoin"] == 4


def test_a_failing_command_ends_in_one_failure_with_the_reason_and_the_trade(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    onboard(log, "seller", producer=True)
    onboard(log, "buyer")
    send(
        log,
        CommandKind.SETTLE_TRADES,
        command_id="settle-1",
        fee_account="buyer",
        trades=[
            {
                "trade_id": "t-9",
                "seller": "seller",
                "buyer": "buyer",
                "energy_wh": 1,
                "ecoin": 0,
                "fee_ecoin": 0,
            }
        ],
    )
    send(log, CommandKind.MINT_ECOIN, command_id="topup-x", participant_id="stranger", amount=5)
    CommandExecutor(log.unit, chain).run_open()
    [(kind, data)] = log.outcomes("settle-1")
    assert kind == FAILED
    assert (data["reason"], data["trade_id"]) == ("insufficient_energy", "t-9")
    assert "has 0 Wh" in data["chain_message"]
    [(kind, data)] = log.outcomes("topup-x")
    assert (kind, data["reason"]) == (FAILED, "unknown_participant")


def test_a_repeated_command_is_not_executed_again(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    onboard(log, "buyer")
    for _ in range(3):
        send(log, CommandKind.MINT_ECOIN, command_id="topup-1", participant_id="buyer", amount=100)
    executor = CommandExecutor(log.unit, chain)
    executor.run_open()
    send(log, CommandKind.MINT_ECOIN, command_id="topup-1", participant_id="buyer", amount=100)
    executor.run_open()
    assert chain.balances("buyer").ecoin == 100
    # executed once; the repeat after it ended got the same outcome again
    outcomes = log.outcomes("topup-1")
    assert len(outcomes) == 2 and len({data["tx_id"] for _, data in outcomes}) == 1


def _settle(log: FakeCommandLog, command_id: str, energy_wh: int) -> Any:
    with log.unit() as unit:
        return accept_command(
            unit,
            CommandKind.SETTLE_TRADES,
            {
                "command_id": command_id,
                "fee_account": "operator",
                "trades": [
                    {
                        "trade_id": f"t-{command_id}",
                        "seller": "seller",
                        "buyer": "buyer",
                        "energy_wh": energy_wh,
                        "ecoin": 400,
                        "fee_ecoin": 4,
                    }
                ],
            },
            "settlement",
            "memory",
        )


def test_a_settle_command_sent_again_after_it_ended_gets_its_outcome_again(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    """Settlement sends a batch again when its outcome did not come back; the answer is the
    same outcome, and the chain is not asked twice."""
    for name in ("seller", "buyer", "operator"):
        onboard(log, name, producer=name == "seller")
    send(
        log,
        CommandKind.MINT_ENERGY,
        command_id="mint-1",
        participant_id="seller",
        amount_wh=5000,
        evidence_hash=HASH,
    )
    send(log, CommandKind.MINT_ECOIN, command_id="topup-1", participant_id="buyer", amount=10_000)
    executor = CommandExecutor(log.unit, chain)
    executor.run_open()
    assert _settle(log, "settle-ok", 2000).accepted
    assert _settle(log, "settle-short", 9000).accepted  # more energy than the seller has
    again = _settle(log, "settle-ok", 2000)
    assert (again.accepted, again.reason) == (False, "duplicate"), "still open: nothing said"
    assert log.outcomes("settle-ok") == []
    executor.run_open()
    first_ok, first_short = log.outcomes("settle-ok"), log.outcomes("settle-short")
    balances_published = len([e for e in log.published if e[0] == BALANCE_CHANGED])

    for command_id, energy in (("settle-ok", 2000), ("settle-short", 9000)):
        again = _settle(log, command_id, energy)
        assert (again.accepted, again.reason) == (False, "duplicate_outcome_published_again")
    assert executor.run_open() == 0, "nothing executed again"
    assert chain.balances("buyer").energy_wh == 2000
    assert log.outcomes("settle-ok") == first_ok * 2
    assert log.outcomes("settle-short") == first_short * 2
    [(kind, data)] = first_ok
    assert (kind, data["settled_trades"], data["backend"]) == (CONFIRMED, ["t-settle-ok"], "memory")
    assert first_short[0][0] == FAILED
    assert len([e for e in log.published if e[0] == BALANCE_CHANGED]) == balances_published


def test_an_ecoin_command_sent_again_after_it_ended_gets_its_outcome_again(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    onboard(log, "buyer")
    send(log, CommandKind.MINT_ECOIN, command_id="topup-1", participant_id="buyer", amount=5)
    CommandExecutor(log.unit, chain).run_open()
    with log.unit() as unit:
        again = accept_command(
            unit,
            CommandKind.MINT_ECOIN,
            {"command_id": "topup-1", "participant_id": "buyer", "amount": 5},
            "settlement",
            "memory",
        )
    assert (again.accepted, again.reason) == (False, "duplicate_outcome_published_again")
    first, second = log.outcomes("topup-1")
    assert first == second
    assert chain.balances("buyer").ecoin == 5, "minted once"


def test_other_commands_sent_again_after_they_ended_get_nothing(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    onboard(log, "buyer")
    CommandExecutor(log.unit, chain).run_open()
    with log.unit() as unit:
        again = accept_command(
            unit,
            CommandKind.GRANT_PERMISSIONS,
            {
                "command_id": "grant-buyer",
                "participant_id": "buyer",
                "permissions": ["connect", "send", "receive"],
            },
            "identity",
        )
    assert (again.accepted, again.reason) == (False, "duplicate")
    assert len(log.outcomes("grant-buyer")) == 1


def test_a_command_id_reused_for_another_request_is_refused(log: FakeCommandLog) -> None:
    with log.unit() as unit:
        first = accept_command(
            unit,
            CommandKind.MINT_ECOIN,
            {"command_id": "c", "participant_id": "p", "amount": 1},
            "settlement",
        )
    with log.unit() as unit:
        again = accept_command(
            unit,
            CommandKind.MINT_ECOIN,
            {"command_id": "c", "participant_id": "p", "amount": 2},
            "settlement",
        )
    assert first.accepted
    assert (again.accepted, again.reason) == (False, "conflicting_duplicate")
    assert log.commands["c"].payload["amount"] == 1


def test_a_batch_naming_a_trade_twice_fails_before_the_chain(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    trade = {
        "trade_id": "t",
        "seller": "a",
        "buyer": "b",
        "energy_wh": 1,
        "ecoin": 1,
        "fee_ecoin": 0,
    }
    send(log, CommandKind.SETTLE_TRADES, command_id="s", fee_account="op", trades=[trade, trade])
    [(kind, data)] = log.outcomes("s")
    assert (kind, data["reason"]) == (FAILED, "invalid_command")
    height = chain.height()
    assert CommandExecutor(log.unit, chain).run_open() == 0
    assert chain.height() == height


class Crash(BaseException):
    """Stands for the process dying between the chain's answer and the outcome's record."""


def test_a_crash_after_submit_is_reconciled_from_the_chain_not_resubmitted(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    onboard(log, "seller", producer=True)
    onboard(log, "buyer")
    send(
        log,
        CommandKind.MINT_ENERGY,
        command_id="mint",
        participant_id="seller",
        amount_wh=1000,
        evidence_hash=HASH,
    )
    send(log, CommandKind.MINT_ECOIN, command_id="topup", participant_id="buyer", amount=1000)
    CommandExecutor(log.unit, chain).run_open()
    send(
        log,
        CommandKind.SETTLE_TRADES,
        command_id="settle",
        fee_account="buyer",
        trades=[
            {
                "trade_id": "t-1",
                "seller": "seller",
                "buyer": "buyer",
                "energy_wh": 500,
                "ecoin": 250,
                "fee_ecoin": 0,
            }
        ],
    )

    def die() -> None:
        raise Crash

    with pytest.raises(Crash):
        CommandExecutor(log.unit, chain, after_submit=die).run_open()
    assert log.commands["settle"].status is CommandStatus.SUBMITTED
    assert log.outcomes("settle") == []
    height = chain.height()

    CommandExecutor(log.unit, chain).run_open()
    assert chain.height() == height, "nothing was submitted again"
    [(kind, data)] = log.outcomes("settle")
    assert kind == CONFIRMED
    assert data["settled_trades"] == ["t-1"]
    assert chain.balances("seller").energy_wh == 500


class FlakyChain(InMemoryChain):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def mint_ecoin(self, command_id: str, participant_id: str, amount: int) -> Any:
        if self.down:
            raise LedgerError(ReasonCode.CHAIN_UNAVAILABLE, "connection refused")
        return super().mint_ecoin(command_id, participant_id, amount)


def test_an_unreachable_chain_leaves_the_command_open_until_it_answers(log: FakeCommandLog) -> None:
    chain = FlakyChain()
    chain.setup_assets()
    onboard(log, "buyer")
    send(log, CommandKind.MINT_ECOIN, command_id="topup", participant_id="buyer", amount=7)
    executor = CommandExecutor(log.unit, chain)
    executor.run_open()
    assert log.outcomes("topup") == []
    assert log.commands["topup"].status is CommandStatus.SUBMITTED
    chain.down = False
    executor.run_open()
    assert [kind for kind, _ in log.outcomes("topup")] == [CONFIRMED]
    assert chain.balances("buyer").ecoin == 7


def test_a_balance_report_answers_with_the_chain_balances_and_no_transaction(
    log: FakeCommandLog, chain: InMemoryChain
) -> None:
    onboard(log, "seller", producer=True)
    send(
        log,
        CommandKind.MINT_ENERGY,
        command_id="mint",
        participant_id="seller",
        amount_wh=42,
        evidence_hash=HASH,
    )
    executor = CommandExecutor(log.unit, chain)
    executor.run_open()
    height = chain.height()
    send(
        log,
        CommandKind.REPORT_BALANCES,
        command_id="report-1",
        participant_ids=["seller", "nobody"],
    )
    executor.run_open()
    assert chain.height() == height
    [report] = [data for kind, _s, data in log.published if kind == "ledger.balances_reported"]
    assert report["balances"] == [
        {"participant_id": "seller", "energy_wh": 42, "ecoin": 0},
        {"participant_id": "nobody", "energy_wh": 0, "ecoin": 0},
    ]
    assert report["total_supply"] == {"energy_wh": 42, "ecoin": 0}
    assert report["block"] == height
