"""Random command sequences through the ledger adapter's executor, and the invariants that hold
whatever the sequence: supply = mints - burns; balances add up to the supply; what the balance
events say is what the chain says; no balance ever goes negative; a failed command changed
nothing."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st

from prosum_ledger.application.commands import (
    BALANCE_CHANGED,
    CONFIRMED,
    CommandExecutor,
    accept_command,
)
from prosum_ledger.domain.commands import CommandKind
from tests.support.fakes import FakeCommandLog

PEOPLE = ("p0", "p1", "p2", "p3")
amounts = st.integers(min_value=1, max_value=5_000)
trade = st.tuples(
    st.sampled_from(PEOPLE),
    st.sampled_from(PEOPLE),
    amounts,
    st.integers(0, 3_000),
    st.integers(0, 50),
).filter(lambda t: t[0] != t[1])
operation = st.one_of(
    st.tuples(st.just("mint_energy"), st.sampled_from(PEOPLE), amounts),
    st.tuples(st.just("mint_ecoin"), st.sampled_from(PEOPLE), amounts),
    st.tuples(st.just("burn_ecoin"), st.sampled_from(PEOPLE), amounts),
    st.tuples(st.just("settle"), st.lists(trade, min_size=1, max_size=4)),
)
sequences = st.lists(operation, min_size=1, max_size=25)


def run_sequence(chain: Any, ops: list[tuple[Any, ...]]) -> None:
    log = FakeCommandLog()
    tag = uuid.uuid4().hex[:8]
    who = {p: f"{p}-{tag}" for p in (*PEOPLE, "op")}

    def send(kind: CommandKind, data: dict[str, Any]) -> None:
        with log.unit() as unit:
            accept_command(unit, kind, data, "test")

    for p in who.values():
        send(
            CommandKind.GRANT_PERMISSIONS,
            {
                "command_id": f"g-{p}",
                "participant_id": p,
                "permissions": ["connect", "send", "receive", "energy.issue"],
            },
        )
    minted = {"energy": 0, "ecoin": 0}
    burned = 0
    for n, op in enumerate(ops):
        cid = f"c{n}-{tag}"
        if op[0] == "settle":
            trades = [
                {
                    "trade_id": f"t{n}.{i}-{tag}",
                    "seller": who[s],
                    "buyer": who[b],
                    "energy_wh": e,
                    "ecoin": c,
                    "fee_ecoin": f,
                }
                for i, (s, b, e, c, f) in enumerate(op[1])
            ]
            send(
                CommandKind.SETTLE_TRADES,
                {"command_id": cid, "fee_account": who["op"], "trades": trades},
            )
        elif op[0] == "mint_energy":
            send(
                CommandKind.MINT_ENERGY,
                {
                    "command_id": cid,
                    "participant_id": who[op[1]],
                    "amount_wh": op[2],
                    "evidence_hash": "0" * 64,
                },
            )
        else:
            send(
                CommandKind(f"ledger.{op[0]}"),
                {"command_id": cid, "participant_id": who[op[1]], "amount": op[2]},
            )
        before = chain.balances_many(list(who.values()))
        CommandExecutor(log.unit, chain).run_open()
        [(kind, _data)] = log.outcomes(cid)
        after = chain.balances_many(list(who.values()))
        if kind != CONFIRMED:
            assert after == before, f"failed {op} changed balances"
        elif op[0] == "mint_energy":
            minted["energy"] += op[2]
        elif op[0] == "mint_ecoin":
            minted["ecoin"] += op[2]
        elif op[0] == "burn_ecoin":
            burned += op[2]
        assert all(b.energy_wh >= 0 and b.ecoin >= 0 for b in after.values())

    final = chain.balances_many(list(who.values()))
    assert sum(b.energy_wh for b in final.values()) == minted["energy"], (
        "energy only changes by mint"
    )
    assert sum(b.ecoin for b in final.values()) == minted["ecoin"] - burned, (
        "ecoin only by mint and burn"
    )
    last: dict[str, tuple[int, int]] = {}
    for kind, subject, data in log.published:
        if kind == BALANCE_CHANGED:
            last[subject] = (data["energy_wh"], data["ecoin"])
    for participant, (energy, ecoin) in last.items():
        assert (final[participant].energy_wh, final[participant].ecoin) == (energy, ecoin), (
            participant
        )
