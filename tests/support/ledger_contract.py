"""The chain backend contract: what every ledger backend (memory, EVM, MultiChain) must do.

Subclass ``ChainBackendContract`` in a test module and provide a ``backend`` fixture; the
participant ids are unique per test, so backends may share one chain across tests.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from prosum_ledger.domain.model import (
    PARTICIPANT_PERMISSIONS,
    PRODUCER_PERMISSIONS,
    Balances,
    LedgerError,
    Permission,
    ReasonCode,
    SettlementTrade,
)

HASH = "ab" * 32


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class ChainBackendContract:
    """Given a chain with assets set up, each test drives one backend like the adapter does."""

    @pytest.fixture
    def chain(self, backend: Any) -> Any:
        backend.setup_assets()
        return backend

    def onboard(
        self, chain: Any, *, producer: bool = False, ecoin: int = 0, energy: int = 0
    ) -> str:
        participant = uid("p")
        chain.register_participant(participant)
        permissions = PRODUCER_PERMISSIONS if producer or energy else PARTICIPANT_PERMISSIONS
        chain.grant(uid("grant"), participant, frozenset(permissions))
        if energy:
            chain.mint_energy(uid("mint"), participant, energy, HASH)
        if ecoin:
            chain.mint_ecoin(uid("topup"), participant, ecoin)
        return participant

    # -- assets and participants ---------------------------------------------------------
    def test_setting_up_assets_twice_is_harmless(self, chain: Any) -> None:
        assert chain.setup_assets() is None

    def test_a_participant_keeps_its_address(self, chain: Any) -> None:
        participant = uid("p")
        assert chain.register_participant(participant) == chain.register_participant(participant)
        assert chain.balances(participant) == Balances(0, 0)

    def test_grant_and_revoke_change_permissions(self, chain: Any) -> None:
        participant = self.onboard(chain, producer=True)
        assert chain.permissions(participant) >= PRODUCER_PERMISSIONS
        chain.revoke(uid("revoke"), participant, frozenset({Permission.ISSUE_ENERGY}))
        held = chain.permissions(participant)
        assert Permission.ISSUE_ENERGY not in held
        assert held >= PARTICIPANT_PERMISSIONS

    def test_unknown_participants_are_named(self, chain: Any) -> None:
        with pytest.raises(LedgerError) as caught:
            chain.mint_ecoin(uid("topup"), uid("nobody"), 10)
        assert caught.value.reason is ReasonCode.UNKNOWN_PARTICIPANT

    # -- mint and burn -------------------------------------------------------------------
    def test_energy_is_minted_only_to_producers(self, chain: Any) -> None:
        producer = self.onboard(chain, producer=True)
        consumer = self.onboard(chain)
        receipt = chain.mint_energy(uid("mint"), producer, 1_500, HASH)
        assert receipt.tx_id and receipt.block >= 1
        assert chain.balances(producer).energy_wh == 1_500
        with pytest.raises(LedgerError) as caught:
            chain.mint_energy(uid("mint"), consumer, 1_000, HASH)
        assert caught.value.reason is ReasonCode.PERMISSION_DENIED
        assert chain.balances(consumer).energy_wh == 0

    def test_ecoin_is_minted_and_burned_exactly(self, chain: Any) -> None:
        participant = self.onboard(chain, ecoin=100_000)
        chain.burn_ecoin(uid("payout"), participant, 30_001)
        assert chain.balances(participant).ecoin == 69_999

    def test_burning_more_than_the_balance_fails_and_changes_nothing(self, chain: Any) -> None:
        participant = self.onboard(chain, ecoin=500)
        with pytest.raises(LedgerError) as caught:
            chain.burn_ecoin(uid("payout"), participant, 501)
        assert caught.value.reason is ReasonCode.INSUFFICIENT_ECOIN
        assert chain.balances(participant).ecoin == 500

    def test_a_replayed_command_executes_once(self, chain: Any) -> None:
        participant = self.onboard(chain)
        command = uid("topup")
        first = chain.mint_ecoin(command, participant, 250)
        again = chain.mint_ecoin(command, participant, 250)
        assert chain.balances(participant).ecoin == 250
        assert again.tx_id == first.tx_id
        found = chain.find_command(command)
        assert found is not None and found.tx_id == first.tx_id
        assert chain.find_command(uid("never-sent")) is None

    # -- settlement ------------------------------------------------------------------------
    def test_a_batch_swaps_energy_for_ecoin_and_pays_the_fee(self, chain: Any) -> None:
        operator = self.onboard(chain)
        seller = self.onboard(chain, energy=5_000)
        buyer_a = self.onboard(chain, ecoin=10_000)
        buyer_b = self.onboard(chain, ecoin=10_000)
        trades = [
            SettlementTrade(uid("t"), seller, buyer_a, 2_000, 400, 10),
            SettlementTrade(uid("t"), seller, buyer_b, 3_000, 600, 15),
        ]
        result = chain.settle_batch(uid("settle"), trades, operator)
        assert result.settled == tuple(t.trade_id for t in trades)
        assert result.already_settled == ()
        assert chain.balances(seller) == Balances(0, 1_000)
        assert chain.balances(buyer_a) == Balances(2_000, 10_000 - 410)
        assert chain.balances(buyer_b) == Balances(3_000, 10_000 - 615)
        assert chain.balances(operator) == Balances(0, 25)
        assert all(chain.is_settled(t.trade_id) for t in trades)

    def test_one_unaffordable_trade_settles_none_and_is_named(self, chain: Any) -> None:
        operator = self.onboard(chain)
        seller = self.onboard(chain, energy=1_000)
        buyer = self.onboard(chain, ecoin=1_000)
        good = SettlementTrade(uid("t"), seller, buyer, 600, 300, 0)
        too_much = SettlementTrade(uid("t"), seller, buyer, 600, 300, 0)
        with pytest.raises(LedgerError) as caught:
            chain.settle_batch(uid("settle"), [good, too_much], operator)
        assert caught.value.reason is ReasonCode.INSUFFICIENT_ENERGY
        assert caught.value.trade_id == too_much.trade_id
        assert not chain.is_settled(good.trade_id)
        assert chain.balances(seller) == Balances(1_000, 0)
        assert chain.balances(buyer) == Balances(0, 1_000)

    def test_a_buyer_without_enough_ecoin_for_price_and_fee_is_named(self, chain: Any) -> None:
        operator = self.onboard(chain)
        seller = self.onboard(chain, energy=1_000)
        buyer = self.onboard(chain, ecoin=300)
        trade = SettlementTrade(uid("t"), seller, buyer, 500, 300, 1)
        with pytest.raises(LedgerError) as caught:
            chain.settle_batch(uid("settle"), [trade], operator)
        assert caught.value.reason is ReasonCode.INSUFFICIENT_ECOIN
        assert caught.value.trade_id == trade.trade_id
        assert chain.balances(buyer).ecoin == 300

    def test_a_seller_without_send_permission_cannot_settle(self, chain: Any) -> None:
        operator = self.onboard(chain)
        seller = self.onboard(chain, energy=1_000)
        buyer = self.onboard(chain, ecoin=1_000)
        chain.revoke(uid("suspend"), seller, frozenset({Permission.SEND}))
        trade = SettlementTrade(uid("t"), seller, buyer, 100, 50, 0)
        with pytest.raises(LedgerError) as caught:
            chain.settle_batch(uid("settle"), [trade], operator)
        assert caught.value.reason is ReasonCode.PERMISSION_DENIED
        assert caught.value.trade_id == trade.trade_id

    def test_replayed_and_resent_trades_are_never_settled_twice(self, chain: Any) -> None:
        operator = self.onboard(chain)
        seller = self.onboard(chain, energy=1_000)
        buyer = self.onboard(chain, ecoin=1_000)
        trade = SettlementTrade(uid("t"), seller, buyer, 400, 200, 2)
        command = uid("settle")
        first = chain.settle_batch(command, [trade], operator)
        replay = chain.settle_batch(command, [trade], operator)
        assert replay.receipt.tx_id == first.receipt.tx_id, "the replay answers with the original"
        resent = chain.settle_batch(uid("settle"), [trade], operator)
        assert resent.settled == ()
        assert resent.already_settled == (trade.trade_id,)
        assert chain.balances(seller) == Balances(600, 200)
        assert chain.balances(buyer) == Balances(400, 798)

    # -- anchoring and accounting -----------------------------------------------------------
    def test_an_anchored_root_can_be_found(self, chain: Any) -> None:
        root = uuid.uuid4().hex * 2
        receipt = chain.anchor(uid("anchor"), root, "readings batch 1")
        found = chain.anchored(root)
        assert found is not None and found.block == receipt.block
        assert chain.anchored(uuid.uuid4().hex * 2) is None

    def test_supply_equals_mints_minus_burns_and_balances_add_up(self, chain: Any) -> None:
        before = chain.total_supply()
        operator = self.onboard(chain)
        seller = self.onboard(chain, energy=7_000)
        buyer = self.onboard(chain, ecoin=9_000)
        chain.settle_batch(
            uid("settle"), [SettlementTrade(uid("t"), seller, buyer, 7_000, 3_500, 35)], operator
        )
        chain.burn_ecoin(uid("payout"), seller, 500)
        after = chain.total_supply()
        assert after.energy_wh - before.energy_wh == 7_000
        assert after.ecoin - before.ecoin == 9_000 - 500
        mine = [chain.balances(p) for p in (operator, seller, buyer)]
        assert sum(b.energy_wh for b in mine) == 7_000
        assert sum(b.ecoin for b in mine) == 9_000 - 500

    def test_many_balances_are_read_at_once(self, chain: Any) -> None:
        a = self.onboard(chain, ecoin=11)
        b = self.onboard(chain, energy=22)
        stranger = uid("nobody")
        found = chain.balances_many([a, b, stranger])
        assert found == {a: Balances(0, 11), b: Balances(22, 0), stranger: Balances(0, 0)}

    def test_the_chain_grows(self, chain: Any) -> None:
        start = chain.height()
        self.onboard(chain, ecoin=1)
        assert chain.height() > start
