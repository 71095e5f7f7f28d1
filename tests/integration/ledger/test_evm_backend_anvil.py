"""The EVM backend against a real anvil node.

One anvil per test session (anvil slows as its chain grows, so the chain is always fresh); each
test deploys its own ledger contract and key store on it, so tests share no ledger state. The
restart tests start their own anvil, since they stop it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from prosum_ledger.adapters.evm import (
    AnvilNode,
    EvmBackend,
    EvmConfig,
    KeyStore,
    KeyStoreError,
    generate_encryption_key,
    start_anvil,
)
from prosum_ledger.adapters.evm.anvil import free_port
from prosum_ledger.domain.model import (
    PARTICIPANT_PERMISSIONS,
    PRODUCER_PERMISSIONS,
    Balances,
    LedgerError,
    Permission,
    ReasonCode,
    SettlementTrade,
)
from tests.support.evm import anvil_or_skip, make_config

ROOT_HASH = "9f" * 32


@pytest.fixture
def config(anvil: AnvilNode, tmp_path: Path) -> EvmConfig:
    return make_config(anvil, tmp_path)


@pytest.fixture
def backend(config: EvmConfig) -> EvmBackend:
    ledger = EvmBackend(config)
    assert ledger.setup_assets() is not None
    return ledger


def onboard(
    ledger: EvmBackend, producers: int = 3, consumers: int = 3
) -> tuple[list[str], list[str]]:
    sellers = [f"producer-{i}" for i in range(producers)]
    buyers = [f"consumer-{i}" for i in range(consumers)]
    for pid in sellers:
        ledger.grant(f"grant:{pid}", pid, PRODUCER_PERMISSIONS)
        ledger.mint_energy(f"mint:{pid}", pid, 100_000, f"meter-batch-{pid}")
    for pid in buyers:
        ledger.grant(f"grant:{pid}", pid, PARTICIPANT_PERMISSIONS)
        ledger.mint_ecoin(f"topup:{pid}", pid, 1_000_000)
    ledger.grant("grant:ops", "ops", frozenset({Permission.RECEIVE}))
    return sellers, buyers


def event_balances(ledger: EvmBackend) -> dict[str, Balances]:
    """Balances rebuilt from the chain's events alone."""
    energy: Counter[str] = Counter()
    ecoin: Counter[str] = Counter()
    for event in ledger.ledger_events():
        a = event.args
        if event.event == "Minted":
            (energy if a["asset"] == 0 else ecoin)[a["to"]] += a["amount"]
        elif event.event == "Burned":
            ecoin[a["from"]] -= a["amount"]
        elif event.event == "Settled":
            energy[a["seller"]] -= a["energyWh"]
            energy[a["buyer"]] += a["energyWh"]
            ecoin[a["seller"]] += a["ecoin"]
            ecoin[a["buyer"]] -= a["ecoin"] + a["feeEcoin"]
        elif event.event == "BatchSettled":
            ecoin[a["feeAccount"]] += a["feeEcoin"]
    result = {}
    for address in set(energy) | set(ecoin):
        pid = ledger.participant_of(address)
        assert pid is not None, address
        result[pid] = Balances(energy_wh=energy[address], ecoin=ecoin[address])
    return result


# --- a realistic day -------------------------------------------------------------------------


def test_a_realistic_sequence_settles_and_conserves(backend: EvmBackend) -> None:
    sellers, buyers = onboard(backend)
    assert backend.setup_assets() is None  # already there
    assert backend.permissions("producer-0") == PRODUCER_PERMISSIONS
    assert backend.permissions("consumer-0") == PARTICIPANT_PERMISSIONS
    assert backend.permissions("never-seen") == frozenset()

    trades = [
        SettlementTrade(
            trade_id=f"trade-{i}",
            seller=sellers[i % 3],
            buyer=buyers[(i * 2) % 3],
            energy_wh=250 + i,
            ecoin=40 + i % 7,
            fee_ecoin=1,
        )
        for i in range(100)
    ]
    result = backend.settle_batch("settle:interval-42", trades, "ops")

    assert result.settled == tuple(t.trade_id for t in trades)
    assert result.already_settled == ()
    assert all(backend.is_settled(t.trade_id) for t in trades)
    expected: dict[str, list[int]] = {pid: [100_000, 0] for pid in sellers}
    expected |= {pid: [0, 1_000_000] for pid in buyers}
    expected["ops"] = [0, 0]
    for t in trades:
        expected[t.seller][0] -= t.energy_wh
        expected[t.seller][1] += t.ecoin
        expected[t.buyer][0] += t.energy_wh
        expected[t.buyer][1] -= t.ecoin + t.fee_ecoin
        expected["ops"][1] += t.fee_ecoin
    for pid, (energy, ecoin) in expected.items():
        assert backend.balances(pid) == Balances(energy_wh=energy, ecoin=ecoin), pid

    backend.burn_ecoin("payout:producer-0", "producer-0", 100)
    assert backend.total_supply() == Balances(energy_wh=300_000, ecoin=3_000_000 - 100)
    assert event_balances(backend) == {
        pid: backend.balances(pid) for pid in [*sellers, *buyers, "ops"]
    }

    anchored = backend.anchor("anchor:batch-7", ROOT_HASH, "readings/batch-7")
    assert backend.anchored(ROOT_HASH) == anchored
    assert backend.anchored("0x" + "00" * 31 + "01") is None

    found = backend.find_command("settle:interval-42")
    assert found == result.receipt
    assert found.fee > 0
    assert backend.find_command("grant:ops") is not None
    assert backend.find_command("never-sent") is None
    assert backend.height() >= result.receipt.block


def test_a_batch_with_one_unaffordable_trade_settles_none_and_names_it(
    backend: EvmBackend,
) -> None:
    sellers, buyers = onboard(backend)
    before = {pid: backend.balances(pid) for pid in [*sellers, *buyers]}
    trades = [
        SettlementTrade("ok-1", sellers[0], buyers[0], 1_000, 10),
        SettlementTrade("ok-2", sellers[1], buyers[1], 1_000, 10),
        SettlementTrade("too-much", sellers[2], buyers[2], 100_001, 10),
        SettlementTrade("ok-3", sellers[0], buyers[1], 1_000, 10),
    ]

    with pytest.raises(LedgerError) as failure:
        backend.settle_batch("settle:bad", trades, "ops")

    error = failure.value
    assert error.reason == ReasonCode.INSUFFICIENT_ENERGY
    assert error.trade_id == "too-much"
    assert "InsufficientEnergy" in error.chain_message
    assert "available=100000" in error.chain_message
    assert "producer-2" in error.chain_message
    assert {pid: backend.balances(pid) for pid in before} == before
    assert not any(backend.is_settled(t.trade_id) for t in trades)
    assert backend.find_command("settle:bad") is None

    # Nothing was recorded, so the same command settles once the seller has the energy.
    backend.mint_energy("mint:top-up", sellers[2], 1, "late reading")
    assert len(backend.settle_batch("settle:bad", trades, "ops").settled) == 4


def test_failures_map_to_stable_reasons(backend: EvmBackend) -> None:
    sellers, buyers = onboard(backend, producers=1, consumers=1)
    seller, buyer = sellers[0], buyers[0]

    def reason_of(action: object) -> LedgerError:
        with pytest.raises(LedgerError) as failure:
            action()  # type: ignore[operator]
        return failure.value

    poor = reason_of(
        lambda: backend.settle_batch(
            "s1", [SettlementTrade("t1", seller, buyer, 10, 2_000_000)], "ops"
        )
    )
    assert (poor.reason, poor.trade_id) == (ReasonCode.INSUFFICIENT_ECOIN, "t1")

    denied = reason_of(lambda: backend.mint_energy("m1", buyer, 10, ROOT_HASH))
    assert denied.reason == ReasonCode.PERMISSION_DENIED
    assert "energy.issue" in denied.chain_message

    backend.register_participant("registered-only")
    unknown = reason_of(
        lambda: backend.settle_batch(
            "s2", [SettlementTrade("t2", seller, "registered-only", 10, 1)], "ops"
        )
    )
    assert (unknown.reason, unknown.trade_id) == (ReasonCode.UNKNOWN_PARTICIPANT, "t2")

    no_address = reason_of(
        lambda: backend.settle_batch("s3", [SettlementTrade("t3", seller, "nobody", 10, 1)], "ops")
    )
    assert (no_address.reason, no_address.trade_id) == (ReasonCode.UNKNOWN_PARTICIPANT, "t3")

    backend.revoke("r1", seller, frozenset({Permission.SEND}))
    assert backend.permissions(seller) == PRODUCER_PERMISSIONS - {Permission.SEND}
    cannot_send = reason_of(
        lambda: backend.settle_batch("s4", [SettlementTrade("t4", seller, buyer, 10, 1)], "ops")
    )
    assert (cannot_send.reason, cannot_send.trade_id) == (ReasonCode.PERMISSION_DENIED, "t4")

    overdraft = reason_of(lambda: backend.burn_ecoin("b1", buyer, 10**9))
    assert overdraft.reason == ReasonCode.INSUFFICIENT_ECOIN
    assert (
        reason_of(lambda: backend.mint_ecoin("m2", buyer, 0)).reason == ReasonCode.INVALID_COMMAND
    )
    assert (
        reason_of(lambda: backend.anchor("a1", "not-hex", "x")).reason == ReasonCode.INVALID_COMMAND
    )
    assert (
        reason_of(lambda: backend.settle_batch("s5", [], "ops")).reason
        == ReasonCode.INVALID_COMMAND
    )


def test_a_replayed_settle_command_changes_nothing(backend: EvmBackend, config: EvmConfig) -> None:
    sellers, buyers = onboard(backend, producers=2, consumers=2)
    trades = [
        SettlementTrade(f"t{i}", sellers[i % 2], buyers[i % 2], 100, 10, 1) for i in range(10)
    ]
    first = backend.settle_batch("settle:once", trades, "ops")
    balances = {pid: backend.balances(pid) for pid in [*sellers, *buyers, "ops"]}
    height = backend.height()

    again = backend.settle_batch("settle:once", trades, "ops")
    # A second adapter process (same keys, same contract) after a crash sees the same outcome.
    restarted = EvmBackend(config)
    assert restarted.setup_assets() is None
    after_restart = restarted.settle_batch("settle:once", trades, "ops")

    assert again == first
    assert after_restart == first
    assert backend.height() == height  # the replay was answered from the chain, nothing sent
    assert {pid: backend.balances(pid) for pid in balances} == balances

    # The same trades under a new command id are recognised as settled, not settled twice.
    overlap = backend.settle_batch(
        "settle:twice", [*trades[:3], SettlementTrade("t-new", sellers[0], buyers[1], 5, 1)], "ops"
    )
    assert overlap.already_settled == ("t0", "t1", "t2")
    assert overlap.settled == ("t-new",)


def test_concurrent_commands_keep_nonces_right(backend: EvmBackend) -> None:
    onboard(backend, producers=1, consumers=0)
    errors: list[str] = []
    start = backend.height()

    def mint(worker: int) -> None:
        try:
            for i in range(10):
                backend.mint_energy(f"mint:{worker}:{i}", "producer-0", 1, ROOT_HASH)
        except LedgerError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=mint, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    assert backend.balances("producer-0").energy_wh == 100_000 + 60  # none lost or doubled
    found = [backend.find_command(f"mint:{w}:{i}") for w in range(6) for i in range(10)]
    assert all(receipt is not None for receipt in found)
    assert len({r.tx_id for r in found if r is not None}) == 60, "one transaction each"
    # anvil may put two concurrent transactions in one block, so blocks are not counted
    assert backend.height() > start


def test_a_nonce_taken_behind_the_backends_back_is_recovered(
    backend: EvmBackend, config: EvmConfig
) -> None:
    onboard(backend, producers=1, consumers=0)
    # A second client with the same operator key (say, an old adapter process not yet gone)
    # uses the nonces the first one has cached; the first must see "nonce too low", re-read
    # the pending nonce and go on.
    rival = EvmBackend(config)
    assert rival.setup_assets() is None
    for i in range(3):
        rival.mint_energy(f"rival:{i}", "producer-0", 1, ROOT_HASH)

    backend.mint_energy("after-rival", "producer-0", 1, ROOT_HASH)

    assert backend.balances("producer-0").energy_wh == 100_000 + 4


# --- configuration and failure modes ---------------------------------------------------------


def test_commands_before_setup_say_the_ledger_is_missing(config: EvmConfig) -> None:
    ledger = EvmBackend(config)
    with pytest.raises(LedgerError) as failure:
        ledger.mint_ecoin("m", "p", 1)
    assert failure.value.reason in {ReasonCode.UNKNOWN_PARTICIPANT, ReasonCode.UNKNOWN_ASSET}
    ledger.register_participant("p")
    with pytest.raises(LedgerError) as failure:
        ledger.mint_ecoin("m", "p", 1)
    assert failure.value.reason == ReasonCode.UNKNOWN_ASSET


def test_a_wrong_chain_id_is_refused(anvil: AnvilNode, tmp_path: Path) -> None:
    ledger = EvmBackend(make_config(anvil, tmp_path, chain_id=anvil.chain_id + 1))
    with pytest.raises(LedgerError) as failure:
        ledger.setup_assets()
    assert failure.value.reason == ReasonCode.CHAIN_REJECTED


def test_an_unreachable_node_is_unavailable(anvil: AnvilNode, tmp_path: Path) -> None:
    config = make_config(
        anvil, tmp_path, rpc_url=f"http://127.0.0.1:{free_port()}", rpc_timeout_s=2.0
    )
    with pytest.raises(LedgerError) as failure:
        EvmBackend(config).setup_assets()
    assert failure.value.reason == ReasonCode.CHAIN_UNAVAILABLE
    assert EvmBackend(config).balances("nobody") == Balances(0, 0)


def test_attaching_to_a_configured_address(
    backend: EvmBackend, anvil: AnvilNode, tmp_path: Path
) -> None:
    onboard(backend, producers=1, consumers=0)
    other = EvmBackend(
        make_config(anvil, tmp_path / "other", contract_address=backend.contract_address)
    )
    assert other.setup_assets() is None
    assert other.total_supply() == backend.total_supply()

    nowhere = "0x" + "12" * 20
    with pytest.raises(LedgerError) as failure:
        EvmBackend(make_config(anvil, tmp_path / "x", contract_address=nowhere)).setup_assets()
    assert failure.value.reason == ReasonCode.UNKNOWN_ASSET


def test_keys_are_encrypted_at_rest(backend: EvmBackend, config: EvmConfig) -> None:
    address = backend.register_participant("alice")
    signer = KeyStore(config.keystore_path, config.keystore_key).account("alice")
    assert signer is not None
    assert signer.address == address

    stored = config.keystore_path.read_bytes()
    assert bytes(signer.key).hex().encode() not in stored
    assert address[2:].lower().encode() not in stored.lower()
    assert b"alice" not in stored
    assert "alice" not in repr(backend) and config.keystore_key not in repr(config)
    assert config.operator_private_key not in repr(config)

    with pytest.raises(KeyStoreError):
        KeyStore(config.keystore_path, generate_encryption_key())
    reopened = KeyStore(config.keystore_path, config.keystore_key)
    assert reopened.address("alice") == address
    assert backend.register_participant("alice") == address


def test_a_torn_last_key_store_line_is_dropped(tmp_path: Path) -> None:
    key = generate_encryption_key()
    store = KeyStore(tmp_path / "keys", key)
    kept = store.create("kept")
    with (tmp_path / "keys").open("ab") as handle:
        handle.write(b"gAAAAABtorn-write-without-newline")
    reopened = KeyStore(tmp_path / "keys", key)
    assert reopened.address("kept") == kept
    assert reopened.create("next") != kept
    assert KeyStore(tmp_path / "keys", key).address("next") is not None


# --- restarts --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_restarted_anvil_keeps_the_chain(tmp_path: Path, how: str) -> None:
    anvil_or_skip()
    chain_dir = tmp_path / "chain"
    node = start_anvil(chain_dir, free_port(), state_interval_s=1)
    try:
        config = make_config(node, tmp_path)
        ledger = EvmBackend(config)
        ledger.setup_assets()
        sellers, buyers = onboard(ledger, producers=1, consumers=1)
        batch = ledger.settle_batch(
            "settle:before-restart",
            [SettlementTrade("t1", sellers[0], buyers[0], 700, 70, 7)],
            "ops",
        )
        balances = {pid: ledger.balances(pid) for pid in [*sellers, *buyers, "ops"]}
        if how == "kill":
            # SIGKILL dumps nothing: what survives is the last periodic dump (every second).
            time.sleep(2.5)
            node.kill()
        else:
            node.stop()
    finally:
        node.stop()

    node = start_anvil(chain_dir, free_port(), state_interval_s=1)
    try:
        again = EvmBackend(
            make_config(
                node,
                tmp_path,
                operator_private_key=config.operator_private_key,
                keystore_key=config.keystore_key,
            )
        )
        assert again.setup_assets() is None  # the remembered contract is still there
        assert {pid: again.balances(pid) for pid in balances} == balances
        assert again.is_settled("t1")
        assert again.find_command("settle:before-restart") == batch.receipt
        replay = again.settle_batch(
            "settle:before-restart",
            [SettlementTrade("t1", sellers[0], buyers[0], 700, 70, 7)],
            "ops",
        )
        assert replay == batch
        # And the chain goes on: the operator's nonce is re-read from the restarted node.
        again.mint_ecoin("topup:after-restart", buyers[0], 5)
        assert again.balances(buyers[0]).ecoin == balances[buyers[0]].ecoin + 5
    finally:
        node.stop()
