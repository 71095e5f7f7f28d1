"""The market calendar: open markets ahead of delivery and close them at gate closure.

One instance at a time runs it (a lease in the shared store). Each round it creates the market
records of every interval now open for trading (or promotes the ones ops set up ahead) and
tells their books to open (so
``orderbook.market_opened`` is published when the market opens, not when its first order
comes), and it tells the book of every market past gate closure to close, which expires the
orders still open. The decision is made from the store and the clock alone, so a round after a
restart (or on another instance) catches up on whatever gate closures passed in between. The
close command is sent once; if the market is still open a minute later (its command was
dead-lettered, say) it is sent again, and a book that has closed ignores a repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prosum_contracts import format_timestamp
from prosum_orderbook.application.entry import SCHEDULED, MarketDefaults, open_market
from prosum_orderbook.application.messages import CLOSE_MARKET
from prosum_orderbook.application.ports import Clock, UnitOfWork
from prosum_orderbook.domain.markets import Schedule

CLOSE_RETRY_S = 60.0


@dataclass(frozen=True, slots=True)
class Round:
    opened: list[str]
    closing: list[str]


class MarketScheduler:
    def __init__(
        self,
        unit_of_work: UnitOfWork,
        schedule: Schedule,
        defaults: MarketDefaults,
        clock: Clock,
        reading: UnitOfWork | None = None,
    ) -> None:
        self._uow = unit_of_work
        self._reading = reading
        self._schedule = schedule
        self._defaults = defaults
        self._clock = clock

    def run_once(self) -> Round:
        now = self._clock()
        opened: list[str] = []
        closing: list[str] = []
        if self._reading is not None and not self._due(now):
            return Round(opened, closing)  # most rounds: nothing to do, no write lock taken
        with self._uow() as store:
            for market_id in self._schedule.open_markets(now):
                known = store.market(market_id)
                if known is not None and known.status != SCHEDULED:
                    continue
                open_market(store, self._schedule, self._defaults, market_id)
                opened.append(market_id)
            for market_id in store.markets_to_close(now, CLOSE_RETRY_S):
                store.publish(
                    CLOSE_MARKET,
                    market_id,
                    {
                        "market_id": market_id,
                        "gate_closure": format_timestamp(
                            self._schedule.window(market_id).gate_closure
                        ),
                    },
                )
                store.mark_close_requested(market_id, now)
                closing.append(market_id)
        return Round(opened, closing)

    def _due(self, now: datetime) -> bool:
        """Whether a round at ``now`` has a market to open or to close, read without writing."""
        assert self._reading is not None
        with self._reading() as store:
            for market_id in self._schedule.open_markets(now):
                known = store.market(market_id)
                if known is None or known.status == SCHEDULED:
                    return True
            return bool(store.markets_to_close(now, CLOSE_RETRY_S))
