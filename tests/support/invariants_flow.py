"""Random order flows through the composed services (``invariants_world``), as lists of
operations for hypothesis: participants minted energy and topped up with ecoin; bids and asks
of varied quantities and prices, resting or immediate-or-cancel, alone or several in one group
commit; cancels and reductions; time passing through gate closures; settlement batches and the
ledger's executor; the broker delivering (partition by partition, in any interleaving of
partitions and topics), duplicating (relays crashing after publishing, consumers rewound) and
holding messages back; and injected failures: chain permissions revoked (and granted again),
payouts of ecoin the book had promised (refused), mints to participants who may not receive them,
participants suspended, the chain unavailable before or after it acted.

The invariants are checked after every operation (``World.check_step``) and, once everything
has been delivered at the end of the day, the liveness ones (``World.finish``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.support.invariants_world import (
    ACCOUNTS,
    AUCTION,
    CLOSED,
    CONSUMERS,
    PARTICIPANTS,
    SOURCES,
    Templates,
    World,
    world,
)

START_ENERGY_WH = 6_000
START_ECOIN = 3_000
people = st.sampled_from(PARTICIPANTS)
order = st.tuples(
    people,
    # mostly the first open market, so that orders meet; sometimes a later one, the call
    # auction (refused until it opens), or the market whose gate has just closed (refused)
    st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 3, AUCTION, AUCTION, CLOSED]),
    st.sampled_from(["buy", "sell"]),
    st.one_of(st.integers(1, 4_000), st.integers(1, 40).map(lambda n: n * 100)),
    # mostly near one another, so that bids and asks cross; now and then far off, and prices
    # whose values round (0.333 ecoin/kWh)
    st.sampled_from(["230", "240", "240", "245", "250", "0.333", "1", "412.5"]),
    st.sampled_from(["gtc", "gtc", "gtc", "ioc"]),
)

KINDS: dict[str, tuple[int, st.SearchStrategy[tuple[Any, ...]]]] = {
    # kind: (weight, strategy)
    "place": (10, st.tuples(st.just("place"), st.lists(order, min_size=1, max_size=3))),
    "pump": (4, st.tuples(st.just("pump"))),
    "deliver": (
        3,
        st.tuples(
            st.just("deliver"), st.sampled_from(CONSUMERS), st.integers(0, 20), st.integers(1, 6)
        ),
    ),
    # the chain unavailable before or after it acted on a command, or when the balances are
    # read after it confirmed one
    "ledger": (
        2,
        st.tuples(st.just("ledger"), st.sampled_from([None, None, "before", "after", "balances"])),
    ),
    "cancel": (2, st.tuples(st.just("cancel"), st.integers(0, 99))),
    "reduce": (1, st.tuples(st.just("reduce"), st.integers(0, 99), st.integers(1, 2_000))),
    "mint_energy": (1, st.tuples(st.just("mint_energy"), people, st.integers(100, 6_000))),
    "topup": (1, st.tuples(st.just("topup"), people, st.integers(100, 4_000))),
    "advance": (1, st.tuples(st.just("advance"), st.integers(1, 12))),
    "relay": (1, st.tuples(st.just("relay"), st.sampled_from(SOURCES), st.booleans())),
    "redeliver": (
        1,
        st.tuples(
            st.just("redeliver"), st.sampled_from(CONSUMERS), st.integers(0, 20), st.integers(1, 4)
        ),
    ),
    "batch": (1, st.tuples(st.just("batch"))),
    "restart": (1, st.tuples(st.just("restart"))),
    # injected failures
    "payout": (1, st.tuples(st.just("payout"), people, st.integers(1, 3_000))),
    "revoke": (
        1,
        st.tuples(
            st.just("revoke"),
            st.sampled_from(ACCOUNTS),
            st.sampled_from(["send", "receive", "energy.issue"]),
        ),
    ),
    "grant": (1, st.tuples(st.just("grant"), st.sampled_from(ACCOUNTS))),
    "suspend": (1, st.tuples(st.just("suspend"), people)),
    "reinstate": (1, st.tuples(st.just("reinstate"), people)),
}
operation = st.sampled_from([k for k, (weight, _) in KINDS.items() for _ in range(weight)]).flatmap(
    lambda kind: KINDS[kind][1]
)


def flows_of(max_size: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    return st.lists(operation, min_size=10, max_size=max_size)


flows = flows_of(60)


def apply(w: World, op: tuple[Any, ...]) -> None:
    kind, args = op[0], op[1:]
    if kind == "place":
        w.place(args[0])
    elif kind == "cancel":
        w.cancel(args[0])
    elif kind == "reduce":
        w.reduce(args[0], args[1])
    elif kind == "mint_energy":
        w.mint_energy(args[0], args[1])
    elif kind == "topup":
        w.topup(args[0], args[1])
    elif kind == "payout":
        w.payout(args[0], args[1])
    elif kind == "advance":
        w.advance(args[0])
    elif kind == "pump":
        w.pump()
    elif kind == "relay":
        w.relay(args[0], crash=args[1])
    elif kind == "deliver":
        w.deliver(args[0], pick=args[1], limit=args[2])
    elif kind == "redeliver":
        w.redeliver(args[0], args[1], args[2])
    elif kind == "batch":
        w.batch()
    elif kind == "restart":
        w.restart_orderbook()
    elif kind == "ledger":
        w.run_ledger(args[0])
    elif kind == "revoke":
        w.revoke(args[0], args[1])
    elif kind == "grant":
        w.grant(args[0])
    elif kind == "suspend":
        w.suspend(args[0])
    elif kind == "reinstate":
        w.reinstate(args[0])
    else:  # pragma: no cover - every kind above
        raise AssertionError(kind)


def run_flow(folder: Path, templates: Templates, ops: list[tuple[Any, ...]]) -> dict[str, int]:
    """Run the operations, checking the invariants after each; then end the day and check
    that everything came to its end. Returns what happened, counted (for the summary)."""
    with world(folder, templates) as w:
        for p in PARTICIPANTS:  # everyone starts with something to trade
            w.mint_energy(p, START_ENERGY_WH)
            w.topup(p, START_ECOIN)
        w.drain()
        w.check_step()
        for op in ops:
            apply(w, op)
            w.check_step()
        w.finish()
        return dict(w.stats)
