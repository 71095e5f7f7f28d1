"""The MultiChain backend against the recorded-behaviour node, in 1.0.9 and 2.x quantity modes.

Given a chain and participants, when a ledger command runs, then the balances, permissions and
records the chain reports are what a user of the ledger would check. Only the node is
simulated (from MULTICHAIN_RPC.md); Savoir talks to it over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from prosum_ledger.adapters.multichain.backend import MultiChainBackend
from prosum_ledger.adapters.multichain.config import MultiChainSettings
from prosum_ledger.adapters.multichain.rpc import MultiChainRpc, StreamPublish
from prosum_ledger.domain.model import (
    PARTICIPANT_PERMISSIONS,
    PRODUCER_PERMISSIONS,
    Balances,
    LedgerError,
    Permission,
    ReasonCode,
    SettlementTrade,
)
from tests.support.multichain_node import RecordedMultiChainNode

EVIDENCE = "9f" * 32
PAPER_EXCHANGE = [
    "preparelockunspentfrom",
    "createrawexchange",
    "decoderawexchange",
    "preparelockunspentfrom",
    "appendrawexchange",
    "sendrawtransaction",
]


@pytest.fixture(params=["1.0.9", "2.x"])
def node(request: pytest.FixtureRequest) -> Iterator[RecordedMultiChainNode]:
    with RecordedMultiChainNode(version=request.param) as started:
        yield started


BackendFactory = Callable[..., MultiChainBackend]


@pytest.fixture
def make_backend(node: RecordedMultiChainNode, tmp_path: Path) -> Iterator[BackendFactory]:
    made: list[MultiChainBackend] = []

    def make(rpc: MultiChainRpc | None = None, **overrides: object) -> MultiChainBackend:
        values: dict[str, object] = {
            "connection": node.connection(),
            "state_path": tmp_path / "multichain-state.json",
            "poll_interval_s": 0.003,
            "confirm_timeout_s": 10.0,
        }
        values.update(overrides)
        backend = MultiChainBackend(MultiChainSettings(**values), rpc)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def ledger(make_backend: BackendFactory) -> MultiChainBackend:
    """A set-up chain with producers p1 and p2, consumers c1 and c2 and the operator."""
    backend = make_backend()
    backend.setup_assets()
    for producer in ("p1", "p2"):
        backend.grant(f"grant-{producer}", producer, PRODUCER_PERMISSIONS)
    for participant in ("c1", "c2", "operator"):
        backend.grant(f"grant-{participant}", participant, PARTICIPANT_PERMISSIONS)
    return backend


def fund(ledger: MultiChainBackend, *, energy: int = 100_000, ecoin: int = 1_000_000) -> None:
    for producer in ("p1", "p2"):
        ledger.mint_energy(f"fund-energy-{producer}", producer, energy, EVIDENCE)
    for consumer in ("c1", "c2"):
        ledger.mint_ecoin(f"fund-ecoin-{consumer}", consumer, ecoin)


def all_balances(ledger: MultiChainBackend) -> dict[str, Balances]:
    one_by_one = {p: ledger.balances(p) for p in ("p1", "p2", "c1", "c2", "operator")}
    assert ledger.balances_many(list(one_by_one)) == one_by_one
    return one_by_one


def total_of(balances: dict[str, Balances]) -> Balances:
    return Balances(
        energy_wh=sum(b.energy_wh for b in balances.values()),
        ecoin=sum(b.ecoin for b in balances.values()),
    )


# --- setup -----------------------------------------------------------------------------


def test_setup_registers_both_assets_once(
    make_backend: BackendFactory, node: RecordedMultiChainNode
) -> None:
    backend = make_backend()

    first = backend.setup_assets()
    again = backend.setup_assets()

    assert first is not None
    assert first.block >= 1
    assert again is None
    assets = {a["name"]: a for a in node.rpc_listassets([])}
    assert assets["energy"]["open"] and assets["ecoin"]["open"]
    assert (assets["energy"]["multiple"], assets["ecoin"]["multiple"]) == (1000, 1)
    assert backend.total_supply() == Balances(energy_wh=0, ecoin=0)
    assert "prosum-commands" in node.streams


def test_commands_before_setup_are_refused(make_backend: BackendFactory) -> None:
    backend = make_backend()
    backend.register_participant("p1")

    with pytest.raises(LedgerError) as caught:
        backend.mint_ecoin("m-1", "p1", 10)

    assert caught.value.reason is ReasonCode.UNKNOWN_ASSET


def test_a_node_of_another_chain_is_refused(
    node: RecordedMultiChainNode, make_backend: BackendFactory
) -> None:
    backend = make_backend(connection=node.connection(chain_name="someone-elses-chain"))

    with pytest.raises(LedgerError, match="someone-elses-chain") as caught:
        backend.setup_assets()

    assert caught.value.reason is ReasonCode.CHAIN_REJECTED


# --- participants and permissions ------------------------------------------------------


def test_grant_and_revoke(ledger: MultiChainBackend, node: RecordedMultiChainNode) -> None:
    assert ledger.permissions("p1") == PRODUCER_PERMISSIONS
    assert ledger.permissions("c1") == PARTICIPANT_PERMISSIONS
    assert ledger.permissions("nobody") == frozenset()
    address = ledger.register_participant("c1")
    assert ledger.register_participant("c1") == address
    assert ledger.participant_of(address) == "c1"

    ledger.revoke("revoke-1", "p1", frozenset({Permission.ISSUE_ENERGY}))
    assert ledger.permissions("p1") == PARTICIPANT_PERMISSIONS
    with pytest.raises(LedgerError) as caught:
        ledger.mint_energy("m-after-revoke", "p1", 1_000, EVIDENCE)
    assert caught.value.reason is ReasonCode.PERMISSION_DENIED

    ledger.grant("regrant-1", "p1", frozenset({Permission.ISSUE_ENERGY}))
    assert ledger.permissions("p1") == PRODUCER_PERMISSIONS


def test_a_replayed_grant_sends_nothing(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    grants = node.calls.count("grant")

    first = ledger.grant("grant-c3", "c3", PARTICIPANT_PERMISSIONS)
    again = ledger.grant("grant-c3", "c3", PARTICIPANT_PERMISSIONS)

    assert again == first
    assert node.calls.count("grant") == grants + 1
    assert ledger.find_command("grant-c3") == first


def test_revoking_an_unknown_participant(ledger: MultiChainBackend) -> None:
    with pytest.raises(LedgerError) as caught:
        ledger.revoke("r-x", "nobody", PARTICIPANT_PERMISSIONS)
    assert caught.value.reason is ReasonCode.UNKNOWN_PARTICIPANT
    with pytest.raises(LedgerError) as empty:
        ledger.grant("g-x", "c1", frozenset())
    assert empty.value.reason is ReasonCode.INVALID_COMMAND


# --- mint and burn ---------------------------------------------------------------------


def test_mints_land_exactly_and_carry_their_evidence(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    receipt = ledger.mint_energy("m-1", "p1", 1_501, EVIDENCE)  # 1.501 kWh
    ledger.mint_energy("m-2", "p1", 1, "another-evidence")  # one Wh, the smallest unit
    ledger.mint_ecoin("m-3", "c1", 20_000)

    assert ledger.balances("p1") == Balances(energy_wh=1_502, ecoin=0)
    assert ledger.balances("c1") == Balances(energy_wh=0, ecoin=20_000)
    assert ledger.total_supply() == Balances(energy_wh=1_502, ecoin=20_000)
    # The command id and the evidence are in the issuance transaction itself.
    (energy,) = node.rpc_listassets(["energy", True])
    issue = next(i for i in energy["issues"] if i["txid"] == receipt.tx_id)
    assert issue["details"] == {"prosum-command": "m-1", "prosum-evidence": EVIDENCE}
    assert ledger.find_command("m-1") == receipt


def test_a_replayed_mint_changes_nothing(
    ledger: MultiChainBackend, node: RecordedMultiChainNode, make_backend: BackendFactory
) -> None:
    first = ledger.mint_energy("m-1", "p1", 5_000, EVIDENCE)
    again = ledger.mint_energy("m-1", "p1", 5_000, EVIDENCE)
    # A restarted adapter knows it from the chain.
    restarted = make_backend().mint_energy("m-1", "p1", 5_000, EVIDENCE)

    assert first == again == restarted
    assert node.calls.count("issuemorefrom") == 1
    assert ledger.total_supply().energy_wh == 5_000


def test_mint_refusals(ledger: MultiChainBackend) -> None:
    cases = [
        (lambda: ledger.mint_energy("m-c", "c1", 100, EVIDENCE), ReasonCode.PERMISSION_DENIED),
        (
            lambda: ledger.mint_energy("m-u", "nobody", 100, EVIDENCE),
            ReasonCode.UNKNOWN_PARTICIPANT,
        ),
        (lambda: ledger.mint_energy("m-0", "p1", 0, EVIDENCE), ReasonCode.INVALID_COMMAND),
        (lambda: ledger.mint_ecoin("m-b", "c1", True), ReasonCode.INVALID_COMMAND),  # type: ignore[arg-type]
        (lambda: ledger.mint_energy("", "p1", 1, EVIDENCE), ReasonCode.INVALID_COMMAND),
    ]
    for run, reason in cases:
        with pytest.raises(LedgerError) as caught:
            run()
        assert caught.value.reason is reason
    assert ledger.total_supply() == Balances(energy_wh=0, ecoin=0)
    # A refused command can run later under the same id, once it can succeed.
    ledger.grant("g-c1-issue", "c1", frozenset({Permission.ISSUE_ENERGY}))
    assert ledger.mint_energy("m-c", "c1", 100, EVIDENCE).block > 0


def test_burn(ledger: MultiChainBackend, node: RecordedMultiChainNode) -> None:
    ledger.mint_ecoin("m-1", "c1", 1_000)

    receipt = ledger.burn_ecoin("b-1", "c1", 400)
    again = ledger.burn_ecoin("b-1", "c1", 400)
    with pytest.raises(LedgerError) as caught:
        ledger.burn_ecoin("b-2", "c1", 601)

    assert again == receipt
    assert caught.value.reason is ReasonCode.INSUFFICIENT_ECOIN
    assert ledger.balances("c1").ecoin == 600
    assert ledger.total_supply().ecoin == 600
    burned = node.rpc_getaddressbalances([node.burn_address, 0])
    assert [(b["name"], int(b["qty"].value)) for b in burned] == [("ecoin", 400)]


# --- settlement ------------------------------------------------------------------------


def test_one_trade_settles_through_the_papers_exchange(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    fund(ledger)
    before = len(node.calls)

    result = ledger.settle_batch(
        "s-1",
        [SettlementTrade("t-1", seller="p1", buyer="c1", energy_wh=1_000, ecoin=1_000)],
        "operator",
    )

    calls = [c for c in node.calls[before:] if c in set(PAPER_EXCHANGE)]
    assert calls == PAPER_EXCHANGE
    assert result.settled == ("t-1",)
    assert result.already_settled == ()
    assert ledger.balances("p1") == Balances(energy_wh=99_000, ecoin=1_000)
    assert ledger.balances("c1") == Balances(energy_wh=1_000, ecoin=999_000)
    assert ledger.is_settled("t-1")
    assert ledger.find_command("s-1") == result.receipt
    assert node.rpc_listlockunspent([]) == []


def test_a_batch_settles_all_trades_in_one_transaction(
    ledger: MultiChainBackend, node: RecordedMultiChainNode, make_backend: BackendFactory
) -> None:
    fund(ledger)
    people = [("p1", "c1"), ("p2", "c2"), ("p1", "c2"), ("p2", "c1")]
    trades = [
        SettlementTrade(f"trade-{i:03d}", s, b, energy_wh=250 + i, ecoin=100 + i, fee_ecoin=i % 3)
        for i, (s, b) in ((i, people[i % 4]) for i in range(60))
    ]
    sends = node.calls.count("sendrawtransaction")
    before = all_balances(ledger)

    result = ledger.settle_batch("batch-1", trades, "operator")

    assert node.calls.count("sendrawtransaction") == sends + 1
    assert result.settled == tuple(t.trade_id for t in trades)
    after = all_balances(ledger)
    for who in ("p1", "p2", "c1", "c2"):
        sold = sum(t.energy_wh for t in trades if t.seller == who)
        bought = sum(t.energy_wh for t in trades if t.buyer == who)
        earned = sum(t.ecoin for t in trades if t.seller == who)
        paid = sum(t.ecoin + t.fee_ecoin for t in trades if t.buyer == who)
        assert after[who].energy_wh == before[who].energy_wh - sold + bought
        assert after[who].ecoin == before[who].ecoin + earned - paid
    assert after["operator"].ecoin == sum(t.fee_ecoin for t in trades)
    assert total_of(after) == total_of(before) == ledger.total_supply()
    # A fresh adapter on the same chain reads every trade id back from the chain.
    fresh = make_backend()
    assert all(fresh.is_settled(t.trade_id) for t in trades)
    assert fresh.find_command("batch-1") == result.receipt


def test_a_participant_on_both_sides_of_a_batch(ledger: MultiChainBackend) -> None:
    fund(ledger)
    ledger.settle_batch("s-pre", [SettlementTrade("pre", "p1", "c1", 2_000, 500)], "operator")

    # c1 sells energy it already holds and buys more in the same transaction: one lock of both.
    ledger.settle_batch(
        "s-both",
        [
            SettlementTrade("both-1", "c1", "c2", 1_500, 450, fee_ecoin=1),
            SettlementTrade("both-2", "p2", "c1", 3_000, 900, fee_ecoin=2),
        ],
        "operator",
    )

    assert ledger.balances("c1") == Balances(energy_wh=3_500, ecoin=1_000_000 - 500 + 450 - 902)
    assert ledger.balances("c2") == Balances(energy_wh=1_500, ecoin=1_000_000 - 451)
    assert ledger.balances("operator").ecoin == 3


def test_a_batch_with_one_unaffordable_trade_settles_none(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    fund(ledger, energy=10_000, ecoin=50_000)
    trades = [
        SettlementTrade("ok-1", "p1", "c1", 4_000, 1_000),
        SettlementTrade("ok-2", "p2", "c2", 4_000, 1_000),
        SettlementTrade("too-much", "p1", "c2", 7_000, 1_000),  # p1 holds 10,000 Wh in all
        SettlementTrade("ok-3", "p2", "c1", 1_000, 1_000),
    ]
    before = all_balances(ledger)

    with pytest.raises(LedgerError) as caught:
        ledger.settle_batch("batch-bad", trades, "operator")

    assert caught.value.reason is ReasonCode.INSUFFICIENT_ENERGY
    assert caught.value.trade_id == "too-much"
    assert "Insufficient funds" in caught.value.chain_message
    assert all_balances(ledger) == before  # nothing moved, every lock released
    assert node.rpc_listlockunspent([]) == []
    assert not any(ledger.is_settled(t.trade_id) for t in trades)
    assert ledger.find_command("batch-bad") is None

    # Fixed, the same trades settle under a new command.
    trades[2] = SettlementTrade("too-much", "p1", "c2", 6_000, 1_000)
    assert ledger.settle_batch("batch-fixed", trades, "operator").settled == tuple(
        t.trade_id for t in trades
    )


def test_a_buyer_short_of_ecoin_is_named(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    fund(ledger, ecoin=1_500)
    trades = [
        SettlementTrade("a", "p1", "c1", 100, 1_000),
        SettlementTrade("b", "p2", "c2", 100, 1_000),
        SettlementTrade("c", "p2", "c1", 100, 400, fee_ecoin=101),  # c1: 1,501 > 1,500
    ]
    before = all_balances(ledger)

    with pytest.raises(LedgerError) as caught:
        ledger.settle_batch("batch-poor", trades, "operator")

    assert (caught.value.reason, caught.value.trade_id) == (ReasonCode.INSUFFICIENT_ECOIN, "c")
    assert all_balances(ledger) == before


def test_a_lone_trade_short_of_ecoin_releases_the_offer(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    fund(ledger, ecoin=500)
    before = all_balances(ledger)

    with pytest.raises(LedgerError) as caught:
        ledger.settle_batch(
            "s-poor", [SettlementTrade("t-poor", "p1", "c1", 1_000, 501)], "operator"
        )

    assert (caught.value.reason, caught.value.trade_id) == (ReasonCode.INSUFFICIENT_ECOIN, "t-poor")
    assert all_balances(ledger) == before  # the seller's locked offer is spendable again
    assert node.rpc_listlockunspent([]) == []


def test_a_failure_at_send_releases_every_lock(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    fund(ledger)
    # The fee account cannot receive: every lock succeeds, the transaction is refused.
    node.revoke_now(ledger.register_participant("operator"), "receive")
    trades = [
        SettlementTrade("f-1", "p1", "c1", 500, 100),
        SettlementTrade("f-2", "p2", "c2", 500, 100, fee_ecoin=5),
    ]
    before = all_balances(ledger)
    locks = node.calls.count("preparelockunspentfrom")

    with pytest.raises(LedgerError) as caught:
        ledger.settle_batch("s-fee", trades, "operator")

    assert node.calls.count("preparelockunspentfrom") == locks + 4
    assert (caught.value.reason, caught.value.trade_id) == (ReasonCode.PERMISSION_DENIED, "f-2")
    assert "receive permission" in caught.value.chain_message
    assert all_balances(ledger) == before
    assert node.rpc_listlockunspent([]) == []


def test_a_seller_without_send_permission_is_named(ledger: MultiChainBackend) -> None:
    fund(ledger)
    ledger.revoke("r-p2", "p2", frozenset({Permission.SEND}))

    with pytest.raises(LedgerError) as caught:
        ledger.settle_batch(
            "s-perm",
            [
                SettlementTrade("x-1", "p1", "c1", 10, 10),
                SettlementTrade("x-2", "p2", "c1", 10, 10),
            ],
            "operator",
        )

    assert (caught.value.reason, caught.value.trade_id) == (ReasonCode.PERMISSION_DENIED, "x-2")
    assert "seller p2 lacks send permission" in caught.value.chain_message


def test_unknown_participants_are_named(ledger: MultiChainBackend) -> None:
    fund(ledger)
    with pytest.raises(LedgerError) as caught:
        ledger.settle_batch(
            "s-unknown",
            [
                SettlementTrade("u-1", "p1", "c1", 10, 10),
                SettlementTrade("u-2", "p1", "ghost", 10, 10),
            ],
            "operator",
        )
    assert (caught.value.reason, caught.value.trade_id) == (ReasonCode.UNKNOWN_PARTICIPANT, "u-2")
    with pytest.raises(LedgerError) as empty:
        ledger.settle_batch("s-empty", [], "operator")
    assert empty.value.reason is ReasonCode.INVALID_COMMAND
    with pytest.raises(LedgerError) as twice:
        ledger.settle_batch(
            "s-twice",
            [SettlementTrade("d", "p1", "c1", 1, 1), SettlementTrade("d", "p2", "c1", 1, 1)],
            "operator",
        )
    assert (twice.value.reason, twice.value.trade_id) == (ReasonCode.INVALID_COMMAND, "d")


def test_replayed_settlements_change_nothing(
    ledger: MultiChainBackend, node: RecordedMultiChainNode, make_backend: BackendFactory
) -> None:
    fund(ledger)
    trades = [SettlementTrade(f"r-{i}", "p1", "c1", 100, 10) for i in range(5)]
    first = ledger.settle_batch("s-r", trades, "operator")
    balances = all_balances(ledger)
    sends = node.calls.count("sendrawtransaction")

    again = ledger.settle_batch("s-r", trades, "operator")
    after_restart = make_backend().settle_batch("s-r", trades, "operator")

    assert again == after_restart == first
    assert node.calls.count("sendrawtransaction") == sends
    assert all_balances(ledger) == balances

    # A new command repeating settled trades settles only the new one.
    mixed = ledger.settle_batch(
        "s-r2", [*trades[:2], SettlementTrade("r-new", "p2", "c2", 100, 10)], "operator"
    )
    assert mixed.settled == ("r-new",)
    assert mixed.already_settled == ("r-0", "r-1")

    # Nothing new at all: nothing moves, but the command is still recorded.
    balances = all_balances(ledger)
    repeat = ledger.settle_batch("s-r3", trades, "operator")
    assert (repeat.settled, repeat.already_settled) == ((), tuple(t.trade_id for t in trades))
    assert all_balances(ledger) == balances
    assert make_backend().find_command("s-r3") == repeat.receipt


# --- crashes and unknown outcomes --------------------------------------------------------


class Crash(BaseException):
    """The adapter process dying at a chosen point (BaseException: nothing catches it)."""


class CrashingRpc(MultiChainRpc):
    """The real wrapper, dying around one call as a killed process would."""

    def __init__(self, node: RecordedMultiChainNode, method: str, *, after: bool) -> None:
        super().__init__(node.connection())
        self.method = method
        self.after = after

    def call(self, method: str, *params: object) -> object:
        if method == self.method and not self.after:
            raise Crash(f"killed before {method}")
        answer = super().call(method, *params)
        if method == self.method:
            raise Crash(f"killed after {method}")
        return answer


@pytest.mark.parametrize(
    ("method", "after"),
    [("sendrawtransaction", True), ("sendrawtransaction", False), ("createrawtransaction", False)],
    ids=["after-submit", "before-submit", "while-locking"],
)
def test_a_crash_around_submit_ends_with_one_settlement(
    ledger: MultiChainBackend,
    node: RecordedMultiChainNode,
    make_backend: BackendFactory,
    method: str,
    after: bool,
) -> None:
    fund(ledger)
    trades = [SettlementTrade(f"k-{i}", "p1", "c1", 100, 10) for i in range(3)]
    dying = make_backend(CrashingRpc(node, method, after=after))
    with pytest.raises(Crash):
        dying.settle_batch("s-crash", trades, "operator")
    node.mine()
    landed = after and method == "sendrawtransaction"
    if not landed:
        assert node.rpc_listlockunspent([]), "the crash leaves its locks behind"

    restarted = make_backend()
    found = restarted.find_command("s-crash")
    outcome = restarted.settle_batch("s-crash", trades, "operator")

    assert (found is not None) == landed
    assert outcome.settled == tuple(t.trade_id for t in trades)
    assert restarted.balances("c1").energy_wh == 300  # once, not twice
    assert restarted.balances("p1").energy_wh == 100_000 - 300
    assert node.rpc_listlockunspent([]) == []
    # A signed settlement that never went out is sent again byte for byte, not rebuilt.
    sent = [
        tx
        for tx in node.txs.values()
        if any(o.item and o.item["key"] == "s-crash" for o in tx.outputs)
    ]
    assert len(sent) == 1


def test_a_crash_after_a_mint_is_reconciled_from_the_chain(
    ledger: MultiChainBackend, node: RecordedMultiChainNode, make_backend: BackendFactory
) -> None:
    dying = make_backend(CrashingRpc(node, "issuemorefrom", after=True))
    node.pause_mining()  # the issuance is still unconfirmed when the adapter comes back
    with pytest.raises(Crash):
        dying.mint_energy("m-crash", "p1", 7_000, EVIDENCE)

    restarted = make_backend()
    import threading

    threading.Timer(0.1, node.resume_mining).start()
    receipt = restarted.mint_energy("m-crash", "p1", 7_000, EVIDENCE)

    assert receipt.block > 0
    assert node.calls.count("issuemorefrom") == 1
    assert restarted.total_supply().energy_wh == 7_000


def test_an_unconfirmed_command_is_not_sent_again(
    ledger: MultiChainBackend, node: RecordedMultiChainNode, make_backend: BackendFactory
) -> None:
    impatient = make_backend(confirm_timeout_s=0.05)
    node.pause_mining()
    with pytest.raises(LedgerError) as caught:
        impatient.mint_ecoin("m-slow", "c1", 300)
    assert caught.value.reason is ReasonCode.CHAIN_UNAVAILABLE
    assert impatient.find_command("m-slow") is None  # not confirmed yet
    node.resume_mining()

    receipt = make_backend().mint_ecoin("m-slow", "c1", 300)

    assert receipt.block > 0
    assert node.calls.count("issuemorefrom") == 1
    assert ledger.balances("c1").ecoin == 300


def test_a_node_that_is_down_reports_chain_unavailable(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    node.stop()
    with pytest.raises(LedgerError) as caught:
        ledger.height()
    assert caught.value.reason is ReasonCode.CHAIN_UNAVAILABLE


# --- anchoring and queries ---------------------------------------------------------------


def test_anchor(ledger: MultiChainBackend, make_backend: BackendFactory) -> None:
    root = "AB" * 32

    receipt = ledger.anchor("a-1", "0x" + root, "meter batch 2024-06-01T10:00")
    again = ledger.anchor("a-1", root, "meter batch 2024-06-01T10:00")

    assert again == receipt
    assert ledger.anchored(root.lower()) == receipt
    assert make_backend().anchored("0x" + root) == receipt
    assert ledger.anchored("cd" * 32) is None
    assert make_backend().find_command("a-1") == receipt
    with pytest.raises(LedgerError) as caught:
        ledger.anchor("a-2", "not-a-root", "x")
    assert caught.value.reason is ReasonCode.INVALID_COMMAND


def test_records_from_addresses_the_adapter_does_not_hold_are_ignored(
    ledger: MultiChainBackend, node: RecordedMultiChainNode, make_backend: BackendFactory
) -> None:
    # Someone else on the chain publishes a fake "settled" record into the open stream.
    rpc = MultiChainRpc(node.connection())
    outsider = rpc.get_new_address()
    rpc.grant([outsider], "connect,send,receive")
    fake = '{"command":"s-fake","kind":"settle","skipped":[],"trades":["t-fake"],"v":1}'
    rpc.publish_from(outsider, StreamPublish("prosum-commands", "s-fake", fake.encode().hex()))
    node.mine()

    assert not make_backend().is_settled("t-fake")
    assert ledger.find_command("s-fake") is None


def test_queries(ledger: MultiChainBackend, node: RecordedMultiChainNode) -> None:
    assert ledger.height() == node.height
    assert ledger.balances("nobody") == Balances(energy_wh=0, ecoin=0)
    assert ledger.balances_many(["nobody", "c1"]) == {
        "nobody": Balances(energy_wh=0, ecoin=0),
        "c1": Balances(energy_wh=0, ecoin=0),
    }
    assert ledger.balances_many([]) == {}
    assert ledger.find_command("never-sent") is None
    assert not ledger.is_settled("never-traded")


# --- conservation ------------------------------------------------------------------------


def test_supply_is_mints_minus_burns_and_equals_the_sum_of_balances(
    ledger: MultiChainBackend,
) -> None:
    minted_energy = minted_ecoin = burned = 0
    for i, (producer, consumer) in enumerate([("p1", "c1"), ("p2", "c2"), ("p1", "c2")]):
        ledger.mint_energy(f"me-{i}", producer, 3_333 * (i + 1), EVIDENCE)
        ledger.mint_ecoin(f"mc-{i}", consumer, 10_007 * (i + 1))
        minted_energy += 3_333 * (i + 1)
        minted_ecoin += 10_007 * (i + 1)
    ledger.settle_batch(
        "cs-1",
        [
            SettlementTrade("cs-a", "p1", "c1", 1_234, 567, fee_ecoin=3),
            SettlementTrade("cs-b", "p2", "c2", 2_345, 678, fee_ecoin=4),
            SettlementTrade("cs-c", "p1", "c2", 1, 1),
        ],
        "operator",
    )
    ledger.settle_batch("cs-2", [SettlementTrade("cs-d", "p2", "c1", 999, 1_000)], "operator")
    with pytest.raises(LedgerError):
        ledger.settle_batch("cs-3", [SettlementTrade("cs-e", "p1", "c1", 10**9, 1)], "operator")
    ledger.burn_ecoin("cb-1", "c2", 5_000)
    ledger.burn_ecoin("cb-2", "operator", 7)
    burned += 5_007
    ledger.mint_ecoin("mc-0", "c1", 10_007)  # a replay: no new ecoin

    supply = ledger.total_supply()

    assert supply == Balances(energy_wh=minted_energy, ecoin=minted_ecoin - burned)
    assert total_of(all_balances(ledger)) == supply


def test_quantities_are_exact_in_both_versions(
    ledger: MultiChainBackend, node: RecordedMultiChainNode
) -> None:
    # 2**53 + 1 Wh would be rounded by a double in raw units; as 9007199254740.993 kWh it has
    # 16 digits and is refused by the wire encoder rather than rounded.
    amounts = [1, 999, 1_000, 123_456_789, 999_999_999_999]
    for i, amount in enumerate(amounts):
        ledger.mint_energy(f"q-{i}", "p1", amount, EVIDENCE)

    assert ledger.balances("p1").energy_wh == sum(amounts)
    with pytest.raises(LedgerError) as caught:
        ledger.mint_energy("q-big", "p1", 2**53 + 1, EVIDENCE)
    assert ledger.balances("p1").energy_wh == sum(amounts)
    assert caught.value.reason is ReasonCode.INVALID_COMMAND
    assert Decimal(ledger.balances("p1").energy_wh).scaleb(-3) == Decimal("1000123458.788")
