"""The ProsumLedger contract on an in-process EVM (eth-tester with py-evm).

eth-tester mines one transaction per block, keeps nothing across runs and raises
``TransactionFailed`` (with the revert data as a bytes literal in its message) where a node
would return an error, so reverts are read from ``.call()`` and state after a failed
transaction is checked by sending it with explicit gas, which mines it with status 0.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from typing import Any

import pytest
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract

from prosum_ledger.adapters.evm.abi import DecodedError, DecodedLog, LedgerAbi, load_artifact

CONNECT, SEND, RECEIVE, ISSUE_ENERGY = 1, 2, 4, 8
PARTICIPANT = CONNECT | SEND | RECEIVE
PRODUCER = PARTICIPANT | ISSUE_ENERGY
ENERGY, ECOIN = 0, 1
EVIDENCE = keccak(text="meter batch 1")


def cid(name: str) -> bytes:
    return keccak(text=f"command:{name}")


def tid(name: str) -> bytes:
    return keccak(text=f"trade:{name}")


def address(n: int) -> str:
    return Web3.to_checksum_address(f"0x{n:040x}")


@dataclass
class Ledger:
    w3: Web3
    contract: Contract
    operator: str
    outsider: str
    abi: LedgerAbi

    def send(self, call: Any, *, sender: str | None = None) -> Any:
        tx = call.transact({"from": sender or self.operator, "gas": 25_000_000})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt.status == 1
        return receipt

    def send_failing(self, call: Any) -> Any:
        """Mine a transaction that reverts, so tests can check it changed nothing."""
        tx = call.transact({"from": self.operator, "gas": 25_000_000})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt.status == 0
        return receipt

    def revert(self, call: Any, *, sender: str | None = None) -> DecodedError:
        with pytest.raises(TransactionFailed) as failure:
            call.call({"from": sender or self.operator})
        message = str(failure.value.args[0])
        literal = message.split("execution reverted: ", 1)[1]
        data = ast.literal_eval(literal)
        decoded = self.abi.decode_error(data)
        assert decoded is not None, message
        return decoded

    def events(self, receipt: Any, name: str | None = None) -> list[DecodedLog]:
        decoded = [self.abi.decode_log(entry) for entry in receipt.logs]
        return [e for e in decoded if e is not None and (name is None or e.event == name)]

    def balance(self, account: str) -> tuple[int, int]:
        energy, ecoin = self.contract.functions.balanceOf(account).call()
        return energy, ecoin

    def supply(self) -> tuple[int, int]:
        energy, ecoin = self.contract.functions.totalSupply().call()
        return energy, ecoin

    def fund(self, account: str, *, energy: int = 0, ecoin: int = 0, flags: int = PRODUCER) -> None:
        f = self.contract.functions
        self.send(f.grant(cid(f"grant-{account}-{flags}"), account, flags))
        if energy:
            self.send(f.mintEnergy(cid(f"energy-{account}-{energy}"), account, energy, EVIDENCE))
        if ecoin:
            self.send(f.mintEcoin(cid(f"ecoin-{account}-{ecoin}"), account, ecoin))


@pytest.fixture(scope="module")
def chain() -> Web3:
    return Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))


@pytest.fixture
def ledger(chain: Web3) -> Ledger:
    """A fresh deployment per test on the module's chain: tests share no contract state."""
    artifact = load_artifact()
    operator, outsider = chain.eth.accounts[0], chain.eth.accounts[1]
    factory = chain.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = chain.eth.wait_for_transaction_receipt(
        factory.constructor().transact({"from": operator})
    )
    contract = chain.eth.contract(address=receipt.contractAddress, abi=artifact.abi)
    return Ledger(chain, contract, operator, outsider, LedgerAbi(artifact.abi))


SELLER, BUYER, OTHER, FEES = address(0xA1), address(0xB1), address(0xC1), address(0xFEE)


def trade(name: str, seller: str, buyer: str, wh: int, ecoin: int, fee: int = 0) -> tuple[Any, ...]:
    return (tid(name), seller, buyer, wh, ecoin, fee)


# --- roles and permissions ---------------------------------------------------------------


def test_deployment_defines_both_assets_and_makes_the_deployer_operator(ledger: Ledger) -> None:
    f = ledger.contract.functions
    assert f.isOperator(ledger.operator).call()
    assert not f.isOperator(ledger.outsider).call()
    assert ledger.supply() == (0, 0)
    logs = ledger.w3.eth.get_logs({"address": ledger.contract.address, "fromBlock": 0})
    assets = [e.args for e in map(ledger.abi.decode_log, logs) if e and e.event == "AssetDefined"]
    assert assets == [
        {"asset": ENERGY, "name": "energy", "decimals": 3},
        {"asset": ECOIN, "name": "ecoin", "decimals": 0},
    ]


def test_only_operators_send_commands_and_operators_can_add_operators(ledger: Ledger) -> None:
    f = ledger.contract.functions
    error = ledger.revert(f.grant(cid("g"), SELLER, PARTICIPANT), sender=ledger.outsider)
    assert error.name == "NotOperator"
    assert error.args["caller"] == ledger.outsider

    ledger.send(f.addOperator(ledger.outsider))
    ledger.send(f.grant(cid("g"), SELLER, PARTICIPANT), sender=ledger.outsider)
    assert f.permissionsOf(SELLER).call() == [True, PARTICIPANT]


def test_grant_and_revoke_change_flags_and_say_so_with_the_command_id(ledger: Ledger) -> None:
    f = ledger.contract.functions
    assert f.permissionsOf(SELLER).call() == [False, 0]

    granted = ledger.events(ledger.send(f.grant(cid("g1"), SELLER, PRODUCER)), "Granted")
    assert granted[0].args == {
        "commandId": cid("g1"),
        "account": SELLER,
        "added": PRODUCER,
        "permissions": PRODUCER,
    }
    revoked = ledger.events(ledger.send(f.revoke(cid("r1"), SELLER, ISSUE_ENERGY)), "Revoked")
    assert revoked[0].args["permissions"] == PARTICIPANT
    # Revoking everything keeps the account known: it is not an unknown participant.
    ledger.send(f.revoke(cid("r2"), SELLER, PRODUCER))
    assert f.permissionsOf(SELLER).call() == [True, 0]


def test_revoke_of_an_unknown_account_and_undefined_flags_are_refused(ledger: Ledger) -> None:
    f = ledger.contract.functions
    error = ledger.revert(f.revoke(cid("r"), OTHER, SEND))
    assert error.name == "UnknownParticipant"
    assert error.args == {"ref": cid("r"), "account": OTHER}
    assert ledger.revert(f.grant(cid("g"), OTHER, 16)).name == "InvalidCommand"
    assert ledger.revert(f.grant(bytes(32), OTHER, SEND)).name == "InvalidCommand"


# --- mint and burn -------------------------------------------------------------------------


def test_mint_energy_needs_receive_and_issue_rights(ledger: Ledger) -> None:
    f = ledger.contract.functions
    unknown = ledger.revert(f.mintEnergy(cid("m0"), OTHER, 10, EVIDENCE))
    assert unknown.name == "UnknownParticipant"

    ledger.send(f.grant(cid("g-consumer"), BUYER, PARTICIPANT))
    denied = ledger.revert(f.mintEnergy(cid("m1"), BUYER, 10, EVIDENCE))
    assert denied.name == "PermissionDenied"
    assert denied.args == {"ref": cid("m1"), "account": BUYER, "permission": ISSUE_ENERGY}

    ledger.send(f.grant(cid("g-issue-only"), OTHER, ISSUE_ENERGY))
    no_receive = ledger.revert(f.mintEnergy(cid("m2"), OTHER, 10, EVIDENCE))
    assert no_receive.args["permission"] == RECEIVE

    ledger.send(f.grant(cid("g-producer"), SELLER, PRODUCER))
    assert ledger.revert(f.mintEnergy(cid("m3"), SELLER, 0, EVIDENCE)).name == "InvalidAmount"
    minted = ledger.events(ledger.send(f.mintEnergy(cid("m4"), SELLER, 2500, EVIDENCE)), "Minted")
    assert minted[0].args == {
        "commandId": cid("m4"),
        "asset": ENERGY,
        "to": SELLER,
        "amount": 2500,
        "evidenceHash": EVIDENCE,
    }
    assert ledger.balance(SELLER) == (2500, 0)
    assert ledger.supply() == (2500, 0)


def test_mint_and_burn_ecoin_track_supply_and_refuse_overdrafts(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(BUYER, ecoin=1_000, flags=PARTICIPANT)
    over = ledger.revert(f.burnEcoin(cid("b0"), BUYER, 1_001))
    assert over.name == "InsufficientEcoin"
    assert over.args == {"ref": cid("b0"), "account": BUYER, "available": 1_000, "needed": 1_001}

    burned = ledger.events(ledger.send(f.burnEcoin(cid("b1"), BUYER, 400)), "Burned")
    assert burned[0].args == {"commandId": cid("b1"), "asset": ECOIN, "from": BUYER, "amount": 400}
    assert ledger.balance(BUYER) == (0, 600)
    assert ledger.supply() == (0, 600)


def test_a_participant_whose_rights_were_revoked_can_still_be_paid_out(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(BUYER, ecoin=50, flags=PARTICIPANT)
    ledger.send(f.revoke(cid("r"), BUYER, PARTICIPANT))
    ledger.send(f.burnEcoin(cid("b"), BUYER, 50))
    assert ledger.balance(BUYER) == (0, 0)


def test_amounts_beyond_the_storage_width_are_refused(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER)
    big = ledger.revert(f.mintEcoin(cid("m"), SELLER, 2**120))
    assert big.name == "AmountOverflow"
    assert ledger.revert(f.mintEnergy(cid("e"), SELLER, 2**128, EVIDENCE)).name == "AmountOverflow"


# --- settlement --------------------------------------------------------------------------


def test_settle_batch_swaps_energy_for_ecoin_and_pays_fees(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=10_000)
    ledger.fund(BUYER, ecoin=5_000, flags=PARTICIPANT)
    ledger.fund(FEES, flags=RECEIVE)
    trades = [trade("t1", SELLER, BUYER, 1_500, 300, 3), trade("t2", SELLER, BUYER, 500, 100, 1)]

    receipt = ledger.send(f.settleBatch(cid("s1"), trades, FEES))

    assert ledger.balance(SELLER) == (8_000, 400)
    assert ledger.balance(BUYER) == (2_000, 5_000 - 404)
    assert ledger.balance(FEES) == (0, 4)
    assert ledger.supply() == (10_000, 5_000)
    settled = ledger.events(receipt, "Settled")
    assert [e.args["tradeId"] for e in settled] == [tid("t1"), tid("t2")]
    assert settled[0].args == {
        "commandId": cid("s1"),
        "tradeId": tid("t1"),
        "seller": SELLER,
        "buyer": BUYER,
        "energyWh": 1_500,
        "ecoin": 300,
        "feeEcoin": 3,
    }
    (batch,) = ledger.events(receipt, "BatchSettled")
    assert batch.args == {
        "commandId": cid("s1"),
        "settled": 2,
        "skipped": 0,
        "feeAccount": FEES,
        "feeEcoin": 4,
    }
    assert f.settledIn(tid("t1")).call() == receipt.blockNumber


def test_trades_settled_before_are_skipped_not_settled_twice(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=10_000)
    ledger.fund(BUYER, ecoin=5_000, flags=PARTICIPANT)
    first = ledger.send(f.settleBatch(cid("s1"), [trade("t1", SELLER, BUYER, 1_000, 100)], FEES))

    again = [
        trade("t1", SELLER, BUYER, 1_000, 100),
        trade("t2", SELLER, BUYER, 1_000, 100),
        trade("t2", SELLER, BUYER, 1_000, 100),  # twice in one batch: the second is skipped
    ]
    receipt = ledger.send(f.settleBatch(cid("s2"), again, FEES))

    skipped = ledger.events(receipt, "TradeAlreadySettled")
    assert [(e.args["tradeId"], e.args["settledInBlock"]) for e in skipped] == [
        (tid("t1"), first.blockNumber),
        (tid("t2"), receipt.blockNumber),
    ]
    assert [e.args["tradeId"] for e in ledger.events(receipt, "Settled")] == [tid("t2")]
    assert ledger.events(receipt, "BatchSettled")[0].args["skipped"] == 2
    assert ledger.balance(SELLER) == (8_000, 200)
    assert ledger.balance(BUYER) == (2_000, 4_800)


def test_a_batch_with_one_unaffordable_trade_settles_none_and_names_it(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=3_000)
    ledger.fund(BUYER, ecoin=5_000, flags=PARTICIPANT)
    trades = [
        trade("ok-1", SELLER, BUYER, 1_000, 100),
        trade("too-much", SELLER, BUYER, 2_500, 100),  # only 2_000 left after ok-1
        trade("ok-2", SELLER, BUYER, 500, 100),
    ]
    error = ledger.revert(f.settleBatch(cid("s"), trades, FEES))
    assert error.name == "InsufficientEnergy"
    assert error.args == {
        "tradeId": tid("too-much"),
        "seller": SELLER,
        "available": 2_000,
        "needed": 2_500,
    }

    ledger.send_failing(f.settleBatch(cid("s"), trades, FEES))
    assert ledger.balance(SELLER) == (3_000, 0)
    assert ledger.balance(BUYER) == (0, 5_000)
    assert f.settledIn(tid("ok-1")).call() == 0
    # The reverted command left no trace, so the same command id may run once fixed.
    assert f.commandBlock(cid("s")).call() == 0


def test_the_buyer_must_afford_price_and_fee(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=3_000)
    ledger.fund(BUYER, ecoin=100, flags=PARTICIPANT)
    ledger.fund(FEES, flags=RECEIVE)
    error = ledger.revert(f.settleBatch(cid("s"), [trade("t", SELLER, BUYER, 10, 100, 1)], FEES))
    assert error.name == "InsufficientEcoin"
    assert error.args == {"ref": tid("t"), "account": BUYER, "available": 100, "needed": 101}


@pytest.mark.parametrize(
    ("seller_flags", "buyer_flags", "fee_flags", "blamed", "permission"),
    [
        (RECEIVE, PARTICIPANT, RECEIVE, "seller", SEND),
        (SEND, PARTICIPANT, RECEIVE, "seller", RECEIVE),  # paid, so it must receive ecoin
        (PARTICIPANT, SEND, RECEIVE, "buyer", RECEIVE),
        (PARTICIPANT, RECEIVE, RECEIVE, "buyer", SEND),  # pays, so it must send ecoin
        (PARTICIPANT, PARTICIPANT, SEND, "fees", RECEIVE),
    ],
)
def test_settlement_checks_each_partys_permissions(
    ledger: Ledger,
    seller_flags: int,
    buyer_flags: int,
    fee_flags: int,
    blamed: str,
    permission: int,
) -> None:
    f = ledger.contract.functions
    # Fund with every right, then take away what the case leaves out.
    ledger.fund(SELLER, energy=1_000)
    ledger.fund(BUYER, ecoin=1_000)
    ledger.fund(FEES)
    for who, keep in ((SELLER, seller_flags), (BUYER, buyer_flags), (FEES, fee_flags)):
        ledger.send(f.revoke(cid(f"narrow-{who}"), who, PRODUCER & ~keep))

    error = ledger.revert(f.settleBatch(cid("s"), [trade("t", SELLER, BUYER, 10, 10, 1)], FEES))

    account = {"seller": SELLER, "buyer": BUYER, "fees": FEES}[blamed]
    ref = cid("s") if blamed == "fees" else tid("t")
    assert error.name == "PermissionDenied"
    assert error.args == {"ref": ref, "account": account, "permission": permission}


def test_a_trade_with_an_unknown_party_names_it(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=1_000)
    error = ledger.revert(f.settleBatch(cid("s"), [trade("t", SELLER, OTHER, 10, 0)], FEES))
    assert error.name == "UnknownParticipant"
    assert error.args == {"ref": tid("t"), "account": OTHER}


def test_malformed_trades_are_refused(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=1_000)
    self_trade = ledger.revert(f.settleBatch(cid("s"), [trade("t", SELLER, SELLER, 10, 0)], FEES))
    assert self_trade.name == "InvalidTrade"
    zero = ledger.revert(f.settleBatch(cid("s"), [trade("t", SELLER, BUYER, 0, 0)], FEES))
    assert zero.name == "InvalidTrade"


def test_gas_per_trade_stays_low(ledger: Ledger) -> None:
    f = ledger.contract.functions
    sellers = [address(0x1000 + i) for i in range(20)]
    buyers = [address(0x2000 + i) for i in range(20)]
    for s in sellers:
        ledger.fund(s, energy=1_000_000)
    for b in buyers:
        ledger.fund(b, ecoin=1_000_000, flags=PARTICIPANT)
    ledger.fund(FEES, flags=RECEIVE)
    trades = [
        trade(f"t{i}", sellers[i % 20], buyers[i * 7 % 20], 1_234, 321, 2) for i in range(200)
    ]

    receipt = ledger.send(f.settleBatch(cid("s"), trades, FEES))

    per_trade = receipt.gasUsed / len(trades)
    # ~22k of it is the settled-trade record, which idempotency by trade id cannot avoid.
    assert per_trade < 36_000, per_trade


# --- anchoring and replay ------------------------------------------------------------------


def test_anchor_records_the_block_and_keeps_the_first(ledger: Ledger) -> None:
    f = ledger.contract.functions
    root = keccak(text="merkle root")
    first = ledger.send(f.anchor(cid("a1"), root, "readings/2024-06-01T10:00"))
    (event,) = ledger.events(first, "Anchored")
    assert event.args == {
        "commandId": cid("a1"),
        "root": root,
        "anchoredInBlock": first.blockNumber,
        "dataRef": "readings/2024-06-01T10:00",
    }
    again = ledger.send(f.anchor(cid("a2"), root, "same batch, re-sent"))
    assert ledger.events(again, "Anchored")[0].args["anchoredInBlock"] == first.blockNumber
    assert f.anchoredIn(root).call() == first.blockNumber
    assert f.anchoredIn(keccak(text="other")).call() == 0
    assert ledger.revert(f.anchor(cid("a3"), bytes(32), "zero")).name == "InvalidCommand"


@pytest.mark.parametrize(
    "command",
    ["grant", "revoke", "mintEnergy", "mintEcoin", "burnEcoin", "settleBatch", "anchor"],
)
def test_a_replayed_command_changes_nothing_and_names_its_first_block(
    ledger: Ledger, command: str
) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=10_000)
    ledger.fund(BUYER, ecoin=10_000, flags=PARTICIPANT)
    calls = {
        "grant": lambda: f.grant(cid("x"), OTHER, PARTICIPANT),
        "revoke": lambda: f.revoke(cid("x"), BUYER, SEND),
        "mintEnergy": lambda: f.mintEnergy(cid("x"), SELLER, 7, EVIDENCE),
        "mintEcoin": lambda: f.mintEcoin(cid("x"), BUYER, 7),
        "burnEcoin": lambda: f.burnEcoin(cid("x"), BUYER, 7),
        "settleBatch": lambda: f.settleBatch(cid("x"), [trade("t", SELLER, BUYER, 7, 7)], FEES),
        "anchor": lambda: f.anchor(cid("x"), keccak(text="root"), "r"),
    }
    first = ledger.send(calls[command]())
    state = (ledger.balance(SELLER), ledger.balance(BUYER), ledger.supply())
    flags = f.permissionsOf(BUYER).call(), f.permissionsOf(OTHER).call()

    replay = ledger.send(calls[command]())

    events = ledger.events(replay)
    assert [e.event for e in events] == ["CommandReplayed"]
    assert events[0].args == {"commandId": cid("x"), "executedInBlock": first.blockNumber}
    assert (ledger.balance(SELLER), ledger.balance(BUYER), ledger.supply()) == state
    assert (f.permissionsOf(BUYER).call(), f.permissionsOf(OTHER).call()) == flags
    assert f.commandBlock(cid("x")).call() == first.blockNumber


def test_a_replay_with_a_different_payload_is_still_a_no_op(ledger: Ledger) -> None:
    f = ledger.contract.functions
    ledger.fund(SELLER, energy=10_000)
    ledger.fund(BUYER, ecoin=10_000, flags=PARTICIPANT)
    ledger.send(f.settleBatch(cid("s"), [trade("t1", SELLER, BUYER, 5, 5)], FEES))
    ledger.send(f.settleBatch(cid("s"), [trade("t2", SELLER, BUYER, 5, 5)], FEES))
    assert f.settledIn(tid("t2")).call() == 0
    assert ledger.balance(BUYER) == (5, 9_995)


# --- conservation ------------------------------------------------------------------------


def test_supply_is_mints_minus_burns_and_balances_are_what_the_events_say(ledger: Ledger) -> None:
    """A seeded random walk of mints, burns and batches, some of which fail."""
    f = ledger.contract.functions
    rng = random.Random(20240601)
    producers = [address(0x3000 + i) for i in range(4)]
    consumers = [address(0x4000 + i) for i in range(4)]
    for p in producers:
        ledger.fund(p, flags=PRODUCER)
    for c in consumers:
        ledger.fund(c, flags=PARTICIPANT)
    ledger.fund(FEES, flags=RECEIVE)
    minted = {ENERGY: 0, ECOIN: 0}
    burned = 0
    receipts = []
    for step in range(60):
        kind = rng.choice(["energy", "ecoin", "burn", "settle", "settle"])
        if kind == "energy":
            amount = rng.randint(1, 5_000)
            receipts.append(
                ledger.send(f.mintEnergy(cid(f"{step}"), rng.choice(producers), amount, EVIDENCE))
            )
            minted[ENERGY] += amount
        elif kind == "ecoin":
            amount = rng.randint(1, 5_000)
            receipts.append(ledger.send(f.mintEcoin(cid(f"{step}"), rng.choice(consumers), amount)))
            minted[ECOIN] += amount
        elif kind == "burn":
            who = rng.choice(consumers)
            amount = rng.randint(1, 1_000)
            call = f.burnEcoin(cid(f"{step}"), who, amount)
            if ledger.balance(who)[1] >= amount:
                receipts.append(ledger.send(call))
                burned += amount
            else:
                assert ledger.revert(call).name == "InsufficientEcoin"
        else:
            trades = [
                trade(
                    f"{step}-{k}",
                    rng.choice(producers),
                    rng.choice(consumers),
                    rng.randint(1, 800),
                    rng.randint(0, 300),
                    rng.randint(0, 3),
                )
                for k in range(rng.randint(1, 6))
            ]
            call = f.settleBatch(cid(f"{step}"), trades, FEES)
            try:
                call.call({"from": ledger.operator})
            except TransactionFailed:
                assert ledger.revert(call).name in {"InsufficientEnergy", "InsufficientEcoin"}
            else:
                receipts.append(ledger.send(call))

    assert ledger.supply() == (minted[ENERGY], minted[ECOIN] - burned)
    derived: dict[str, list[int]] = {}

    def account(a: str) -> list[int]:
        return derived.setdefault(a, [0, 0])

    for receipt in receipts:
        for e in ledger.events(receipt):
            a = e.args
            if e.event == "Minted":
                account(a["to"])[a["asset"]] += a["amount"]
            elif e.event == "Burned":
                account(a["from"])[a["asset"]] -= a["amount"]
            elif e.event == "Settled":
                account(a["seller"])[ENERGY] -= a["energyWh"]
                account(a["seller"])[ECOIN] += a["ecoin"]
                account(a["buyer"])[ENERGY] += a["energyWh"]
                account(a["buyer"])[ECOIN] -= a["ecoin"] + a["feeEcoin"]
            elif e.event == "BatchSettled":
                account(a["feeAccount"])[ECOIN] += a["feeEcoin"]
    for who in [*producers, *consumers, FEES]:
        assert list(ledger.balance(who)) == account(who), who
        assert min(ledger.balance(who)) >= 0
    assert sum(v[ENERGY] for v in derived.values()) == minted[ENERGY]
    assert sum(v[ECOIN] for v in derived.values()) == minted[ECOIN] - burned
